// Package shoal is the Go client of a Shoal grid: Dial any node, then Call
// a function (routed to the least loaded node that offers it) or Map it
// over many inputs, the way Dask's client.map and gather do.
//
//	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{"127.0.0.1:7373"}})
//	defer c.Close()
//	squares, err := shoal.Map[int, int](ctx, c, "square", []int{1, 2, 3})
package shoal

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
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
	// Refresh is how often the member list is re-read. Default: 1s.
	Refresh time.Duration
	// Cache is looked up before items of cacheable functions are sent.
	// Default: the memcached servers the seed node writes to, if any.
	Cache cache.Cache
	// Logger receives the client's logs. Default: slog.Default().
	Logger *slog.Logger
}

// Client talks to a grid. It keeps the member list fresh and one
// connection per node; it is safe for concurrent use. Close it when done.
type Client struct {
	cfg       Config
	log       *slog.Logger
	pool      *rpc.Pool
	cache     cache.Cache
	ownsCache bool
	ctx       context.Context
	stop      context.CancelFunc
	wg        sync.WaitGroup

	mu        sync.Mutex
	members   []node.Member
	offered   map[string][]string // function name to the nodes offering it
	functions map[string]node.GridFunction
	watchers  map[chan string]struct{}
}

// Dial connects to the first seed that answers, reads the grid's members
// and functions, and keeps them fresh until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Seeds) == 0 {
		return nil, errors.New("shoal: no seeds given")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		pool:     rpc.NewPool(rpc.ClientConfig{Token: cfg.Token, TLS: cfg.TLS, Logger: cfg.Logger}),
		cache:    cfg.Cache,
		watchers: make(map[chan string]struct{}),
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	var errs []string
	for _, seed := range cfg.Seeds {
		err := c.refreshFrom(ctx, strings.TrimSpace(seed))
		if err == nil {
			break
		}
		if errors.Is(err, rpc.ErrUnauthorized) {
			c.Close()
			return nil, err
		}
		errs = append(errs, err.Error())
	}
	if c.members == nil {
		c.Close()
		return nil, fmt.Errorf("shoal: no seed answered: %s", strings.Join(errs, "; "))
	}
	if c.cache == nil {
		if err := c.discoverCache(ctx); err != nil {
			c.log.Warn("shoal: no cache lookups: the grid's cache is out of reach", "err", err)
		}
	}
	c.wg.Add(1)
	go c.refreshLoop()
	return c, nil
}

// discoverCache uses the memcached servers the nodes write results to.
func (c *Client) discoverCache(ctx context.Context) error {
	var servers []string
	if err := c.callAny(ctx, "shoal.cache", &servers); err != nil || len(servers) == 0 {
		return err
	}
	mc, err := cache.NewMemcached(cache.MemcachedConfig{Servers: servers, Logger: c.log})
	if err != nil {
		return err
	}
	c.cache, c.ownsCache = mc, true
	return nil
}

// callAny calls a method on the first live member that answers.
func (c *Client) callAny(ctx context.Context, method string, result any, args ...any) error {
	var last error = errors.New("no live member")
	for _, m := range c.Members() {
		if m.State != node.StateAlive {
			continue
		}
		cl, err := c.pool.Get(ctx, m.RPC)
		if err == nil {
			if err = cl.Call(ctx, method, result, args...); err == nil {
				return nil
			}
		}
		last = err
	}
	return last
}

// refreshFrom reads members and functions from the node at addr.
func (c *Client) refreshFrom(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cl, err := c.pool.Get(ctx, addr)
	if err != nil {
		return err
	}
	var members []node.Member
	if err := cl.Call(ctx, "shoal.members", &members); err != nil {
		return err
	}
	var fns []node.GridFunction
	if err := cl.Call(ctx, "shoal.functions", &fns); err != nil {
		return err
	}
	c.update(members, fns)
	return nil
}

