package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/internal/breaker"
)

// PeerTransport carries a Peers cache's requests to the other peers, named
// as SetPeers names them.
type PeerTransport interface {
	// GetFrom asks peer for keys and returns its values in key order, nil
	// for a key it does not hold.
	GetFrom(ctx context.Context, peer string, keys []string) ([][]byte, error)
	// SetOn stores items on peer.
	SetOn(ctx context.Context, peer string, items []Item) error
}

// PeersConfig configures a Peers cache. Zero fields take the defaults
// given.
type PeersConfig struct {
	// Local holds the keys this peer owns; nil for a peer that holds none
	// (a client).
	Local *Memory
	// Transport reaches the other peers. Required.
	Transport PeerTransport
	// Timeout bounds each request to another peer. Default: DefaultTimeout.
	Timeout time.Duration
	// MaxItemSize: larger values are not sent. Default: DefaultMaxItemSize.
	MaxItemSize int
	// MaxRequestBytes bounds the values one store request carries; more go
	// in further requests. Default: 1 MiB.
	MaxRequestBytes int
	// BreakerThreshold is how many failures in a row open a peer's
	// breaker. Default: 3.
	BreakerThreshold int
	// BreakerCooldown is how long an open breaker skips its peer before one
	// probe is let through. Default: 5s.
	BreakerCooldown time.Duration
	// Logger receives failures and breaker changes. Default: slog.Default().
	Logger *slog.Logger
}

// Peers is a Cache spread over named peers, as groupcache spreads one:
// each key is owned by one peer, placed by ketama over the peers' names,
// and lives only there. Lookups and stores go to the owners in one request
// per owner, in parallel; a peer that fails or is slow is a miss, and after
// BreakerThreshold failures in a row its breaker skips it for a while.
//
// When the peer list changes, about 1/N of the keys change owner; a lookup
// of a moved key asks the new owner, which does not hold it yet: a miss.
// Values are results of pure functions under keys that name the function,
// its version and its arguments, so a value found is right wherever it is
// found.
type Peers struct {
	cfg PeersConfig
	log *slog.Logger
	counters
	sent, unsent atomic.Uint64

	ring atomic.Pointer[peerRing]
	mu   sync.Mutex
	brk  map[string]*breaker.Breaker // by peer name
}

// peerRing is the ring with the name of the peer holding Local.
type peerRing struct {
	*ring
	self int // index of the local peer in ring.servers, or -1
}

