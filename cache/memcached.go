package cache

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/shoalgrid/shoal/internal/breaker"
)

// MemcachedConfig configures a Memcached cache. Zero fields take the
// defaults given.
type MemcachedConfig struct {
	// Servers lists the memcached servers as host:port. It may be empty
	// and set later with SetServers.
	Servers []string
	// Timeout bounds each request to a server, so a slow server costs a
	// lookup little. It must stay well above the scheduling delays of a
	// busy machine: a request that times out counts against the server's
	// breaker, and an open breaker costs the server's whole share of the
	// keys. Default: DefaultTimeout.
	Timeout time.Duration
	// MaxItemSize is the servers' item size limit (memcached -I); larger
	// values are not sent. Default: 1 MiB.
	MaxItemSize int
	// Expiration is how long stored values live; zero keeps them until
	// memcached evicts them. Default: 0.
	Expiration time.Duration
	// BreakerThreshold is how many failures in a row open a server's
	// breaker. Default: 3.
	BreakerThreshold int
	// BreakerCooldown is how long an open breaker skips its server before
	// one probe is let through. Default: 5s.
	BreakerCooldown time.Duration
	// MaxIdleConns is how many idle connections are kept per server.
	// Default: 16.
	MaxIdleConns int
	// Logger receives failures and breaker changes. Default: slog.Default().
	Logger *slog.Logger
}

// Memcached is a Cache over memcached servers, placing keys by ketama as
// libmemcached does, with a breaker per server.
type Memcached struct {
	cfg MemcachedConfig
	sel *Selector
	log *slog.Logger
	counters

	mu      sync.Mutex
	servers map[string]*server
}

// server is one memcached server's breaker and connections. Each server
// has a client of its own because gomemcache can drop idle connections
// only by closing the whole client: a server that was killed and restarted
// leaves every pooled connection dead, and the breaker's probe must not
// take one of them, fail with EOF and keep a working server out for
// another cooldown.
type server struct {
	breaker *breaker.Breaker
	client  *memcache.Client
}

// oneServer is a gomemcache ServerSelector for a single server.
type oneServer struct{ addr net.Addr }

func (o oneServer) PickServer(string) (net.Addr, error) { return o.addr, nil }
func (o oneServer) Each(f func(net.Addr) error) error   { return f(o.addr) }

// DefaultTimeout bounds a request to a memcached server unless
// MemcachedConfig.Timeout says otherwise. It is gomemcache's own default;
// 100ms, tried before, timed out against a healthy server on a loaded
// 2-core machine and opened its breaker.
const DefaultTimeout = 500 * time.Millisecond

// NewMemcached returns a cache over cfg.Servers.
func NewMemcached(cfg MemcachedConfig) (*Memcached, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxItemSize <= 0 {
		cfg.MaxItemSize = DefaultMaxItemSize
	}
	if cfg.BreakerThreshold <= 0 {
		cfg.BreakerThreshold = 3
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 5 * time.Second
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	sel, err := NewSelector(cfg.Servers...)
	if err != nil {
		return nil, err
	}
	m := &Memcached{cfg: cfg, sel: sel, log: cfg.Logger, servers: make(map[string]*server)}
	m.syncServers(cfg.Servers)
	return m, nil
}

// SetServers replaces the server list; keys move by ketama, about 1/N of
// them for one server added or removed among N.
func (m *Memcached) SetServers(servers ...string) error {
	if err := m.sel.SetServers(servers...); err != nil {
		return err
	}
	m.syncServers(servers)
	return nil
}

// Servers returns the current server list.
func (m *Memcached) Servers() []string { return m.sel.Servers() }

// syncServers keeps the breakers and connections of the servers still
// listed, makes them for new ones and closes those of servers gone.
func (m *Memcached) syncServers(servers []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]*server, len(servers))
	for _, addr := range servers {
		s := m.servers[addr]
		if s == nil {
			client := memcache.NewFromSelector(oneServer{&serverAddr{hostport: addr}})
			client.Timeout = m.cfg.Timeout
			client.MaxIdleConns = m.cfg.MaxIdleConns
			s = &server{breaker: breaker.New(m.cfg.BreakerThreshold, m.cfg.BreakerCooldown), client: client}
		}
		next[addr] = s
	}
	for addr, s := range m.servers {
		if next[addr] == nil {
			s.client.Close()
		}
	}
	m.servers = next
}

func (m *Memcached) server(addr string) *server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.servers[addr]
}

