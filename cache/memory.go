package cache

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"sync"
	"unsafe"
)

// Memory is an in-process cache holding at most the bytes it is given:
// the embedded default when no memcached is configured. The bound covers
// all it keeps alive: keys, values, its index and its bookkeeping.
//
// Entries are spread over shards by a hash of their key, each with its own
// lock (a batch takes each lock once). A shard keeps its entries as
// records, [key length][value length][key][value] with the lengths as
// uvarints, in a ring of bytes allocated in segments as it first fills,
// and finds them through an open-addressing index of 8-byte slots (30 bits
// of the key's hash, a recently-read bit and the record's offset) kept at
// most three quarters full and grown by doubling up to an eighth of the
// shard. Records under about 75 bytes (a key as Key makes it for a
// one-letter function is 72) fill the index before the ring, and the rest
// of the ring goes unused. Neither ring nor index holds a pointer, so the
// garbage collector never looks at entries one by one. A lookup compares
// the whole key: keys whose hashes collide are both found, never one for
// the other.
//
// Eviction is first in, first out with a second chance: a new record goes
// at the ring's head, and room is made by dropping the oldest record at
// its tail, unless it has been read since it was written, in which case it
// moves to the head with its bit cleared. An entry read recently so
// survives at least one more pass of the ring, while entries written and
// never read leave in order. Writing a key again with a value of the same
// size rewrites it in place (and counts as a use); a value of another size
// goes at the head as a new record, the old one becoming dead space until
// the tail reaches it.
type Memory struct {
	maxItem   int
	seed      maphash.Seed
	hashMask  uint64 // all ones; tests clear bits to make keys collide
	shardMask uint64
	shards    []shard
	counters
}

// shard is one lock's share of a Memory.
type shard struct {
	mu sync.Mutex

	segs     [][]byte // the ring in segments of 1<<segShift bytes, nil until written
	segShift uint
	size     int // bytes in the ring
	tail     int // offset of the oldest record
	used     int // bytes from tail to head: the records, dead ones included

	slots    []uint64 // the index: 0, or slotUsed|recent|fingerprint|offset
	maxSlots int
	entries  int // live records, one per used slot

	held   int          // bytes allocated: segments, slots and this bookkeeping
	hasher maphash.Hash // hashes a key that wraps across segments

	_ [64]byte // keeps neighbouring shards' locks off one cache line
}

const (
	slotUsed     = 1 << 63
	slotRecent   = 1 << 62
	fpBits       = 30
	fpMask       = 1<<fpBits - 1
	fpSlotShift  = 32
	fpHashShift  = 64 - fpBits // a fingerprint is the hash's top bits; a shard, its bottom ones
	offsetMask   = 1<<32 - 1
	initialSlots = 16

	// Sharding: up to maxShards of at least minShardBytes each, more when
	// a shard would pass maxShardBytes (offsets are 32 bits).
	maxShards     = 16
	minShardBytes = 1 << 20
	maxShardBytes = 1 << 31

	// A ring is cut into about 64 segments of 4 KiB to 1 MiB: a cache
	// takes memory in these steps as it first fills.
	minSegmentShift = 12
	maxSegmentShift = 20
)

// NewMemory returns a cache holding at most maxBytes. A value is not
// stored when it (with its key and a 64-byte allowance, as memcached
// counts) is over maxItem bytes, a quarter of maxBytes, or a quarter of
// one shard's ring (about maxBytes/73 for caches of 16 MiB or more).
func NewMemory(maxBytes, maxItem int) *Memory {
	n := 1
	for n < maxShards && maxBytes/(2*n) >= minShardBytes {
		n *= 2
	}
	for maxBytes/n > maxShardBytes {
		n *= 2
	}
	m := &Memory{seed: maphash.MakeSeed(), hashMask: ^uint64(0), shardMask: uint64(n - 1), shards: make([]shard, n)}
	per := (maxBytes - int(unsafe.Sizeof(*m))) / n
	var ring int
	for i := range m.shards {
		ring = m.shards[i].init(per, &m.seed)
	}
	if maxItem <= 0 || maxItem > maxBytes/4 {
		maxItem = maxBytes / 4
	}
	m.maxItem = min(maxItem, ring/4)
	return m
}

