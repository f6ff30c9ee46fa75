package node

import (
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// funcStats counts the calls of each registered function this node
// answered, with a latency histogram each, for shoal.stats. Prometheus
// has the calls by method too, but a map chunk is one call there, and its
// buckets are too coarse for percentiles.
type funcStats struct {
	mu     sync.RWMutex
	byName map[string]*funcCounter
}

// funcCounter is one function's counters. Its fields are atomics so that
// recording takes no lock.
type funcCounter struct {
	calls, errors atomic.Uint64
	latency       [grid.HistogramBuckets]atomic.Uint64
}

// counter returns the counters of the function named name, making them
// on its first call. Only registered functions get one, so that callers
// cannot grow the map with names.
func (s *funcStats) counter(name string) *funcCounter {
	s.mu.RLock()
	c := s.byName[name]
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName == nil {
		s.byName = make(map[string]*funcCounter)
	}
	if c = s.byName[name]; c == nil {
		c = new(funcCounter)
		s.byName[name] = c
	}
	return c
}

// observe counts one call of a function.
func (s *funcStats) observe(name string, failed bool, elapsed time.Duration) {
	c := s.counter(name)
	c.calls.Add(1)
	if failed {
		c.errors.Add(1)
	}
	c.latency[grid.BucketIndex(elapsed)].Add(1)
}

// chunkTimes gathers the item times of one map chunk, to be added to the
// function's counters at once.
type chunkTimes struct {
	calls, errors uint64
	latency       [grid.HistogramBuckets]uint32
}

func (t *chunkTimes) observe(failed bool, elapsed time.Duration) {
	t.calls++
	if failed {
		t.errors++
	}
	t.latency[grid.BucketIndex(elapsed)]++
}

// add adds a chunk's item times to the function's counters.
func (s *funcStats) add(name string, t *chunkTimes) {
	if t.calls == 0 {
		return
	}
	c := s.counter(name)
	c.calls.Add(t.calls)
	c.errors.Add(t.errors)
	for i, v := range t.latency {
		if v > 0 {
			c.latency[i].Add(uint64(v))
		}
	}
}

// snapshot returns the counters of every function, by name.
func (s *funcStats) snapshot() []grid.FunctionStats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]grid.FunctionStats, 0, len(s.byName))
	for name, c := range s.byName {
		fs := grid.FunctionStats{Name: name, Calls: c.calls.Load(), Errors: c.errors.Load()}
		for i := range c.latency {
			if v := c.latency[i].Load(); v > 0 {
				fs.Latency.Add(i, v)
			}
		}
		out = append(out, fs)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// observeCall counts an answered call in the Prometheus metrics and, for
// a registered function, in the function's own counters.
func (n *Node) observeCall(method string, outcome rpc.Kind, elapsed time.Duration) {
	n.metrics.observeCall(method, outcome, elapsed)
	if outcome != rpc.KindUnknownFunction && !strings.HasPrefix(method, rpc.ReservedPrefix) {
		n.funcs.observe(method, outcome != "", elapsed)
	}
}

// stats serves shoal.stats.
func (n *Node) stats() grid.NodeStats {
	running, queued := n.exec.Load()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := grid.NodeStats{
		Name: n.cfg.Name, Version: n.version,
		StartedMs: n.startedAt.UnixMilli(), NowMs: time.Now().UnixMilli(),
		Slots: n.exec.Slots(), Running: running, Queued: queued,
		Connections: n.srv.Stats().Connections,
		Goroutines:  runtime.NumGoroutine(),
		HeapBytes:   int64(ms.HeapAlloc),
		Functions:   n.funcs.snapshot(),
		Cache:       n.cacheInfo(),
	}
	if n.ml != nil {
		st.HealthScore = n.ml.GetHealthScore()
	}
	return st
}