// update installs a new view and tells running jobs of nodes gone.
func (c *Client) update(members []node.Member, fns []node.GridFunction) {
	offered := make(map[string][]string, len(fns))
	functions := make(map[string]node.GridFunction, len(fns))
	for _, f := range fns {
		offered[f.Name] = f.Nodes
		functions[f.Name] = f
	}
	c.mu.Lock()
	wasAlive := make(map[string]bool)
	for _, m := range c.members {
		if m.State == node.StateAlive {
			wasAlive[m.Name] = true
		}
	}
	var gone []string
	seen := make(map[string]bool)
	for _, m := range members {
		seen[m.Name] = true
		if wasAlive[m.Name] && (m.State == node.StateDead || m.State == node.StateLeft) {
			gone = append(gone, m.Name)
		}
	}
	for name := range wasAlive {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	c.members, c.offered, c.functions = members, offered, functions
	for w := range c.watchers {
		for _, name := range gone {
			select {
			case w <- name:
			default: // the job will find out at its next refresh
			}
		}
	}
	c.mu.Unlock()
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

// refresh re-reads the member list from the first live member that answers.
func (c *Client) refresh(ctx context.Context) error {
	var err error = errors.New("no live member")
	for _, m := range c.Members() {
		if m.State == node.StateAlive {
			if err = c.refreshFrom(ctx, m.RPC); err == nil {
				return nil
			}
		}
	}
	return err
}

// WaitForMembers waits until at least n members are alive in the client's
// view, re-reading the member list every 50ms meanwhile, and returns ctx's
// error if it ends first. It suits scripts and tests that start nodes and
// then want all of them used.
func (c *Client) WaitForMembers(ctx context.Context, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		alive := 0
		for _, m := range c.Members() {
			if m.State == node.StateAlive {
				alive++
			}
		}
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
func (c *Client) Members() []node.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// workers returns the live members offering fn, with their load.
func (c *Client) workers(fn string) []node.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	offering := make(map[string]bool)
	for _, name := range c.offered[fn] {
		offering[name] = true
	}
	var out []node.Member
	for _, m := range c.members {
		if offering[m.Name] && m.State == node.StateAlive {
			out = append(out, m)
		}
	}
	return out
}

// function returns the grid's description of fn.
func (c *Client) function(fn string) (node.GridFunction, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.functions[fn]
	return f, ok
}

// Call calls fn with args on the live node offering it with the least load
// for its slots, and decodes the result into out (a pointer, or nil).
func (c *Client) Call(ctx context.Context, fn string, out any, args ...any) error {
	best, bestLoad := "", math.Inf(1)
	for _, m := range c.workers(fn) {
		load := float64(m.Running+m.Queued) / float64(max(m.Slots, 1))
		if load < bestLoad {
			best, bestLoad = m.RPC, load
		}
	}
	if best == "" {
		return rpc.Errorf(rpc.KindUnknownFunction, "no live node offers %q", fn)
	}
	cl, err := c.pool.Get(ctx, best)
	if err != nil {
		return err
	}
	return cl.Call(ctx, fn, out, args...)
}

// Close stops the refresh and closes every connection.
func (c *Client) Close() error {
	c.stop()
	c.wg.Wait()
	c.pool.Close()
	if c.ownsCache && c.cache != nil {
		c.cache.Close()
	}
	return nil
}

// jobGrid is one job's view of the client, with its own channel of nodes
// gone.
type jobGrid struct {
	c    *Client
	gone chan string
}

func (c *Client) newJobGrid() *jobGrid {
	g := &jobGrid{c: c, gone: make(chan string, 16)}
	c.mu.Lock()
	c.watchers[g.gone] = struct{}{}
	c.mu.Unlock()
	return g
}

func (g *jobGrid) close() {
	g.c.mu.Lock()
	delete(g.c.watchers, g.gone)
	g.c.mu.Unlock()
}

func (g *jobGrid) Workers(ctx context.Context, fn string) ([]scheduler.Worker, error) {
	var out []scheduler.Worker
	for _, m := range g.c.workers(fn) {
		out = append(out, scheduler.Worker{Name: m.Name, Addr: m.RPC, Slots: m.Slots})
	}
	return out, nil
}

func (g *jobGrid) Client(ctx context.Context, addr string) (*rpc.Client, error) {
	return g.c.pool.Get(ctx, addr)
}

func (g *jobGrid) Gone() <-chan string { return g.gone }
