package cache

import (
	"container/list"
	"context"
	"sync"
)

// Memory is an in-process cache bounded in bytes that evicts the least
// recently used entries: the embedded default when no memcached is
// configured.
type Memory struct {
	maxBytes int
	maxItem  int
	counters

	mu      sync.Mutex
	used    int
	order   *list.List // front: most recently used
	entries map[string]*list.Element
}

type memoryEntry struct {
	key   string
	value []byte
}

// NewMemory returns a cache holding at most maxBytes of keys and values
// (plus a small overhead per entry); a value over maxItem bytes, or over a
// quarter of maxBytes, is not stored.
func NewMemory(maxBytes, maxItem int) *Memory {
	if maxItem <= 0 || maxItem > maxBytes/4 {
		maxItem = maxBytes / 4
	}
	return &Memory{maxBytes: maxBytes, maxItem: maxItem, order: list.New(), entries: make(map[string]*list.Element)}
}

func entrySize(key string, value []byte) int { return len(key) + len(value) + itemOverhead }

// GetMulti implements Cache.
func (m *Memory) GetMulti(ctx context.Context, keys []string) map[string][]byte {
	out := make(map[string][]byte, len(keys))
	m.mu.Lock()
	for _, k := range keys {
		if el, ok := m.entries[k]; ok {
			m.order.MoveToFront(el)
			if v, ok := unwrap(el.Value.(*memoryEntry).value); ok {
				out[k] = v
			}
		}
	}
	m.mu.Unlock()
	m.hits.Add(uint64(len(out)))
	m.misses.Add(uint64(len(keys) - len(out)))
	return out
}

// SetMulti implements Cache.
func (m *Memory) SetMulti(ctx context.Context, items []Item) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, it := range items {
		if !fits(it.Key, it.Value, m.maxItem) {
			m.tooLarge.Add(1)
			continue
		}
		value := wrap(it.Value)
		if el, ok := m.entries[it.Key]; ok {
			e := el.Value.(*memoryEntry)
			m.used += len(value) - len(e.value)
			e.value = value
			m.order.MoveToFront(el)
		} else {
			m.entries[it.Key] = m.order.PushFront(&memoryEntry{key: it.Key, value: value})
			m.used += entrySize(it.Key, value)
		}
		m.stored.Add(1)
		for m.used > m.maxBytes {
			oldest := m.order.Back()
			e := oldest.Value.(*memoryEntry)
			m.order.Remove(oldest)
			delete(m.entries, e.key)
			m.used -= entrySize(e.key, e.value)
		}
	}
}

// Stats implements Cache.
func (m *Memory) Stats() Stats { return m.counters.stats() }

// Len returns how many entries the cache holds and their size in bytes.
func (m *Memory) Len() (entries, bytes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries), m.used
}

// Close implements Cache; a Memory cache holds nothing to release.
func (m *Memory) Close() error { return nil }