// init lays out a shard of budget bytes, allocating only its segment
// table, and returns the size of its ring.
func (s *shard) init(budget int, seed *maphash.Seed) int {
	fixed := int(unsafe.Sizeof(*s))
	s.maxSlots = max((budget-fixed)/8/8, initialSlots)
	ring := max(budget-fixed-8*s.maxSlots, 64)
	s.segShift = minSegmentShift
	for s.segShift < maxSegmentShift && 1<<s.segShift < ring/64 {
		s.segShift++
	}
	nsegs := (ring + 1<<s.segShift - 1) >> s.segShift
	ring = max(ring-nsegs*int(unsafe.Sizeof([]byte(nil))), 64)
	nsegs = (ring + 1<<s.segShift - 1) >> s.segShift
	s.segs = make([][]byte, nsegs)
	s.size = ring
	s.held = fixed + nsegs*int(unsafe.Sizeof([]byte(nil)))
	s.hasher.SetSeed(*seed)
	return ring
}

func (m *Memory) hash(key string) uint64 { return maphash.String(m.seed, key) & m.hashMask }

func (m *Memory) shard(h uint64) *shard { return &m.shards[h&m.shardMask] }

// GetMulti implements Cache. The values returned are copies.
func (m *Memory) GetMulti(ctx context.Context, keys []string) map[string][]byte {
	out := make(map[string][]byte, len(keys))
	asked := len(keys)
	var arena []byte // the values found, copied out of the rings
	var b shardBatch
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), batchSize)]
		keys = keys[len(chunk):]
		b.n = 0
		for i, k := range chunk {
			b.add(i, m.hash(k))
		}
		b.group(m.shardMask)
		for next := 0; next < b.n; {
			s := m.shard(b.hashes[b.order[next]])
			s.mu.Lock()
			for ; next < b.n; next++ {
				j := b.order[next]
				h := b.hashes[j]
				if m.shard(h) != s {
					break
				}
				k := chunk[b.index[j]]
				i, valOff, vlen, ok := s.find(k, h>>fpHashShift)
				if !ok {
					continue
				}
				s.slots[i] |= slotRecent
				if cap(arena)-len(arena) < vlen {
					arena = make([]byte, 0, max(vlen, 2*cap(arena), 16*len(chunk)))
				}
				start := len(arena)
				arena = arena[:start+vlen]
				s.read(valOff, arena[start:])
				out[k] = arena[start : start+vlen : start+vlen]
			}
			s.mu.Unlock()
		}
	}
	m.hits.Add(uint64(len(out)))
	m.misses.Add(uint64(asked - len(out)))
	return out
}

// SetMulti implements Cache.
func (m *Memory) SetMulti(ctx context.Context, items []Item) {
	var stored, tooLarge, evicted uint64
	var b shardBatch
	for len(items) > 0 {
		chunk := items[:min(len(items), batchSize)]
		items = items[len(chunk):]
		b.n = 0
		for i, it := range chunk {
			if !fits(it.Key, it.Value, m.maxItem) {
				tooLarge++
				continue
			}
			b.add(i, m.hash(it.Key))
		}
		b.group(m.shardMask)
		for next := 0; next < b.n; {
			s := m.shard(b.hashes[b.order[next]])
			s.mu.Lock()
			for ; next < b.n; next++ {
				j := b.order[next]
				h := b.hashes[j]
				if m.shard(h) != s {
					break
				}
				it := &chunk[b.index[j]]
				evicted += uint64(m.set(s, it.Key, it.Value, h))
				stored++
			}
			s.mu.Unlock()
		}
	}
	if stored > 0 {
		m.stored.Add(stored)
	}
	if tooLarge > 0 {
		m.tooLarge.Add(tooLarge)
	}
	if evicted > 0 {
		m.evicted.Add(evicted)
	}
}

// batchSize is how many keys GetMulti and SetMulti take at a time.
const batchSize = 256

// shardBatch is a batch of keys put in order of shard, so that each
// shard's lock is taken once per batch and the work under it runs without
// an atomic instruction between keys: the processor then overlaps one
// key's loads from memory with the next key's.
type shardBatch struct {
	n      int
	hashes [batchSize]uint64
	index  [batchSize]uint16 // position in the caller's batch
	order  [batchSize]uint16 // positions in hashes and index, by shard
}

func (b *shardBatch) add(i int, h uint64) {
	b.hashes[b.n], b.index[b.n] = h, uint16(i)
	b.n++
}

// group orders the batch by shard with a counting sort, or leaves it in
// its order when there are too many shards to count (caches over 32 GiB):
// then neighbouring keys of one shard still share a lock.
func (b *shardBatch) group(shardMask uint64) {
	if shardMask >= maxShards {
		for i := range b.n {
			b.order[i] = uint16(i)
		}
		return
	}
	var starts [maxShards + 1]uint16
	for _, h := range b.hashes[:b.n] {
		starts[h&shardMask+1]++
	}
	for s := 1; s < len(starts); s++ {
		starts[s] += starts[s-1]
	}
	for i, h := range b.hashes[:b.n] {
		b.order[starts[h&shardMask]] = uint16(i)
		starts[h&shardMask]++
	}
}

