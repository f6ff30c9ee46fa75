// Package cache stores the results of pure (cacheable) functions: keys
// derived from the function, its version and its arguments, a Cache
// interface with batched lookups and stores, a memcached backend placing
// keys by ketama consistent hashing exactly as libmemcached's weighted
// ketama mode does, and a size-bounded in-memory backend for when no
// memcached is configured.
//
// A cache never fails its caller: an unreachable or slow server, a value
// that is too large or an entry in an unknown format is a miss, counted in
// Stats (and logged), never an error. Only successful results should be
// stored; errors are never cached.
package cache

import (
	"context"
	"sync/atomic"
)

// Item is a value to store under a key.
type Item struct {
	Key   string // from Key, or any memcached-legal key
	Value []byte // the encoded result
}

// Cache is a result cache. Implementations are safe for concurrent use.
type Cache interface {
	// GetMulti looks up keys in one batch and returns the values found;
	// a key that is missing, unreachable or unreadable is simply absent.
	GetMulti(ctx context.Context, keys []string) map[string][]byte
	// SetMulti stores items, skipping (and counting) values over the
	// item size limit. Failures are counted, not returned.
	SetMulti(ctx context.Context, items []Item)
	// Stats returns the counters since the cache was made.
	Stats() Stats
	// Close releases the cache's connections.
	Close() error
}

// Stats counts what a cache has done.
type Stats struct {
	Hits     uint64        // keys found
	Misses   uint64        // keys not found, unreadable, or on a server not asked
	Errors   uint64        // failed requests to a server
	Stored   uint64        // values stored
	TooLarge uint64        // values not stored because they exceed the item size limit
	Evicted  uint64        // entries an in-memory cache dropped to make room (memcached's own evictions are not seen)
	Sent     uint64        // values a Peers cache sent to the peers that own them
	Unsent   uint64        // values a Peers cache did not send: their owner failed, or its breaker was open
	Servers  []ServerStats // memcached servers, in ring order; none for an in-memory cache
}

// ServerStats describes one memcached server.
type ServerStats struct {
	Addr    string // host:port
	Breaker string // "closed" (in use), "open" (skipped after failures) or "half-open" (being probed)
}

// counters are the shared Stats counters of the backends.
type counters struct {
	hits, misses, errors, stored, tooLarge, evicted atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Errors: c.errors.Load(),
		Stored: c.stored.Load(), TooLarge: c.tooLarge.Load(), Evicted: c.evicted.Load(),
	}
}

// DefaultMaxItemSize is memcached's default item size limit (-I 1m).
const DefaultMaxItemSize = 1 << 20

// itemOverhead approximates what memcached stores beside a key and value.
const itemOverhead = 64

// formatVersion is the first bytes of every stored value: a marker and the
// format's version, so that a later format cannot be misread as this one.
var formatVersion = []byte{0xC5, 0x01}

func wrap(payload []byte) []byte {
	out := make([]byte, 0, len(formatVersion)+len(payload))
	return append(append(out, formatVersion...), payload...)
}

// unwrap returns the payload of a stored value, or false if the value is
// not in this format.
func unwrap(stored []byte) ([]byte, bool) {
	if len(stored) < len(formatVersion) || stored[0] != formatVersion[0] || stored[1] != formatVersion[1] {
		return nil, false
	}
	return stored[len(formatVersion):], true
}

// fits reports whether an item stays within a size limit once stored.
func fits(key string, value []byte, limit int) bool {
	return len(key)+len(formatVersion)+len(value)+itemOverhead <= limit
}
