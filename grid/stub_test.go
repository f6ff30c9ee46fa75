package grid_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// serve runs an rpc.Server answering the grid's methods as a node would,
// on a free port of 127.0.0.1.
func serve(t *testing.T, mapChunk any) string {
	t.Helper()
	srv := rpc.NewServer(rpc.ServerConfig{})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(srv.Register("square", func(x int) int { return x * x }, rpc.Cacheable()))
	must(srv.RegisterSystem(grid.MethodMembers, func() []grid.Member {
		return []grid.Member{member("b", grid.StateAlive, 2, 1, 0), member("a", grid.StateSuspect, 4, 0, 0)}
	}))
	must(srv.RegisterSystem(grid.MethodFunctions, func() []grid.Function { return []grid.Function{function("square", "a", "b")} }))
	must(srv.RegisterSystem(grid.MethodCache, func() grid.CacheInfo {
		return grid.CacheInfo{Kind: grid.CacheMemcached, Servers: []string{"127.0.0.1:11211"}}
	}))
	var mu sync.Mutex
	held := map[string][]byte{}
	must(srv.RegisterSystem(grid.MethodCacheGet, func(keys []string) [][]byte {
		mu.Lock()
		defer mu.Unlock()
		out := make([][]byte, len(keys))
		for i, k := range keys {
			out[i] = held[k]
		}
		return out
	}))
	must(srv.RegisterSystem(grid.MethodCacheSet, func(keys []string, values [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		for i, k := range keys {
			held[k] = values[i]
		}
	}))
	must(srv.RegisterSystem(grid.MethodMap, mapChunk))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestStubOverRealRPC(t *testing.T) {
	addr := serve(t, func(req grid.MapRequest) (*grid.MapReply, error) {
		raws, err := req.Items.Split(nil)
		if err != nil {
			return nil, err
		}
		reply := &grid.MapReply{}
		for i, raw := range raws {
			var args []int
			if err := msgpack.Unmarshal(raw, &args); err != nil || len(args) != 1 {
				reply.Errors = append(reply.Errors, grid.ItemError{Index: i, Error: "BadArguments: want one int"})
				reply.Values.Append([]byte{0xc0})
				continue
			}
			v, _ := msgpack.Marshal(args[0] * 10)
			reply.Values.Append(v)
		}
		return reply, nil
	})
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	stub := grid.Stub{Caller: pool}
	ctx := context.Background()

	view, err := stub.View(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(view.Members()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("members %v", got)
	}
	if m, _ := view.Member("b"); m.Running != 1 || m.Slots != 2 || m.RPC != "b:7373" {
		t.Fatalf("member b decoded as %+v", m)
	}
	if best, ok := view.LeastLoaded("square"); !ok || best.Name != "b" {
		t.Fatalf("least loaded: %v %v (a is suspect)", best.Name, ok)
	}
	fns, err := stub.Describe(ctx, addr)
	if err != nil || len(fns) != 1 || fns[0].Name != "square" || !fns[0].Cacheable {
		t.Fatalf("describe: %+v %v", fns, err)
	}
	info, err := stub.Cache(ctx, addr)
	if err != nil || info.Kind != grid.CacheMemcached || !slices.Equal(info.Servers, []string{"127.0.0.1:11211"}) {
		t.Fatalf("cache: %+v %v", info, err)
	}
	tr := grid.CacheTransport{Stub: stub, Addr: func(name string) (string, bool) { return addr, name == "b" }}
	if err := tr.SetOn(ctx, "b", []cache.Item{{Key: "k1", Value: []byte{1}}, {Key: "k2", Value: []byte{}}}); err != nil {
		t.Fatal(err)
	}
	got, err := tr.GetFrom(ctx, "b", []string{"k0", "k1", "k2"})
	if err != nil || len(got) != 3 || got[0] != nil || !bytes.Equal(got[1], []byte{1}) || got[2] == nil || len(got[2]) != 0 {
		t.Fatalf("cache get: %q %v", got, err)
	}
	if _, err := tr.GetFrom(ctx, "nobody", []string{"k1"}); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("a peer not in the view: %v", err)
	}
	one, _ := msgpack.Marshal([]int{4})
	bad, _ := msgpack.Marshal([]string{"x"})
	reply, err := stub.Map(ctx, addr, grid.MapRequest{Function: "f", Items: valuesOf(one, bad)})
	if err != nil || reply.Values.Count != 2 || len(reply.Errors) != 1 || reply.Errors[0].Index != 1 || reply.Errors[0].Error == "" {
		t.Fatalf("map: %+v %v", reply, err)
	}
	values, err := reply.Values.Split(nil)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := msgpack.Unmarshal(values[0], &v); err != nil || v != 40 {
		t.Fatalf("map result %d %v", v, err)
	}
}

func TestStubMapRefusesAShortAnswer(t *testing.T) {
	addr := serve(t, func(req grid.MapRequest) *grid.MapReply { return &grid.MapReply{Values: valuesOf([]byte{0xc0})} })
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	one, _ := msgpack.Marshal([]int{1})
	_, err := grid.Stub{Caller: pool}.Map(context.Background(), addr, grid.MapRequest{Items: valuesOf(one, one)})
	if err == nil {
		t.Fatal("one result for two items was accepted")
	}
	_, err = grid.Stub{Caller: pool}.Members(context.Background(), "127.0.0.1:1")
	var dial *rpc.DialError
	if !errors.As(err, &dial) || !rpc.Retryable(err) {
		t.Fatalf("a closed port: %v", err)
	}
}
