package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// realKey is a key shaped like those of a node caching square(i): what
// Key gives, "shoal:square:" and 32 bytes of hash in hex (here splitmix64
// of i, which is quicker than sha256 and as well spread).
func realKey(i int) string {
	var b [32]byte
	x := uint64(i)
	for j := 0; j < len(b); j += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[j:], z^z>>31)
	}
	return "shoal:square:" + hex.EncodeToString(b[:])
}

// realValues appends to items the entries for square(i), i in [from, to),
// their values encoded as a node encodes results (compact msgpack ints, 1
// to 9 bytes) into one shared buffer.
func realValues(items []Item, from, to int) []Item {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	ends := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		enc.EncodeInt(int64(i) * int64(i))
		ends = append(ends, buf.Len())
	}
	all, start := buf.Bytes(), 0
	for j, end := range ends {
		items = append(items, Item{Key: realKey(from + j), Value: all[start:end:end]})
		start = end
	}
	return items
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoryHoldsWhatItSays fills a 64 MiB cache with three million
// entries shaped like a node's and checks that the heap it keeps alive,
// keys, values and structure, stays within its size (plus 16 MiB for the
// measurement's slack), and that the newest entries are there.
func TestMemoryHoldsWhatItSays(t *testing.T) {
	const (
		maxBytes = 64 << 20
		total    = 3_000_000
		batch    = 1000
		recent   = 100_000 // the newest entries, a small part of the cache
	)
	before := liveHeap()
	m := NewMemory(maxBytes, 0)
	its := make([]Item, 0, batch)
	for from := 0; from < total; from += batch {
		its = realValues(its[:0], from, min(from+batch, total))
		m.SetMulti(ctx, its)
	}
	its = nil
	held := int64(liveHeap()) - int64(before)
	entries, size := m.Len()
	t.Logf("%d entries set: holds %d entries, %d bytes by its count; live heap %.1f MiB (%.1f bytes per entry)",
		total, entries, size, float64(held)/(1<<20), float64(held)/float64(entries))
	if held > maxBytes+16<<20 {
		t.Errorf("live heap grew by %.1f MiB for a cache of %d MiB", float64(held)/(1<<20), maxBytes>>20)
	}
	if size > maxBytes {
		t.Errorf("Len counts %d bytes, over the %d bound", size, maxBytes)
	}
	if entries < recent {
		t.Fatalf("holds %d entries, fewer than the %d newest", entries, recent)
	}
	want := realValues(nil, total-recent, total)
	keys := make([]string, len(want))
	for i, it := range want {
		keys[i] = it.Key
	}
	got := m.GetMulti(ctx, keys)
	for _, it := range want {
		v, ok := got[it.Key]
		switch {
		case !ok:
			t.Fatalf("%s, one of the %d newest entries, is missing (%d of them found)", it.Key, recent, len(got))
		case !bytes.Equal(v, it.Value):
			t.Fatalf("%s = %x, want %x", it.Key, v, it.Value)
		}
	}
	runtime.KeepAlive(m)
}

// benchItems is a working set of node-shaped entries for the benchmarks,
// more than a 64 MiB cache holds.
var benchItems = sync.OnceValue(func() []Item { return realValues(nil, 0, 1<<20) })

const benchBatch = 128 // what a node's cache writer hands SetMulti at most