// Stats implements Cache.
func (m *Memory) Stats() Stats { return m.counters.stats() }

// Len returns how many entries the cache holds and the bytes it holds for
// them: its segments as allocated (dead records and free space included),
// its index and its bookkeeping.
func (m *Memory) Len() (entries, bytes int) {
	bytes = int(unsafe.Sizeof(*m))
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		entries += s.entries
		bytes += s.held
		s.mu.Unlock()
	}
	return entries, bytes
}

// MaxItemSize returns the largest item the cache stores: key, value and
// memcached's 64-byte allowance together.
func (m *Memory) MaxItemSize() int { return m.maxItem }

// Close implements Cache; a Memory cache holds nothing to release.
func (m *Memory) Close() error { return nil }

// set stores key and value in s, its hash being h, and returns how many
// entries it evicted to make room.
func (m *Memory) set(s *shard, key string, value []byte, h uint64) (evicted int) {
	fp := h >> fpHashShift
	if i, valOff, vlen, ok := s.find(key, fp); ok {
		if vlen == len(value) {
			s.write(valOff, value)
			s.slots[i] |= slotRecent
			return 0
		}
		s.deleteSlot(i)
	}
	for s.entries+1 > len(s.slots)/4*3 {
		if len(s.slots) < s.maxSlots {
			s.grow(min(max(2*len(s.slots), initialSlots), s.maxSlots))
		} else if m.evictOldest(s) {
			evicted++
		}
	}
	var header [2 * binary.MaxVarintLen64]byte
	n := binary.PutUvarint(header[:], uint64(len(key)))
	n += binary.PutUvarint(header[n:], uint64(len(value)))
	size := n + len(key) + len(value)
	for s.size-s.used < size {
		if m.evictOldest(s) {
			evicted++
		}
	}
	i, _, _, _ := s.find(key, fp) // absent now: the free slot for it
	head := s.advance(s.tail, s.used)
	s.slots[i] = slotUsed | fp<<fpSlotShift | uint64(head)
	s.entries++
	s.used += size
	write(s, write(s, write(s, head, header[:n]), key), value)
	return evicted
}

// evictOldest makes room at the tail of s's ring: the oldest record goes
// if it is dead or unread since written (reporting whether an entry was
// evicted), or else moves to the head with its recently-read bit cleared.
func (m *Memory) evictOldest(s *shard) (evicted bool) {
	off := s.tail
	klen, vlen, keyOff := s.header(off)
	size := uvarintLen(klen) + uvarintLen(vlen) + klen + vlen
	i := s.slotOf(m.recordHash(s, keyOff, klen)>>fpHashShift, off)
	s.tail = s.advance(off, size)
	s.used -= size
	if i < 0 {
		return false // dead: the key was written again elsewhere
	}
	sl := s.slots[i]
	if sl&slotRecent == 0 {
		s.deleteSlot(i)
		return true
	}
	head := s.advance(s.tail, s.used)
	s.move(off, head, size)
	s.used += size
	s.slots[i] = sl&^(slotRecent|offsetMask) | uint64(head)
	return false
}

// recordHash is the hash of the key of klen bytes at off in s's ring.
func (m *Memory) recordHash(s *shard, off, klen int) uint64 {
	if p := s.at(off); len(p) >= klen {
		return maphash.Bytes(m.seed, p[:klen]) & m.hashMask
	}
	s.hasher.Reset()
	for klen > 0 {
		p := s.at(off)
		c := min(len(p), klen)
		s.hasher.Write(p[:c])
		off, klen = s.advance(off, c), klen-c
	}
	return s.hasher.Sum64() & m.hashMask
}

// home is where the index of n slots starts looking for a fingerprint.
func home(fp uint64, n int) int { return int(fp * uint64(n) >> fpBits) }

func slotFingerprint(sl uint64) uint64 { return sl >> fpSlotShift & fpMask }

