// Package shoal is the Go client of a Shoal grid: Dial any node, then Call
// a function (routed to the least loaded node that offers it) or Map it
// over many inputs, the way Dask's client.map and gather do.
//
//	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{"127.0.0.1:7373"}})
//	defer c.Close()
//	squares, err := shoal.Map[int, int](ctx, c, "square", []int{1, 2, 3})
//
// The client keeps a grid.View of the members and their functions, read
// from a node every Config.Refresh, and routes by it; it links no gossip
// or metrics library.
package shoal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/portprobe"
	"github.com/shoalgrid/shoal/rpc"
)

// Config configures a Client.
type Config struct {
	// Seeds are RPC addresses (HOST:PORT) of grid nodes; the first that
	// answers tells the client about the rest.
	Seeds []string
	// Token is presented to nodes started with --token. Default: none.
	Token string
	// TLS, when set, is used to reach the nodes. Default: plain TCP.
	TLS *tls.Config
	// AllowPlaintextToken lets the client send Token over plain TCP to
	// nodes beyond loopback, where anyone on the path can read it.
	// Default: false: without TLS the token goes only to loopback
	// addresses, and Dial elsewhere fails with rpc.ErrPlaintextToken.
	AllowPlaintextToken bool
	// Refresh is how often the member list is re-read. Default: 1s.
	Refresh time.Duration
	// Cache is looked up before items of cacheable functions are sent.
	// Default: the cache the nodes write results to, found by asking them:
	// the grid cache their memory forms, or their memcached servers.
	Cache cache.Cache
	// CacheTimeout bounds each lookup in the cache the client finds (a
	// memcached server, a member's share of the grid cache): one that takes
	// longer is a miss and counts against that server's breaker.
	// Default: cache.DefaultTimeout (500ms).
	CacheTimeout time.Duration
	// Logger receives the client's logs. Default: slog.Default().
	Logger *slog.Logger
}

// ErrNoSeed is matched (with errors.Is) by Dial's error when no seed
// answered as a Shoal node.
var ErrNoSeed = errors.New("shoal: no seed answered")

// SeedError is Dial's error when no seed answered as a Shoal node: what
// went wrong at each seed, in order.
type SeedError struct {
	Seeds []string
	Errs  []error // Errs[i] is what happened at Seeds[i]
}

func (e *SeedError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		parts[i] = err.Error()
	}
	return "shoal: no seed answered: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrNoSeed) hold.
func (e *SeedError) Is(target error) bool { return target == ErrNoSeed }

// Unwrap returns each seed's error.
func (e *SeedError) Unwrap() []error { return e.Errs }

// Client talks to a grid. It keeps the member view fresh and one
// connection per node; it is safe for concurrent use. Close it when done.
type Client struct {
	cfg      Config
	log      *slog.Logger
	pool     *rpc.Pool
	stub     grid.Stub
	views    grid.Views
	ctx      context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
	answered atomic.Pointer[string] // the address the view was last read from

	cacheOnce sync.Once   // the grid's cache is found on the first cacheable job
	cacheMu   sync.Mutex  // guards cache and ownsCache against Close
	cache     cache.Cache // nil: no lookups
	ownsCache bool
	peers     atomic.Pointer[cache.Peers] // the cache, when it is the grid cache: the view names its peers
}

// Dial connects to the first seed that answers, reads the grid's members
// and functions, and keeps them fresh until Close. When no seed answers
// the error is a *SeedError, which says for each seed what went wrong,
// naming it when the address is another kind of port (a node's gossip or
// HTTP address, say).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Seeds) == 0 {
		return nil, errors.New("shoal: no seeds given: name the RPC address (HOST:PORT) of a node")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	poolCfg := rpc.ClientConfig{Token: cfg.Token, TLS: cfg.TLS, Logger: cfg.Logger, AllowPlaintextToken: cfg.AllowPlaintextToken}
	c := &Client{
		cfg:   cfg,
		log:   cfg.Logger,
		pool:  rpc.NewPool(poolCfg),
		cache: cfg.Cache,
	}
	if cfg.Cache != nil {
		c.cacheOnce.Do(func() {}) // a cache given is not looked for
	}
	c.stub = grid.Stub{Caller: c.pool}
	c.ctx, c.stop = context.WithCancel(context.Background())
	seedErr := &SeedError{}
	for _, seed := range cfg.Seeds {
		seed = strings.TrimSpace(seed)
		err := c.refreshFromSeed(ctx, seed)
		if err == nil {
			break
		}
		if errors.Is(err, rpc.ErrPlaintextToken) {
			c.Close()
			return nil, err
		}
		if errors.Is(err, rpc.ErrUnauthorized) {
			c.Close()
			if cfg.Token == "" {
				return nil, fmt.Errorf("shoal: %s requires a token: %w", seed, err)
			}
			return nil, fmt.Errorf("shoal: %s refused the token: %w", seed, err)
		}
		seedErr.Seeds = append(seedErr.Seeds, seed)
		seedErr.Errs = append(seedErr.Errs, err)
	}
	if view, _ := c.views.View(); view == nil {
		c.Close()
		return nil, seedErr
	}
	c.wg.Add(1)
	go c.refreshLoop()
	return c, nil
}