// BenchmarkMemorySetMulti stores batches of node-shaped entries into a
// 64 MiB cache, cycling through more keys than it holds: in the steady
// state most stores evict.
func BenchmarkMemorySetMulti(b *testing.B) {
	all := benchItems()
	m := NewMemory(64<<20, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from := (i * benchBatch) % (len(all) - benchBatch)
		m.SetMulti(ctx, all[from:from+benchBatch])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/entry")
}

// BenchmarkMemoryGetMulti looks up batches of entries that a 64 MiB
// cache holds.
func BenchmarkMemoryGetMulti(b *testing.B) {
	all := benchItems()[:200_000]
	m := NewMemory(64<<20, 0)
	for from := 0; from < len(all); from += benchBatch {
		m.SetMulti(ctx, all[from:min(from+benchBatch, len(all))])
	}
	keys := make([]string, len(all))
	for i, it := range all {
		keys[i] = it.Key
	}
	if got := m.GetMulti(ctx, keys); len(got) != len(keys) {
		b.Fatalf("the cache holds %d of %d entries", len(got), len(keys))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from := (i * benchBatch) % (len(keys) - benchBatch)
		if got := m.GetMulti(ctx, keys[from:from+benchBatch]); len(got) != benchBatch {
			b.Fatalf("found %d of %d", len(got), benchBatch)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/entry")
}

// checkShards verifies the structure of every shard of m: the records
// tile the ring from tail to head, every slot points at a live record
// whose key has the slot's fingerprint and is reachable from its home,
// and the counts agree.
func checkShards(t *testing.T, m *Memory) {
	t.Helper()
	for si := range m.shards {
		s := &m.shards[si]
		s.mu.Lock()
		starts := map[int]bool{}
		for off, left := s.tail, s.used; left > 0; {
			klen, vlen, _ := s.header(off)
			size := uvarintLen(klen) + uvarintLen(vlen) + klen + vlen
			if size > left {
				t.Fatalf("shard %d: record at %d of %d bytes runs past the head (%d bytes left)", si, off, size, left)
			}
			starts[off] = true
			off, left = s.advance(off, size), left-size
		}
		used := 0
		seen := map[int]bool{}
		for i, sl := range s.slots {
			if sl == 0 {
				continue
			}
			used++
			off := int(sl & offsetMask)
			if !starts[off] || seen[off] {
				t.Fatalf("shard %d: slot %d points at %d: not a record, or one pointed at twice", si, i, off)
			}
			seen[off] = true
			klen, _, keyOff := s.header(off)
			fp := m.recordHash(s, keyOff, klen) >> fpHashShift
			if fp != slotFingerprint(sl) {
				t.Fatalf("shard %d: slot %d has fingerprint %x, its key %x", si, i, slotFingerprint(sl), fp)
			}
			for j := home(fp, len(s.slots)); j != i; j = (j + 1) % len(s.slots) {
				if s.slots[j] == 0 {
					t.Fatalf("shard %d: slot %d is cut off from its home %d by an empty slot at %d", si, i, home(fp, len(s.slots)), j)
				}
			}
		}
		if used != s.entries {
			t.Fatalf("shard %d: %d slots in use, %d entries counted", si, used, s.entries)
		}
		s.mu.Unlock()
	}
}

// versioned is a value that says which key it belongs to and which write
// of it, padded to size.
func versioned(key string, version, size int) []byte {
	v := fmt.Appendf(nil, "%s#%d#", key, version)
	for len(v) < size {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

// TestMemoryCollidingKeys runs random writes and reads against a model,
// with hashes cut down until keys collide: in everything (one shard, one
// home, one fingerprint), in a few bits, and not at all. A key just
// written must be found with its value, and any key found must have the
// value last written to it, never another key's or an older one.
func TestMemoryCollidingKeys(t *testing.T) {
	for _, tc := range []struct {
		mask     uint64
		maxBytes int
	}{
		{0, 8 << 10}, // every key in one run of slots: kept short
		{3<<62 | 1, 64 << 10},
		{^uint64(0), 64 << 10},
	} {
		mask := tc.mask
		t.Run(fmt.Sprintf("mask %x", mask), func(t *testing.T) {
			m := NewMemory(tc.maxBytes, 0)
			m.hashMask = mask
			rng := rand.New(rand.NewPCG(1, mask))
			last := map[string][]byte{}
			keys := make([]string, 1500)
			for i := range keys {
				keys[i] = fmt.Sprintf("key-%d", i)
			}
			found := 0
			for op := 0; op < 30_000; op++ {
				k := keys[rng.IntN(len(keys))]
				if rng.IntN(3) > 0 {
					v := versioned(k, op, 10+rng.IntN(40))
					m.SetMulti(ctx, []Item{{Key: k, Value: v}})
					last[k] = v
					if got := m.GetMulti(ctx, []string{k}); !bytes.Equal(got[k], v) {
						t.Fatalf("op %d: %s just written as %q reads %q", op, k, v, got[k])
					}
					continue
				}
				batch := make([]string, 1+rng.IntN(20))
				for i := range batch {
					batch[i] = keys[rng.IntN(len(keys))]
				}
				for k, v := range m.GetMulti(ctx, batch) {
					if !bytes.Equal(v, last[k]) {
						t.Fatalf("op %d: %s reads %q, last written %q", op, k, v, last[k])
					}
					found++
				}
				if op%1000 == 0 {
					checkShards(t, m)
				}
			}
			checkShards(t, m)
			entries, size := m.Len()
			st := m.Stats()
			t.Logf("%d entries, %d bytes; %d found by batch reads; %+v", entries, size, found, st)
			if st.Evicted == 0 || found == 0 {
				t.Fatal("the test did not exercise eviction and reads")
			}
			if size > tc.maxBytes {
				t.Fatalf("holds %d bytes of %d", size, tc.maxBytes)
			}
		})
	}
}

// TestMemoryRecentlyReadSurvives fills a one-shard cache, reads its
// oldest entries, and writes on until a thousand entries have gone: the
// ones read must still be there, and exactly the oldest unread ones gone.
func TestMemoryRecentlyReadSurvives(t *testing.T) {
	m := NewMemory(512<<10, 0)
	if len(m.shards) != 1 {
		t.Fatalf("%d shards; the test wants one for a known order", len(m.shards))
	}
	old := realValues(nil, 0, 2000)
	m.SetMulti(ctx, old)
	hot := make([]string, 500)
	for i := range hot {
		hot[i] = old[i].Key
	}
	if got := m.GetMulti(ctx, hot); len(got) != len(hot) {
		t.Fatalf("found %d of the %d entries just written", len(got), len(hot))
	}
	var fresh []Item
	for i := 2000; m.Stats().Evicted < 1000; i++ {
		it := realValues(nil, i, i+1)
		m.SetMulti(ctx, it)
		fresh = append(fresh, it...)
	}
	evicted := int(m.Stats().Evicted)
	has := func(its []Item) (n int) {
		keys := make([]string, len(its))
		for i, it := range its {
			keys[i] = it.Key
		}
		return len(m.GetMulti(ctx, keys))
	}
	t.Logf("%d written after, %d evicted", len(fresh), evicted)
	if n := has(old[:500]); n != 500 {
		t.Errorf("%d of the 500 entries read survive", n)
	}
	if n := has(old[500 : 500+evicted]); n != 0 {
		t.Errorf("%d of the %d oldest unread entries survive", n, evicted)
	}
	if n := has(old[500+evicted:]); n != len(old)-500-evicted {
		t.Errorf("%d of the %d newer unread entries survive", n, len(old)-500-evicted)
	}
	if n := has(fresh); n != len(fresh) {
		t.Errorf("%d of the %d newest entries survive", n, len(fresh))
	}
	checkShards(t, m)
}

// TestMemoryTooLarge: a value over the item limit is counted and not
// stored; one at the limit is stored.
func TestMemoryTooLarge(t *testing.T) {
	m := NewMemory(1<<20, 1000)
	limit := 1000 - len("k") - len(formatVersion) - itemOverhead
	m.SetMulti(ctx, []Item{{Key: "k", Value: make([]byte, limit+1)}, {Key: "big", Value: make([]byte, 1<<20)}})
	if got := m.GetMulti(ctx, []string{"k", "big"}); len(got) != 0 {
		t.Fatalf("values over the limit stored: %v", keysOf(got))
	}
	m.SetMulti(ctx, []Item{{Key: "k", Value: bytes.Repeat([]byte{7}, limit)}})
	if got := m.GetMulti(ctx, []string{"k"}); len(got["k"]) != limit {
		t.Fatalf("value at the limit: got %d bytes, want %d", len(got["k"]), limit)
	}
	if st := m.Stats(); st.TooLarge != 2 || st.Stored != 1 || st.Hits != 1 || st.Misses != 2 {
		t.Fatalf("stats %+v; want 2 too large, 1 stored, 1 hit, 2 misses", st)
	}
	// A cache limits items to a quarter of what one shard can hold.
	big := NewMemory(64<<20, 0)
	if big.maxItem > big.shards[0].size/4 || big.maxItem < 512<<10 {
		t.Fatalf("item limit %d for shards of %d bytes", big.maxItem, big.shards[0].size)
	}
}

// TestMemoryOverwrite: writing a key again replaces its value and its
// size; a value of the same size is rewritten in place, so rewriting one
// key does not push others out.
func TestMemoryOverwrite(t *testing.T) {
	m := NewMemory(64<<10, 0)
	m.SetMulti(ctx, []Item{{Key: "other", Value: []byte("kept")}, {Key: "k", Value: versioned("k", 0, 100)}})
	m.SetMulti(ctx, []Item{{Key: "k", Value: []byte("short")}})
	if got := m.GetMulti(ctx, []string{"k"}); string(got["k"]) != "short" {
		t.Fatalf("after an overwrite k = %q", got["k"])
	}
	if entries, _ := m.Len(); entries != 2 {
		t.Fatalf("%d entries after an overwrite, want 2", entries)
	}
	for i := range 20_000 { // far more bytes than the ring holds
		m.SetMulti(ctx, []Item{{Key: "k", Value: versioned("k", i, 40)}})
	}
	got := m.GetMulti(ctx, []string{"k", "other"})
	if !bytes.Equal(got["k"], versioned("k", 19_999, 40)) || string(got["other"]) != "kept" {
		t.Fatalf("after rewrites of the same size: k = %q, other = %q", got["k"], got["other"])
	}
	for i := range 20_000 { // sizes alternate: every write is a new record
		m.SetMulti(ctx, []Item{{Key: "k", Value: versioned("k", i, 40+i%2)}})
	}
	got = m.GetMulti(ctx, []string{"k"})
	if !bytes.Equal(got["k"], versioned("k", 19_999, 41)) {
		t.Fatalf("after rewrites of other sizes: k = %q", got["k"])
	}
	if entries, size := m.Len(); entries > 2 || size > 64<<10 {
		t.Fatalf("%d entries, %d bytes after rewrites of one key", entries, size)
	}
	checkShards(t, m)
}

// TestMemoryStartsEmpty: a new cache holds only its bookkeeping; its
// memory comes as it fills.
func TestMemoryStartsEmpty(t *testing.T) {
	before := liveHeap()
	m := NewMemory(1<<30, 0)
	held := int64(liveHeap()) - int64(before)
	_, size := m.Len()
	t.Logf("an empty 1 GiB cache: %d bytes by its count, live heap +%d bytes", size, held)
	if size > 64<<10 || held > 1<<20 {
		t.Fatalf("an empty 1 GiB cache holds %d bytes by its count, %d in the heap", size, held)
	}
	m.SetMulti(ctx, []Item{{Key: "k", Value: []byte("v")}})
	if _, size = m.Len(); size > 2<<20 {
		t.Fatalf("with one entry it holds %d bytes", size)
	}
	runtime.KeepAlive(m)
}

// TestMemoryConcurrentWritersAndReaders shares a small cache between
// goroutines writing and reading overlapping keys (run it with -race):
// whatever a reader finds belongs to the key it asked for.
func TestMemoryConcurrentWritersAndReaders(t *testing.T) {
	m := NewMemory(2<<20, 0)
	keys := make([]string, 20_000)
	for i := range keys {
		keys[i] = realKey(i)
	}
	var wg sync.WaitGroup
	var found atomic.Int64
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for op := 0; op < 3000; op++ {
				batch := make([]string, 1+rng.IntN(40))
				for i := range batch {
					batch[i] = keys[rng.IntN(len(keys))]
				}
				if g%2 == 0 {
					its := make([]Item, len(batch))
					for i, k := range batch {
						its[i] = Item{Key: k, Value: versioned(k, op, 20+rng.IntN(30))}
					}
					m.SetMulti(ctx, its)
					continue
				}
				for k, v := range m.GetMulti(ctx, batch) {
					if !bytes.HasPrefix(v, []byte(k+"#")) {
						t.Errorf("%s reads %q", k, v)
						return
					}
					found.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	checkShards(t, m)
	st := m.Stats()
	t.Logf("%d found; %+v", found.Load(), st)
	if found.Load() == 0 || st.Evicted == 0 {
		t.Fatal("the test did not exercise reads and eviction")
	}
}