// find returns the slot of key, whose hash has fingerprint fp, with the
// offset and length of its value; or, when key is absent, the free slot
// where it would go (-1 when there are no slots yet).
func (s *shard) find(key string, fp uint64) (slot, valOff, vlen int, found bool) {
	n := len(s.slots)
	if n == 0 {
		return -1, 0, 0, false
	}
	want := slotUsed | fp<<fpSlotShift
	for i := home(fp, n); ; {
		sl := s.slots[i]
		if sl == 0 {
			return i, 0, 0, false
		}
		if sl&(slotUsed|fpMask<<fpSlotShift) == want {
			if valOff, vlen, ok := s.keyAt(int(sl&offsetMask), key); ok {
				return i, valOff, vlen, true
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// slotOf returns the slot pointing at the record at off, whose key has
// fingerprint fp, or -1 if none does (the record is dead).
func (s *shard) slotOf(fp uint64, off int) int {
	n := len(s.slots)
	if n == 0 {
		return -1
	}
	for i := home(fp, n); ; {
		sl := s.slots[i]
		if sl == 0 {
			return -1
		}
		if int(sl&offsetMask) == off {
			return i
		}
		if i++; i == n {
			i = 0
		}
	}
}

// deleteSlot empties slot i, moving later slots of its run back so that
// every entry stays reachable from its home without tombstones.
func (s *shard) deleteSlot(i int) {
	s.entries--
	n := len(s.slots)
	for j := i; ; {
		s.slots[i] = 0
		for {
			if j++; j == n {
				j = 0
			}
			sl := s.slots[j]
			if sl == 0 {
				return
			}
			h := home(slotFingerprint(sl), n)
			// The entry at j may fill i unless its home lies in (i, j].
			if (i <= j && (h <= i || h > j)) || (i > j && h <= i && h > j) {
				s.slots[i] = sl
				i = j
				break
			}
		}
	}
}

// grow rebuilds the index with n slots.
func (s *shard) grow(n int) {
	old := s.slots
	s.slots = make([]uint64, n)
	for _, sl := range old {
		if sl == 0 {
			continue
		}
		i := home(slotFingerprint(sl), n)
		for s.slots[i] != 0 {
			if i++; i == n {
				i = 0
			}
		}
		s.slots[i] = sl
	}
	s.held += 8 * (n - len(old))
}

// keyAt reports whether the record at off has key, and where its value
// is.
func (s *shard) keyAt(off int, key string) (valOff, vlen int, ok bool) {
	klen, vlen, keyOff := s.header(off)
	if klen != len(key) {
		return 0, 0, false
	}
	for k := key; len(k) > 0; {
		p := s.at(keyOff)
		c := min(len(p), len(k))
		if string(p[:c]) != k[:c] {
			return 0, 0, false
		}
		keyOff, k = s.advance(keyOff, c), k[c:]
	}
	return keyOff, vlen, true
}

// header reads the lengths of the record at off and returns them with the
// offset of its key.
func (s *shard) header(off int) (klen, vlen, keyOff int) {
	if p := s.at(off); len(p) >= 2 && p[0] < 0x80 && p[1] < 0x80 {
		return int(p[0]), int(p[1]), s.advance(off, 2) // the usual small entry
	}
	klen, off = s.uvarint(off)
	vlen, off = s.uvarint(off)
	return klen, vlen, off
}

func (s *shard) uvarint(off int) (int, int) {
	var x uint64
	for shift := 0; ; shift += 7 {
		b := s.at(off)[0]
		off = s.advance(off, 1)
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return int(x), off
		}
	}
}

func uvarintLen(x int) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// advance returns the offset n bytes after off in the ring.
func (s *shard) advance(off, n int) int {
	if off += n; off >= s.size {
		off -= s.size
	}
	return off
}

// at returns the ring's bytes from off to the end of off's segment.
func (s *shard) at(off int) []byte {
	return s.segs[off>>s.segShift][off&(1<<s.segShift-1):]
}

// read copies len(dst) bytes from the ring at off.
func (s *shard) read(off int, dst []byte) {
	for len(dst) > 0 {
		c := copy(dst, s.at(off))
		off, dst = s.advance(off, c), dst[c:]
	}
}

// write copies b into the ring at off, allocating the segments it
// reaches for the first time, and returns the offset after it.
func write[T string | []byte](s *shard, off int, b T) int {
	for len(b) > 0 {
		i := off >> s.segShift
		if s.segs[i] == nil {
			n := min(1<<s.segShift, s.size-i<<s.segShift)
			s.segs[i] = make([]byte, n)
			s.held += n
		}
		c := copy(s.segs[i][off&(1<<s.segShift-1):], b)
		off, b = s.advance(off, c), b[c:]
	}
	return off
}

func (s *shard) write(off int, b []byte) int { return write(s, off, b) }

// move copies the size bytes at src to dst, where dst is at or after the
// end of the records from src on (the head of the ring after src has been
// freed): copying forward in small pieces never overwrites bytes still to
// be read.
func (s *shard) move(src, dst, size int) {
	if src == dst {
		return
	}
	var buf [256]byte
	for size > 0 {
		c := min(size, len(buf))
		s.read(src, buf[:c])
		dst = s.write(dst, buf[:c])
		src, size = s.advance(src, c), size-c
	}
}
