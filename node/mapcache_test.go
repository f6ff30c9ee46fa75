package node

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// TestMapChunkCachesOnlyWhenAsked sends the same chunk of a cacheable
// function twice over real TCP, to a node with its own in-memory cache and
// to one given a cache: without the chunk's Cache flag the caches store
// nothing; with it, every result is stored under the key a client computes
// from the bytes it sent, with the value the reply carried.
func TestMapChunkCachesOnlyWhenAsked(t *testing.T) {
	given := cache.NewMemory(8<<20, 0)
	for name, edit := range map[string]func(*Config){
		"own memory": nil,
		"given":      func(c *Config) { c.Cache = given },
	} {
		t.Run(name, func(t *testing.T) {
			n := startNode(t, "m-"+name, nil, edit)
			cl, err := rpc.Dial(context.Background(), n.RPCAddr(), rpc.ClientConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var items grid.Values
			var params [][]byte
			for x := range 500 {
				p, _ := msgpack.Marshal([]any{x * 1000})
				items.Append(p)
				params = append(params, p)
			}
			ctx := context.Background()
			var reply grid.MapReply
			if err := cl.Call(ctx, grid.MethodMap, &reply, grid.MapRequest{Function: "square", Items: items}); err != nil {
				t.Fatal(err)
			}
			if err := n.FlushCache(ctx); err != nil {
				t.Fatal(err)
			}
			if st := n.CacheStats(); st.Stored != 0 {
				t.Fatalf("a chunk without the cache flag stored %d results", st.Stored)
			}
			if err := cl.Call(ctx, grid.MethodMap, &reply, grid.MapRequest{Function: "square", Items: items, Cache: true}); err != nil {
				t.Fatal(err)
			}
			if err := n.FlushCache(ctx); err != nil {
				t.Fatal(err)
			}
			if st := n.CacheStats(); st.Stored != 500 || n.cacheDropped.Load() != 0 {
				t.Fatalf("a chunk of 500 with the cache flag: stored %d, dropped %d", st.Stored, n.cacheDropped.Load())
			}
			values, err := reply.Values.Split(nil)
			if err != nil || len(values) != 500 || len(reply.Errors) != 0 {
				t.Fatalf("reply: %d values, errors %v, %v", len(values), reply.Errors, err)
			}
			keys := make([]string, len(params))
			for i, p := range params {
				if keys[i], err = cache.KeyFromParams("square", "", p); err != nil {
					t.Fatal(err)
				}
			}
			got := n.cache.GetMulti(ctx, keys)
			for i, k := range keys {
				if want := fmt.Sprint(values[i]); fmt.Sprint(got[k]) != want {
					t.Fatalf("item %d: cached % x, the reply carried % x", i, got[k], values[i])
				}
			}
		})
	}
}