// byServer groups keys by the server ketama gives them; keys memcached
// would refuse are left out.
func (m *Memcached) byServer(keys []string) map[string][]string {
	groups := make(map[string][]string)
	for _, k := range keys {
		if !legalKey(k) {
			continue
		}
		addr, err := m.sel.PickServer(k)
		if err != nil {
			return nil
		}
		groups[addr.String()] = append(groups[addr.String()], k)
	}
	return groups
}

// GetMulti implements Cache: one request per server, in parallel, to the
// servers whose breakers allow it.
func (m *Memcached) GetMulti(ctx context.Context, keys []string) map[string][]byte {
	out := make(map[string][]byte, len(keys))
	if ctx.Err() == nil {
		var mu sync.Mutex
		m.eachServer(m.byServer(keys), func(client *memcache.Client, keys []string) error {
			items, err := client.GetMulti(keys)
			mu.Lock()
			for k, it := range items {
				if v, ok := unwrap(it.Value); ok {
					out[k] = v
				}
			}
			mu.Unlock()
			return err
		})
	}
	m.hits.Add(uint64(len(out)))
	m.misses.Add(uint64(len(keys) - len(out)))
	return out
}

// SetMulti implements Cache.
func (m *Memcached) SetMulti(ctx context.Context, items []Item) {
	if ctx.Err() != nil {
		return
	}
	byKey := make(map[string][]byte, len(items))
	keys := make([]string, 0, len(items))
	for _, it := range items {
		if !fits(it.Key, it.Value, m.cfg.MaxItemSize) {
			m.tooLarge.Add(1)
			continue
		}
		byKey[it.Key] = it.Value
		keys = append(keys, it.Key)
	}
	expiration := int32(m.cfg.Expiration / time.Second)
	m.eachServer(m.byServer(keys), func(client *memcache.Client, keys []string) error {
		for _, k := range keys {
			err := client.Set(&memcache.Item{Key: k, Value: wrap(byKey[k]), Expiration: expiration})
			switch {
			case err == nil:
				m.stored.Add(1)
			case isTooLarge(err):
				m.tooLarge.Add(1)
			default:
				return err
			}
		}
		return nil
	})
}

// eachServer runs f with each server's client and keys in parallel,
// skipping servers whose breaker is open, and keeps the breakers' books.
// A probe of a half-open breaker goes out on a fresh connection: the
// server's idle connections date from before it failed and, if it was
// restarted, are all dead.
func (m *Memcached) eachServer(groups map[string][]string, f func(client *memcache.Client, keys []string) error) {
	var wg sync.WaitGroup
	for addr, keys := range groups {
		s := m.server(addr)
		if s == nil || !s.breaker.Allow(time.Now()) {
			continue
		}
		b := s.breaker
		if b.State(time.Now()) == breaker.HalfOpen {
			// Allow gave this request the probe's place.
			s.client.Close()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(s.client, keys)
			if err == nil || isProtocolOnly(err) {
				if b.State(time.Now()) != breaker.Closed {
					m.log.Info("cache: memcached server answers again", "server", addr)
				}
				b.Success()
				return
			}
			m.errors.Add(1)
			m.log.Debug("cache: memcached request failed", "server", addr, "err", err)
			if b.Failure(time.Now()) {
				s.client.Close() // no request goes out until the probe; hold no sockets to a failing server
				m.log.Warn("cache: memcached server failing; skipping it for a while", "server", addr,
					"err", err, "for", m.cfg.BreakerCooldown)
			}
		}()
	}
	wg.Wait()
}

// isProtocolOnly reports errors that come from a working server.
func isProtocolOnly(err error) bool {
	return errors.Is(err, memcache.ErrCacheMiss) || errors.Is(err, memcache.ErrNotStored) ||
		errors.Is(err, memcache.ErrCASConflict) || isTooLarge(err)
}

func isTooLarge(err error) bool {
	return err != nil && strings.Contains(err.Error(), "too large")
}

// legalKey is memcached's rule: at most 250 bytes, none a space or control.
func legalKey(key string) bool {
	if len(key) == 0 || len(key) > 250 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}

// Stats implements Cache, with each server's breaker state.
func (m *Memcached) Stats() Stats {
	s := m.counters.stats()
	now := time.Now()
	_ = m.sel.Each(func(a net.Addr) error {
		state := breaker.Closed
		if srv := m.server(a.String()); srv != nil {
			state = srv.breaker.State(now)
		}
		s.Servers = append(s.Servers, ServerStats{Addr: a.String(), Breaker: string(state)})
		return nil
	})
	return s
}

// Close implements Cache.
func (m *Memcached) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first error
	for _, s := range m.servers {
		if err := s.client.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
