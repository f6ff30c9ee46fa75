package rpc

import (
	"context"
	"sync"

	"github.com/shoalgrid/shoal/internal/flight"
)

// Pool keeps one Client per server address, shared by all its users, and
// dials again when a connection has broken. It is safe for concurrent use.
type Pool struct {
	cfg   ClientConfig
	dials flight.Group[string, *Client] // concurrent Gets for one address share one dial

	mu      sync.Mutex
	clients map[string]*Client
	closed  bool
}

// NewPool returns a pool whose clients are dialled with cfg.
func NewPool(cfg ClientConfig) *Pool {
	return &Pool{cfg: cfg, clients: make(map[string]*Client)}
}

// Get returns the pool's client for addr, dialling if there is none or the
// one there has broken. Concurrent Gets for one address share one dial.
func (p *Pool) Get(ctx context.Context, addr string) (*Client, error) {
	if c, err := p.cached(addr); c != nil || err != nil {
		return c, err
	}
	c, err := p.dials.Do(ctx, addr, func() (*Client, error) {
		if c, err := p.cached(addr); c != nil || err != nil {
			return c, err // dialled while this caller waited to dial
		}
		c, err := Dial(ctx, addr, p.cfg)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return nil, ErrClosed
		}
		broken := p.clients[addr]
		p.clients[addr] = c
		p.mu.Unlock()
		if broken != nil {
			broken.Close()
		}
		return c, nil
	})
	if err != nil && err == ctx.Err() {
		return nil, contextError("dial "+addr, err) // gave up waiting for another caller's dial
	}
	return c, err
}

// cached returns the live client for addr, if there is one, or ErrClosed.
func (p *Pool) cached(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if c := p.clients[addr]; c != nil && c.Err() == nil {
		return c, nil
	}
	return nil, nil
}

// Call calls method on the server at addr through the pool's client, so a
// *Pool can stand wherever calls are made by address.
func (p *Pool) Call(ctx context.Context, addr, method string, result any, args ...any) error {
	c, err := p.Get(ctx, addr)
	if err != nil {
		return err
	}
	return c.Call(ctx, method, result, args...)
}

// Close closes every client in the pool; later Gets fail with ErrClosed,
// and a dial under way closes its client when it completes.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	clients := p.clients
	p.clients = make(map[string]*Client)
	p.mu.Unlock()
	for _, c := range clients {
		c.Close()
	}
	return nil
}
