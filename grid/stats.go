package grid

import (
	"context"
	"math"
	"math/bits"
	"time"
)

// MethodStats returns a node's own counters, for dashboards: its load,
// its gossip health, its functions' calls and latencies, and its cache.
const MethodStats = "shoal.stats"

// NodeStats is what shoal.stats returns: one node's counters as it keeps
// them. Counters only grow; a reader takes rates from two readings.
type NodeStats struct {
	Name      string `msgpack:"name" json:"name"`
	Version   string `msgpack:"version" json:"version"`
	StartedMs int64  `msgpack:"started_ms" json:"started_ms"` // Unix milliseconds
	NowMs     int64  `msgpack:"now_ms" json:"now_ms"`         // when the counters were read
	// HealthScore is memberlist's awareness score: 0 is healthy, higher
	// means the node has been slow to answer probes (it is overloaded or
	// its network is lossy).
	HealthScore int   `msgpack:"health_score" json:"health_score"`
	Slots       int   `msgpack:"slots" json:"slots"`
	Running     int   `msgpack:"running" json:"running"`
	Queued      int   `msgpack:"queued" json:"queued"`
	Connections int   `msgpack:"connections" json:"connections"` // RPC connections open
	Goroutines  int   `msgpack:"goroutines" json:"goroutines"`
	HeapBytes   int64 `msgpack:"heap_bytes" json:"heap_bytes"`
	// Functions counts the calls of each registered function the node
	// answered, items of map chunks included.
	Functions []FunctionStats `msgpack:"functions" json:"functions"`
	Cache     CacheInfo       `msgpack:"cache" json:"cache"`
}

// FunctionStats counts one function's calls on one node since it started.
type FunctionStats struct {
	Name   string `msgpack:"name" json:"name"`
	Calls  uint64 `msgpack:"calls" json:"calls"`   // answered, errors included
	Errors uint64 `msgpack:"errors" json:"errors"` // answered with an error
	// Latency holds the calls' times, from arrival to answer; a map
	// chunk's items are timed one by one.
	Latency Histogram `msgpack:"latency" json:"latency"`
}

// Stats returns the counters of the node at addr (shoal.stats).
func (s Stub) Stats(ctx context.Context, addr string) (NodeStats, error) {
	var st NodeStats
	err := s.Caller.Call(ctx, addr, MethodStats, &st)
	return st, err
}

// histogramSubBuckets splits each power of two into this many buckets,
// so that a quantile read from a Histogram is within about 12% of the
// true one.
const histogramSubBuckets = 4

// HistogramBuckets is the number of buckets of a Histogram: durations of
// 1ns up to about 2^40ns (18 minutes); longer ones fall in the last.
const HistogramBuckets = 41 * histogramSubBuckets

// Histogram counts durations in buckets that grow by powers of two, each
// split in four: Counts[i] is the number of durations d with
// BucketIndex(d) == i. It is a cumulative counter; Sub gives the counts
// between two readings. Trailing empty buckets are left off the wire.
type Histogram struct {
	Counts []uint64 `msgpack:"counts" json:"counts"`
}

// BucketIndex returns the bucket of a Histogram a duration falls in.
func BucketIndex(d time.Duration) int {
	ns := uint64(max(d, 1))
	exp := bits.Len64(ns) - 1 // 2^exp <= ns < 2^(exp+1)
	sub := 0
	if exp >= 2 {
		sub = int(ns>>(exp-2)) & (histogramSubBuckets - 1)
	} else {
		sub = int(ns<<(2-exp)) & (histogramSubBuckets - 1)
	}
	return min(exp*histogramSubBuckets+sub, HistogramBuckets-1)
}

// bucketBounds returns the durations bucket i holds, from lo up to hi.
func bucketBounds(i int) (lo, hi float64) {
	exp, sub := i/histogramSubBuckets, i%histogramSubBuckets
	base := math.Ldexp(1, exp)
	step := base / histogramSubBuckets
	return base + float64(sub)*step, base + float64(sub+1)*step
}

// Add counts n durations in bucket i.
func (h *Histogram) Add(i int, n uint64) {
	if len(h.Counts) <= i {
		h.Counts = append(h.Counts, make([]uint64, i+1-len(h.Counts))...)
	}
	h.Counts[i] += n
}

// Total is the number of durations counted.
func (h Histogram) Total() uint64 {
	var t uint64
	for _, c := range h.Counts {
		t += c
	}
	return t
}

// Sub returns the counts of h that earlier, an earlier reading of the
// same counter, had not: the durations counted between the two. A
// counter that went backwards (its node restarted) gives h whole.
func (h Histogram) Sub(earlier Histogram) Histogram {
	out := Histogram{Counts: make([]uint64, len(h.Counts))}
	for i, c := range h.Counts {
		var e uint64
		if i < len(earlier.Counts) {
			e = earlier.Counts[i]
		}
		if e > c {
			return Histogram{Counts: append([]uint64(nil), h.Counts...)}
		}
		out.Counts[i] = c - e
	}
	return out
}

// Merge adds other's counts to h.
func (h *Histogram) Merge(other Histogram) {
	for i, c := range other.Counts {
		if c > 0 {
			h.Add(i, c)
		}
	}
}

// Quantile returns the duration below which the fraction q of the
// counted durations lie, interpolated within its bucket; 0 when nothing
// was counted.
func (h Histogram) Quantile(q float64) time.Duration {
	total := h.Total()
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := bucketBounds(i)
			return time.Duration(lo + (hi-lo)*(rank-seen)/float64(c))
		}
		seen += float64(c)
	}
	_, hi := bucketBounds(len(h.Counts) - 1)
	return time.Duration(hi)
}
