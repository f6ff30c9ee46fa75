package rpc

import (
	"context"
	"sync"
)

// Pool keeps one Client per server address, shared by all its users, and
// dials again when a connection has broken. It is safe for concurrent use.
type Pool struct {
	cfg ClientConfig

	mu      sync.Mutex
	clients map[string]*poolEntry
	closed  bool
}

// poolEntry is a client being dialled (ready still open) or dialled.
type poolEntry struct {
	ready  chan struct{}
	client *Client
	err    error
}

// NewPool returns a pool whose clients are dialled with cfg.
func NewPool(cfg ClientConfig) *Pool {
	return &Pool{cfg: cfg, clients: make(map[string]*poolEntry)}
}

// Get returns the pool's client for addr, dialling if there is none or the
// one there has broken. Concurrent Gets for one address share one dial.
func (p *Pool) Get(ctx context.Context, addr string) (*Client, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		e := p.clients[addr]
		if e == nil {
			e = &poolEntry{ready: make(chan struct{})}
			p.clients[addr] = e
			p.mu.Unlock()
			e.client, e.err = Dial(ctx, addr, p.cfg)
			p.mu.Lock()
			if e.err != nil || p.closed {
				delete(p.clients, addr)
			}
			closed := p.closed
			p.mu.Unlock()
			close(e.ready)
			if closed && e.client != nil {
				e.client.Close()
				return nil, ErrClosed
			}
			return e.client, e.err
		}
		p.mu.Unlock()

		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, contextError("dial "+addr, ctx.Err())
		}
		if e.err == nil && e.client.Err() == nil {
			return e.client, nil
		}
		// Broken or failed: forget it and dial again.
		p.mu.Lock()
		if p.clients[addr] == e {
			delete(p.clients, addr)
		}
		p.mu.Unlock()
		if e.client != nil {
			e.client.Close()
		}
	}
}

// Call calls method on the server at addr through the pool's client.
func (p *Pool) Call(ctx context.Context, addr, method string, result any, args ...any) error {
	c, err := p.Get(ctx, addr)
	if err != nil {
		return err
	}
	return c.Call(ctx, method, result, args...)
}

// Close closes every client in the pool; later Gets fail with ErrClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.clients
	p.clients = make(map[string]*poolEntry)
	p.mu.Unlock()
	for _, e := range entries {
		<-e.ready
		if e.client != nil {
			e.client.Close()
		}
	}
	return nil
}