// NewPeers returns a cache over no peers yet; SetPeers names them.
func NewPeers(cfg PeersConfig) *Peers {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxItemSize <= 0 {
		cfg.MaxItemSize = DefaultMaxItemSize
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 1 << 20
	}
	if cfg.BreakerThreshold <= 0 {
		cfg.BreakerThreshold = 3
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Peers{cfg: cfg, log: cfg.Logger, brk: make(map[string]*breaker.Breaker)}
	p.ring.Store(&peerRing{ring: newNameRing(nil), self: -1})
	return p
}

// SetPeers names the peers that own keys; self is this peer's name among
// them, whose keys Local holds ("" for none). It reports whether the list
// changed.
func (p *Peers) SetPeers(self string, peers ...string) bool {
	r := newNameRing(peers)
	old := p.ring.Load()
	pr := &peerRing{ring: r, self: -1}
	for i, name := range r.servers {
		if name == self && p.cfg.Local != nil {
			pr.self = i
		}
	}
	if old.self == pr.self && equalStrings(old.servers, r.servers) {
		return false
	}
	p.mu.Lock()
	next := make(map[string]*breaker.Breaker, len(r.servers))
	for _, name := range r.servers {
		b := p.brk[name]
		if b == nil {
			b = breaker.New(p.cfg.BreakerThreshold, p.cfg.BreakerCooldown)
		}
		next[name] = b
	}
	p.brk = next
	p.ring.Store(pr)
	p.mu.Unlock()
	return true
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Peers returns the peers that own keys, sorted by name.
func (p *Peers) Peers() []string {
	return append([]string(nil), p.ring.Load().servers...)
}

// Shares returns the fraction of the key space each peer owns, by name.
func (p *Peers) Shares() map[string]float64 { return p.ring.Load().sharesByName() }

// Shares returns the fraction of the key space each of peers would own in
// a Peers cache over them, by name.
func Shares(peers ...string) map[string]float64 { return newNameRing(peers).sharesByName() }

func (r *ring) sharesByName() map[string]float64 {
	out := make(map[string]float64, len(r.servers))
	for i, s := range r.shares() {
		out[r.servers[i]] = s
	}
	return out
}

// Owner returns the name of the peer that owns key, or "" when there are
// no peers.
func (p *Peers) Owner(key string) string {
	r := p.ring.Load()
	if len(r.points) == 0 {
		return ""
	}
	return r.servers[r.pick(key)]
}

// byOwner groups positions of keys by the index of their owner.
func byOwner[T any](r *peerRing, list []T, key func(T) string) map[int][]T {
	groups := make(map[int][]T)
	if len(r.points) == 0 {
		return groups
	}
	for _, x := range list {
		o := r.pick(key(x))
		groups[o] = append(groups[o], x)
	}
	return groups
}

// GetMulti implements Cache: the local peer's keys from Local, the others
// in one request per owner, in parallel.
func (p *Peers) GetMulti(ctx context.Context, keys []string) map[string][]byte {
	out := make(map[string][]byte, len(keys))
	if ctx.Err() != nil || len(keys) == 0 {
		p.misses.Add(uint64(len(keys)))
		return out
	}
	r := p.ring.Load()
	groups := byOwner(r, keys, func(k string) string { return k })
	asked := len(keys) // of other peers
	if local, ok := groups[r.self]; ok && r.self >= 0 {
		delete(groups, r.self)
		asked -= len(local)
		for k, v := range p.cfg.Local.GetMulti(ctx, local) {
			out[k] = v
		}
	}
	var mu sync.Mutex
	remote := 0
	eachPeer(p, ctx, r, groups, nil, func(ctx context.Context, peer string, keys []string) error {
		values, err := p.cfg.Transport.GetFrom(ctx, peer, keys)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for i, v := range values {
			if v != nil && i < len(keys) {
				out[keys[i]] = v
				remote++
			}
		}
		return nil
	})
	p.hits.Add(uint64(remote))
	p.misses.Add(uint64(asked - remote))
	return out
}

// SetMulti implements Cache: the local peer's items into Local, the others
// to their owners, in requests of at most MaxRequestBytes each.
func (p *Peers) SetMulti(ctx context.Context, items []Item) {
	if rest := p.StoreOwned(ctx, items); len(rest) > 0 {
		p.send(ctx, rest)
	}
}

// StoreOwned stores the items this peer owns in Local and returns the
// others, for the caller to send with SetMulti when it suits it (off the
// path of a reply, say). items is reordered in place; the result is a
// slice of it.
func (p *Peers) StoreOwned(ctx context.Context, items []Item) (others []Item) {
	r := p.ring.Load()
	if r.self < 0 {
		return items
	}
	mine := 0
	for i := range items {
		if len(r.points) > 0 && r.pick(items[i].Key) == r.self {
			items[mine], items[i] = items[i], items[mine]
			mine++
		}
	}
	if mine > 0 {
		p.cfg.Local.SetMulti(ctx, items[:mine])
	}
	return items[mine:]
}

// send stores items on their owners, none of them this peer.
func (p *Peers) send(ctx context.Context, items []Item) {
	fitting := items[:0:0]
	for _, it := range items {
		if !fits(it.Key, it.Value, p.cfg.MaxItemSize) {
			p.tooLarge.Add(1)
			continue
		}
		fitting = append(fitting, it)
	}
	r := p.ring.Load()
	if len(r.points) == 0 {
		p.unsent.Add(uint64(len(fitting))) // no owner to send them to
		return
	}
	groups := byOwner(r, fitting, func(it Item) string { return it.Key })
	if local, ok := groups[r.self]; ok && r.self >= 0 {
		delete(groups, r.self) // the ring changed since StoreOwned
		p.cfg.Local.SetMulti(ctx, local)
	}
	skipped := func(items []Item) { p.unsent.Add(uint64(len(items))) }
	eachPeer(p, ctx, r, groups, skipped, func(ctx context.Context, peer string, items []Item) error {
		for len(items) > 0 {
			n, size := 0, 0
			for n < len(items) && (n == 0 || size+len(items[n].Value) <= p.cfg.MaxRequestBytes) {
				size += len(items[n].Key) + len(items[n].Value)
				n++
			}
			if err := p.cfg.Transport.SetOn(ctx, peer, items[:n]); err != nil {
				skipped(items)
				return err
			}
			p.sent.Add(uint64(n))
			items = items[n:]
		}
		return nil
	})
}

// eachPeer runs f for each owner's group in parallel, each with its own
// Timeout, skipping peers whose breaker is open, and keeps the breakers'
// books. The groups of peers skipped are handed to skipped, if not nil.
func eachPeer[T any](p *Peers, outer context.Context, r *peerRing, groups map[int][]T, skipped func([]T), f func(ctx context.Context, peer string, group []T) error) {
	var wg sync.WaitGroup
	for owner, group := range groups {
		peer := r.servers[owner]
		p.mu.Lock()
		b := p.brk[peer]
		p.mu.Unlock()
		if b == nil || !b.Allow(time.Now()) {
			if skipped != nil {
				skipped(group)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(outer, p.cfg.Timeout)
			defer cancel()
			err := f(ctx, peer, group)
			switch {
			case err == nil:
				if b.State(time.Now()) != breaker.Closed {
					p.log.Info("cache: peer answers again", "peer", peer)
				}
				b.Success()
			case outer.Err() != nil:
				b.Abandon() // the caller gave up; says nothing of the peer
			default:
				p.errors.Add(1)
				p.log.Debug("cache: request to a peer failed", "peer", peer, "err", err)
				if b.Failure(time.Now()) {
					p.log.Warn("cache: peer failing; skipping it for a while", "peer", peer,
						"err", err, "for", p.cfg.BreakerCooldown)
				}
			}
		}()
	}
	wg.Wait()
}

// Stats implements Cache: Local's counters (the lookups it served, the
// values it holds) added to this peer's own (lookups answered by others,
// failed requests), with each peer's breaker.
func (p *Peers) Stats() Stats {
	s := p.counters.stats()
	if p.cfg.Local != nil {
		l := p.cfg.Local.Stats()
		s.Hits += l.Hits
		s.Misses += l.Misses
		s.Stored += l.Stored
		s.TooLarge += l.TooLarge
		s.Evicted += l.Evicted
	}
	s.Sent, s.Unsent = p.sent.Load(), p.unsent.Load()
	now := time.Now()
	for _, name := range p.ring.Load().servers {
		p.mu.Lock()
		b := p.brk[name]
		p.mu.Unlock()
		state := breaker.Closed
		if b != nil {
			state = b.State(now)
		}
		s.Servers = append(s.Servers, ServerStats{Addr: name, Breaker: string(state)})
	}
	return s
}

// Len returns what Local holds (see Memory.Len); nothing for a peer that
// holds no keys.
func (p *Peers) Len() (entries, bytes int) {
	if p.cfg.Local == nil {
		return 0, 0
	}
	return p.cfg.Local.Len()
}

// Local returns the cache holding this peer's keys, or nil.
func (p *Peers) Local() *Memory { return p.cfg.Local }

// Close implements Cache; the transport's connections are its owner's.
func (p *Peers) Close() error { return nil }
