package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// BenchmarkCacheGetMulti looks up batches of 100 keys, all hits, against
// three local memcached servers placed by ketama, and against the
// in-memory cache for comparison, one caller and 8 callers.
//
//	go test -run '^$' -bench CacheGetMulti -benchtime 2s ./bench
func BenchmarkCacheGetMulti(b *testing.B) {
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, testutil.StartMemcached(b).Addr)
	}
	mc, err := cache.NewMemcached(cache.MemcachedConfig{Servers: addrs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer mc.Close()
	mem := cache.NewMemory(64<<20, 0)

	const batch, distinct = 100, 10_000
	var items []cache.Item
	var keys []string
	for i := 0; i < distinct; i++ {
		k, _ := cache.Key("square", "1", i)
		items = append(items, cache.Item{Key: k, Value: []byte(fmt.Sprint(i * i))})
		keys = append(keys, k)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		cache cache.Cache
	}{{"memcached-x3", mc}, {"memory", mem}} {
		c.cache.SetMulti(ctx, items)
		for _, callers := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/callers=%d", c.name, callers), func(b *testing.B) {
				var next sync.Mutex
				batchNo := 0
				runCallers(b, callers, func() error {
					next.Lock()
					start := (batchNo * batch) % distinct
					batchNo++
					next.Unlock()
					got := c.cache.GetMulti(ctx, keys[start:start+batch])
					if len(got) != batch {
						return fmt.Errorf("%d hits of %d", len(got), batch)
					}
					return nil
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "keys/s")
			})
		}
	}
}
