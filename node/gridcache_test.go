package node

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// TestChunkResultsGoToTheirOwners runs a caching chunk on one of two
// nodes (in this process, beside the tests of node processes in
// cmd/shoal): the node keeps the results it owns and sends the others to
// the other node, so that each key lives once in the grid, where a client
// looking it up by the ring finds it.
func TestChunkResultsGoToTheirOwners(t *testing.T) {
	a := startNode(t, "owner-a", nil, nil)
	b := startNode(t, "owner-b", []string{a.GossipAddr()}, nil)
	for _, n := range []*Node{a, b} {
		testutil.WaitFor(t, 10*time.Second, n.Name()+" to place keys over both", func() bool {
			return len(n.peers.Peers()) == 2
		})
	}
	ctx := context.Background()
	cl, err := rpc.Dial(ctx, a.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var items grid.Values
	var keys []string
	for x := range 2000 {
		p, _ := msgpack.Marshal([]any{x})
		items.Append(p)
		k, err := cache.KeyFromParams("square", "", p)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	var reply grid.MapReply
	if err := cl.Call(ctx, grid.MethodMap, &reply, grid.MapRequest{Function: "square", Items: items, Cache: true}); err != nil {
		t.Fatal(err)
	}
	if err := a.FlushCache(ctx); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.CacheStats(), b.CacheStats()
	if sa.Stored+sb.Stored != 2000 || sa.Stored == 0 || sb.Stored == 0 || sa.Sent != sb.Stored || a.cacheDropped.Load() != 0 {
		t.Fatalf("a stored %d and sent %d, b stored %d, dropped %d", sa.Stored, sa.Sent, sb.Stored, a.cacheDropped.Load())
	}
	values, err := reply.Values.Split(nil)
	if err != nil {
		t.Fatal(err)
	}
	stub := grid.Stub{Caller: rpc.NewPool(rpc.ClientConfig{})}
	for _, n := range []*Node{a, b} {
		got, err := stub.CacheGet(ctx, n.RPCAddr(), keys)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			owner := a.peers.Owner(keys[i])
			if (v != nil) != (owner == n.Name()) {
				t.Fatalf("%s holds item %d: %v, but its owner is %s", n.Name(), i, v != nil, owner)
			}
			if v != nil && !bytes.Equal(v, values[i]) {
				t.Fatalf("item %d: %s holds % x, the reply carried % x", i, n.Name(), v, values[i])
			}
		}
		info, err := stub.Cache(ctx, n.RPCAddr())
		if err != nil || info.Kind != grid.CacheGrid || info.Share < 0.2 || info.Share > 0.8 || info.Entries == 0 || info.Capacity != int64(n.cfg.CacheSize) {
			t.Fatalf("%s: shoal.cache %+v %v", n.Name(), info, err)
		}
	}
}

// TestCacheMethodsRefuseBadInput sends shoal.cache.set and .get what a
// confused or hostile client might: each gets an error saying what was
// wrong, nothing is stored, and the node goes on serving.
func TestCacheMethodsRefuseBadInput(t *testing.T) {
	n := startNode(t, "bad-cache", nil, nil)
	ctx := context.Background()
	cl, err := rpc.Dial(ctx, n.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, tc := range []struct {
		name   string
		method string
		args   []any
		want   string
	}{
		{"lengths differ", grid.MethodCacheSet, []any{[]string{"a", "b"}, [][]byte{{1}}}, "2 keys but 1 values"},
		{"empty key", grid.MethodCacheSet, []any{[]string{""}, [][]byte{{1}}}, "empty key"},
		{"no value", grid.MethodCacheSet, []any{[]string{"k"}, [][]byte{nil}}, "no value"},
		{"keys not strings", grid.MethodCacheSet, []any{[]int{1}, [][]byte{{1}}}, ""},
		{"get of numbers", grid.MethodCacheGet, []any{[]int{1, 2}}, ""},
		{"get without keys", grid.MethodCacheGet, nil, ""},
	} {
		err := cl.Call(ctx, tc.method, nil, tc.args...)
		if !errors.Is(err, rpc.ErrBadArguments) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if st := n.CacheStats(); st.Stored != 0 {
		t.Fatalf("bad requests stored %d values", st.Stored)
	}
	stub := grid.Stub{Caller: rpc.NewPool(rpc.ClientConfig{})}
	if err := stub.CacheSet(ctx, n.RPCAddr(), []string{"k"}, [][]byte{{0x2a}}); err != nil {
		t.Fatal(err)
	}
	got, err := stub.CacheGet(ctx, n.RPCAddr(), []string{"k", "absent"})
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], []byte{0x2a}) || got[1] != nil {
		t.Fatalf("after the bad requests: %v %v", got, err)
	}
}

// TestCacheGetBoundsItsReply asks for more bytes of values than one reply
// may carry: the keys beyond the bound are answered as misses.
func TestCacheGetBoundsItsReply(t *testing.T) {
	// Room for every value in any shard, so that none is evicted.
	n := startNode(t, "big-get", nil, func(c *Config) { c.CacheSize = 512 << 20 })
	ctx := context.Background()
	value := bytes.Repeat([]byte{7}, 800<<10)
	var keys []string
	var values [][]byte
	for i := range 24 { // 19.2 MB, over the 16 MiB bound
		keys = append(keys, "big-"+string(rune('a'+i)))
		values = append(values, value)
	}
	stub := grid.Stub{Caller: rpc.NewPool(rpc.ClientConfig{})}
	if err := stub.CacheSet(ctx, n.RPCAddr(), keys, values); err != nil {
		t.Fatal(err)
	}
	if st := n.CacheStats(); st.Stored != 24 || st.Evicted != 0 {
		t.Fatalf("stored %d of 24 (too large: %d, evicted %d)", st.Stored, st.TooLarge, st.Evicted)
	}
	got, err := stub.CacheGet(ctx, n.RPCAddr(), keys)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, v := range got {
		if v != nil {
			found++
		}
	}
	if found != maxCacheReply/len(value) {
		t.Fatalf("a reply bounded to %d bytes carried %d values of %d", maxCacheReply, found, len(value))
	}
}

// TestNodesWithoutAGridCacheSaySo: a node writing to an embedder's cache
// tells clients so, offers no cache space to the grid, and refuses the
// grid cache's methods with Unavailable.
func TestNodesWithoutAGridCacheSaySo(t *testing.T) {
	n := startNode(t, "embedded", nil, func(c *Config) { c.Cache = cache.NewMemory(1<<20, 0) })
	ctx := context.Background()
	stub := grid.Stub{Caller: rpc.NewPool(rpc.ClientConfig{})}
	info, err := stub.Cache(ctx, n.RPCAddr())
	if err != nil || info.Kind != grid.CacheEmbedded || info.Share != 0 {
		t.Fatalf("shoal.cache: %+v %v", info, err)
	}
	if _, err := stub.CacheGet(ctx, n.RPCAddr(), []string{"k"}); !errors.Is(err, rpc.ErrUnavailable) {
		t.Fatalf("get: %v", err)
	}
	if err := stub.CacheSet(ctx, n.RPCAddr(), []string{"k"}, [][]byte{{1}}); !errors.Is(err, rpc.ErrUnavailable) {
		t.Fatalf("set: %v", err)
	}
	for _, m := range n.Members() {
		if m.CacheBytes != 0 {
			t.Fatalf("%s offers %d bytes to the grid cache", m.Name, m.CacheBytes)
		}
	}
}