// seedPatience is how long a seed may take to answer before the client
// checks whether it speaks msgpack-rpc at all: an HTTP server waits for a
// request line that never comes, and would hold Dial for its whole timeout.
const seedPatience = 300 * time.Millisecond

// refreshFromSeed reads the view from a seed, as refreshFrom, and names
// what answered instead when the seed is not a grid node's RPC address: a
// node's gossip or HTTP port, or a plain msgpack-rpc server.
func (c *Client) refreshFromSeed(ctx context.Context, seed string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.refreshFrom(ctx, seed, seedTimeout) }()
	var err error
	answered := false
	select {
	case err = <-done:
		answered = true
		var dial *rpc.DialError
		if err == nil || errors.As(err, &dial) || errors.Is(err, rpc.ErrUnauthorized) ||
			errors.Is(err, rpc.ErrPlaintextToken) || ctx.Err() != nil {
			return err // it answered, or nothing is there to identify
		}
		if errors.Is(err, rpc.ErrUnknownFunction) {
			return fmt.Errorf("%s answers msgpack-rpc but is not a Shoal node (%s: %w)", seed, grid.MethodMembers, err)
		}
	case <-time.After(seedPatience):
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	kind := portprobe.Identify(pctx, seed)
	pcancel()
	var named error
	switch kind {
	case portprobe.Gossip:
		named = fmt.Errorf("%s is a node's gossip address, not its RPC address", seed)
	case portprobe.HTTP:
		named = fmt.Errorf("%s is an HTTP address (a node's --http?), not a node's RPC address", seed)
	}
	if !answered {
		if named != nil {
			cancel() // the read still waiting there ends with ctx
		}
		err = <-done
	}
	switch {
	case named != nil:
		return named
	case err != nil:
		return fmt.Errorf("%s: %w", seed, err)
	}
	return nil
}

// cacheDiscovery bounds asking the grid where its cache is: a wedged
// member must not hold a job up for longer.
const cacheDiscovery = 2 * time.Second

// resultCache returns the cache to look results up in, or nil: the
// memcached servers the nodes write results to, asked of them the first
// time a job needs it (calls and listings never do), or Config.Cache.
func (c *Client) resultCache(ctx context.Context) cache.Cache {
	c.cacheOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, cacheDiscovery)
		defer cancel()
		if err := c.discoverCache(ctx); err != nil {
			c.log.Warn("shoal: no cache lookups: the grid's cache is out of reach", "err", err)
		}
	})
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	return c.cache
}

// discoverCache uses the cache the nodes write results to, asking first
// the node that last answered the client: the memcached servers they
// write to, or the grid cache their memory forms.
func (c *Client) discoverCache(ctx context.Context) error {
	var addrs []string
	if a := c.answered.Load(); a != nil {
		addrs = append(addrs, *a)
	}
	for _, m := range c.view().Alive() {
		addrs = append(addrs, m.RPC)
	}
	var last error = errors.New("no live member")
	for _, addr := range addrs {
		info, err := c.stub.Cache(ctx, addr)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		var found cache.Cache
		switch info.Kind {
		case grid.CacheMemcached:
			if len(info.Servers) == 0 {
				return nil
			}
			mc, err := cache.NewMemcached(cache.MemcachedConfig{Servers: info.Servers, Timeout: c.cfg.CacheTimeout, Logger: c.log})
			if err != nil {
				return err
			}
			found = mc
		case grid.CacheGrid:
			p := cache.NewPeers(cache.PeersConfig{
				Transport: grid.CacheTransport{Stub: c.stub, Addr: c.rpcAddrOf},
				Timeout:   c.cfg.CacheTimeout,
				Logger:    c.log,
			})
			p.SetPeers("", c.view().CachePeers()...)
			c.peers.Store(p)
			found = p
		default:
			return nil // the nodes' cache is their embedder's: nothing to read
		}
		c.cacheMu.Lock()
		c.cache, c.ownsCache = found, true
		c.cacheMu.Unlock()
		return nil
	}
	return last
}

// rpcAddrOf returns the RPC address of the member named name, as last read.
func (c *Client) rpcAddrOf(name string) (string, bool) {
	m, ok := c.view().Member(name)
	return m.RPC, ok
}

// seedTimeout bounds reading the view from a seed in Dial.
const seedTimeout = 5 * time.Second

// refreshTimeout bounds each read of the view once dialled: a frozen node
// (stopped, wedged) accepts the request and answers nothing, and the view
// must then come from another member before the jobs routed by it notice
// too late that the node is gone.
const refreshTimeout = 2 * time.Second

// refreshFrom reads the view from the node at addr, giving it timeout, and
// installs it.
func (c *Client) refreshFrom(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	view, err := c.stub.View(ctx, addr)
	if err != nil {
		return err
	}
	c.views.Set(view)
	c.answered.Store(&addr)
	if p := c.peers.Load(); p != nil {
		p.SetPeers("", view.CachePeers()...)
	}
	return nil
}

