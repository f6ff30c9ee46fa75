package grid

import (
	"context"
	"fmt"

	"github.com/shoalgrid/shoal/cache"
)

// The kinds of result cache a node uses, as CacheInfo.Kind names them.
const (
	// CacheGrid: the nodes' memory caches form one cache; each key lives
	// on the member that owns it (shoal.cache.get and shoal.cache.set).
	CacheGrid = "grid"
	// CacheMemcached: memcached servers, listed in CacheInfo.Servers.
	CacheMemcached = "memcached"
	// CacheEmbedded: a cache the node's embedder gave it, which clients
	// cannot read.
	CacheEmbedded = "embedded"
)

// CacheInfo is what shoal.cache returns: the kind of result cache the node
// uses and what it holds.
type CacheInfo struct {
	Kind    string   `msgpack:"kind" json:"kind"`                 // CacheGrid, CacheMemcached or CacheEmbedded
	Servers []string `msgpack:"servers" json:"servers,omitempty"` // the memcached servers, in ring order
	// Share is the fraction of the grid cache's keys the node owns, by its
	// own member view; 0 for other kinds.
	Share    float64 `msgpack:"share" json:"share"`
	Capacity int64   `msgpack:"capacity" json:"capacity"` // bytes offered to the grid cache
	Bytes    int64   `msgpack:"bytes" json:"bytes"`       // bytes its memory cache holds, by its own count
	Entries  int64   `msgpack:"entries" json:"entries"`   // entries its memory cache holds
	Hits     uint64  `msgpack:"hits" json:"hits"`         // lookups it answered with a value
	Misses   uint64  `msgpack:"misses" json:"misses"`     // lookups it answered without
	Stored   uint64  `msgpack:"stored" json:"stored"`     // values it stored
	Evicted  uint64  `msgpack:"evicted" json:"evicted"`   // entries it dropped to make room
	Sent     uint64  `msgpack:"sent" json:"sent"`         // results it sent to their owners
	Unsent   uint64  `msgpack:"unsent" json:"unsent"`     // results it did not send: their owner failed, or its breaker was open
	Errors   uint64  `msgpack:"errors" json:"errors"`     // failed requests to a cache server or member
	// Breakers are the breakers of the memcached servers, or of the
	// members owning keys of the grid cache, that it writes to.
	Breakers []Breaker `msgpack:"breakers,omitempty" json:"breakers,omitempty"`
}

// Breaker is the state of the breaker in front of one cache server or
// member: "closed" (in use), "open" (skipped after failures) or
// "half-open" (being probed).
type Breaker struct {
	Server string `msgpack:"server" json:"server"`
	State  string `msgpack:"state" json:"state"`
}

// Cache returns the kind of result cache the node at addr uses, with its
// share and counters (shoal.cache).
func (s Stub) Cache(ctx context.Context, addr string) (CacheInfo, error) {
	var info CacheInfo
	err := s.Caller.Call(ctx, addr, MethodCache, &info)
	return info, err
}

// CacheGet returns the values the node at addr holds for keys, in key
// order, nil for those it does not hold (shoal.cache.get).
func (s Stub) CacheGet(ctx context.Context, addr string, keys []string) ([][]byte, error) {
	var values [][]byte
	if err := s.Caller.Call(ctx, addr, MethodCacheGet, &values, keys); err != nil {
		return nil, err
	}
	if len(values) != len(keys) {
		return nil, fmt.Errorf("grid: %s answered %d values for %d keys", addr, len(values), len(keys))
	}
	return values, nil
}

// CacheSet stores values under keys (values[i] under keys[i]) in the share
// of the grid cache of the node at addr (shoal.cache.set).
func (s Stub) CacheSet(ctx context.Context, addr string, keys []string, values [][]byte) error {
	return s.Caller.Call(ctx, addr, MethodCacheSet, nil, keys, values)
}

// CacheTransport carries a grid cache's requests (a cache.Peers) to the
// members that own the keys, named as the members are.
type CacheTransport struct {
	Stub Stub
	// Addr returns the RPC address of the member named name.
	Addr func(name string) (string, bool)
}

var _ cache.PeerTransport = CacheTransport{}

func (t CacheTransport) addr(peer string) (string, error) {
	addr, ok := t.Addr(peer)
	if !ok || addr == "" {
		return "", fmt.Errorf("grid: cache peer %q is not a known member", peer)
	}
	return addr, nil
}

// GetFrom implements cache.PeerTransport.
func (t CacheTransport) GetFrom(ctx context.Context, peer string, keys []string) ([][]byte, error) {
	addr, err := t.addr(peer)
	if err != nil {
		return nil, err
	}
	return t.Stub.CacheGet(ctx, addr, keys)
}

// SetOn implements cache.PeerTransport.
func (t CacheTransport) SetOn(ctx context.Context, peer string, items []cache.Item) error {
	addr, err := t.addr(peer)
	if err != nil {
		return err
	}
	keys := make([]string, len(items))
	values := make([][]byte, len(items))
	for i, it := range items {
		keys[i], values[i] = it.Key, it.Value
	}
	return t.Stub.CacheSet(ctx, addr, keys, values)
}
