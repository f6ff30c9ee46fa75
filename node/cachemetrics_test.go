package node

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/rpc"
)

// metricValue returns the value of an unlabelled metric in /metrics text,
// or -1 when it is absent.
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// TestCacheMetricsShowWhatTheCacheHolds fills a node's 1 MiB in-memory
// cache past its size and reads in /metrics what it holds: its bytes
// within the size, and every result stored either held or evicted.
func TestCacheMetricsShowWhatTheCacheHolds(t *testing.T) {
	const size = 1 << 20
	n := startNode(t, "a", nil, func(c *Config) { c.CacheSize = size })
	cl, err := rpc.Dial(context.Background(), n.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const calls = 15_000 // about 1.2 MiB of keys and values
	for x := range calls {
		if err := cl.Call(context.Background(), "square", nil, x); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.FlushCache(ctx); err != nil {
		t.Fatal(err)
	}
	text := scrapeText(t, n)
	bytes := metricValue(t, text, "shoal_cache_bytes")
	entries := metricValue(t, text, "shoal_cache_entries")
	evicted := metricValue(t, text, "shoal_cache_evicted_total")
	stored := metricValue(t, text, "shoal_cache_stored_total")
	dropped := metricValue(t, text, "shoal_cache_writes_dropped_total")
	t.Logf("bytes %v, entries %v, evicted %v, stored %v, dropped %v", bytes, entries, evicted, stored, dropped)
	switch {
	case bytes <= 0 || bytes > size:
		t.Fatalf("shoal_cache_bytes %v; want within (0, %d]", bytes, size)
	case evicted <= 0:
		t.Fatalf("shoal_cache_evicted_total %v after more results than the cache holds", evicted)
	case stored != calls-dropped || entries+evicted != stored:
		t.Fatalf("%v stored of %d results (%v dropped): %v held and %v evicted", stored, calls, dropped, entries, evicted)
	}
}