func (c *Client) refreshLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if err := c.refresh(c.ctx); err != nil && c.ctx.Err() == nil {
			c.log.Warn("shoal: could not refresh the member list", "err", err)
		}
	}
}

// refresh re-reads the view from the first live member that answers,
// asking first the one that answered last: views from one node follow one
// another, and a member that stopped answering is asked first only once.
func (c *Client) refresh(ctx context.Context) error {
	alive := c.view().Alive()
	if last := c.answered.Load(); last != nil {
		for k, m := range alive {
			if m.RPC == *last {
				alive[0], alive[k] = alive[k], alive[0]
				break
			}
		}
	}
	var err error = errors.New("no live member")
	for _, m := range alive {
		if err = c.refreshFrom(ctx, m.RPC, refreshTimeout); err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (c *Client) view() *grid.View {
	v, _ := c.views.View()
	return v
}

// View returns the client's latest view of the grid: its members and the
// functions they offer.
func (c *Client) View() *grid.View { return c.view() }

// WaitForMembers waits until at least n members are alive in the client's
// view, re-reading the member list every 50ms meanwhile, and returns ctx's
// error if it ends first. It suits scripts and tests that start nodes and
// then want all of them used.
func (c *Client) WaitForMembers(ctx context.Context, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		alive := len(c.view().Alive())
		if alive >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("shoal: %d of %d members alive: %w", alive, n, ctx.Err())
		case <-t.C:
		}
		_ = c.refresh(ctx) // a failed read is tried again on the next tick
	}
}

// Members returns the members as last read, sorted by name.
func (c *Client) Members() []grid.Member { return c.view().Members() }

// Functions returns the functions the live members offer, as last read,
// sorted by name.
func (c *Client) Functions() []grid.Function { return c.view().Functions() }

// Call calls fn with args on the live node offering it with the least load
// for its slots, and decodes the result into out (a pointer, or nil). If
// that node is draining (Unavailable), overloaded, unreachable or its
// connection breaks, the call is tried once more on the next least loaded
// node, so that a rolling restart does not fail single calls; a function
// that must not run twice should not count on a broken connection meaning
// it did not run.
func (c *Client) Call(ctx context.Context, fn string, out any, args ...any) error {
	view := c.view()
	candidates := view.Candidates(fn)
	if len(candidates) == 0 {
		return unknownFunction(view, fn)
	}
	var err error
	for i, m := range candidates[:min(2, len(candidates))] {
		if i > 0 {
			c.log.Debug("call retried on the next node", "function", fn, "node", m.RPC, "after", err)
		}
		err = c.callOn(ctx, m.RPC, fn, out, args...)
		if err == nil || !retryElsewhere(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// callOn calls fn on the node at addr, logging (at debug level) once the
// request has gone out.
func (c *Client) callOn(ctx context.Context, addr, fn string, out any, args ...any) error {
	cl, err := c.pool.Get(ctx, addr)
	if err != nil {
		return err
	}
	call := cl.Go(ctx, fn, out, nil, args...)
	c.log.Debug("call sent", "function", fn, "node", addr)
	return (<-call.Done).Error
}

// retryElsewhere reports errors after which another node may well succeed:
// the node is draining or overloaded, or cannot be reached.
func retryElsewhere(err error) bool {
	var conn *rpc.ConnError
	var dial *rpc.DialError
	return errors.Is(err, rpc.ErrUnavailable) || errors.Is(err, rpc.ErrOverloaded) ||
		errors.As(err, &conn) || errors.As(err, &dial)
}

// unknownFunction is the error for a function no live node offers, with
// the names it may be a misspelling of.
func unknownFunction(view *grid.View, fn string) error {
	msg := fmt.Sprintf("no live node offers %q", fn)
	if s := view.Suggest(fn); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return rpc.Errorf(rpc.KindUnknownFunction, "%s", msg)
}

// MemberCache is one member's answer to shoal.cache: the kind of result
// cache it uses, its share of the grid cache and its counters, or the
// error asking it.
type MemberCache struct {
	Member grid.Member
	Info   grid.CacheInfo
	Err    error
}

// CacheInfo asks every live member about its result cache (shoal.cache),
// all at once, each bounded by ctx, and returns the answers sorted by
// member name.
func (c *Client) CacheInfo(ctx context.Context) []MemberCache {
	alive := c.view().Alive()
	out := make([]MemberCache, len(alive))
	var wg sync.WaitGroup
	for i, m := range alive {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := c.stub.Cache(ctx, m.RPC)
			out[i] = MemberCache{Member: m, Info: info, Err: err}
		}()
	}
	wg.Wait()
	return out
}

// Close stops the refresh and closes every connection.
func (c *Client) Close() error {
	c.stop()
	c.wg.Wait()
	c.pool.Close()
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	if c.ownsCache && c.cache != nil {
		c.cache.Close()
	}
	c.cache, c.ownsCache = nil, false
	return nil
}
