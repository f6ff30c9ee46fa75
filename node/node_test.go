package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLogger shows a node's logs, memberlist's included, with -v.
func testLogger(name string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	return quiet()
}

// startNode starts an in-process node with FastConfig, joined to seeds.
func startNode(t *testing.T, name string, seeds []string, edit func(*Config)) *Node {
	t.Helper()
	cfg := FastConfig()
	cfg.Name = name
	cfg.Join = seeds
	cfg.Logger = testLogger(name)
	if edit != nil {
		edit(&cfg)
	}
	n, err := New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Register("square", func(x int) int { return x * x }, rpc.Cacheable()); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func states(n *Node) map[string]string {
	out := make(map[string]string)
	for _, m := range n.Members() {
		out[m.Name] = m.State
	}
	return out
}

func waitState(t *testing.T, n *Node, name, state string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, n.Name()+" to see "+name+" "+state, func() bool { return states(n)[name] == state })
	t.Logf("%s sees %v", n.Name(), states(n))
}

func TestExecutorSlotsAndQueue(t *testing.T) {
	e := NewExecutor(2, 1)
	ctx := context.Background()
	r1, err1 := e.Acquire(ctx)
	r2, err2 := e.Acquire(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	got := make(chan error, 1)
	go func() {
		release, err := e.Acquire(ctx)
		if err == nil {
			release()
		}
		got <- err
	}()
	testutil.WaitFor(t, 5*time.Second, "a call to queue", func() bool { _, q := e.Load(); return q == 1 })
	if _, err := e.Acquire(ctx); !errors.Is(err, rpc.ErrOverloaded) {
		t.Fatalf("beyond slots and queue: %v", err)
	}
	if running, queued := e.Load(); running != 2 || queued != 1 {
		t.Fatalf("load %d running, %d queued", running, queued)
	}
	r1()
	if err := <-got; err != nil {
		t.Fatalf("queued call: %v", err)
	}
	r2()
	if running, queued := e.Load(); running != 0 || queued != 0 {
		t.Fatalf("after release: %d running, %d queued", running, queued)
	}
	// A queued call gives up when its context ends.
	r1, _ = e.Acquire(ctx)
	r2, _ = e.Acquire(ctx)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := e.Acquire(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("canceled wait: %v", err)
	}
	r1()
	r2()
}

func TestMetadataAndDigest(t *testing.T) {
	fns := []rpc.FunctionInfo{{Name: "a", Signature: "a() int"}, {Name: "b", Signature: "b(int)", Cacheable: true}}
	swapped := []rpc.FunctionInfo{fns[1], fns[0]}
	if functionDigest(fns) != functionDigest(swapped) {
		t.Fatal("digest depends on order")
	}
	changed := []rpc.FunctionInfo{fns[0], {Name: "b", Signature: "b(int)", Cacheable: true, Version: "2"}}
	if functionDigest(fns) == functionDigest(changed) {
		t.Fatal("digest ignores a version change")
	}
	m := meta{RPC: "127.0.0.1:7373", HTTP: "127.0.0.1:8787", Slots: 8, Running: 3, Queued: 1,
		Cache: "127.0.0.1:11211", Digest: functionDigest(fns), Version: "v1.2.3"}
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeMeta(b)
	if err != nil || back != m {
		t.Fatalf("metadata round trip: %+v, %v", back, err)
	}
	t.Logf("metadata is %d bytes of memberlist's %d", len(b), metaLimit)
	m.Cache = strings.Repeat("x", 600)
	if _, err := m.encode(); err == nil {
		t.Fatal("metadata over 512 bytes accepted")
	}
}

func TestGridInProcess(t *testing.T) {
	testutil.CheckGoroutines(t)
	a := startNode(t, "a", nil, nil)
	b := startNode(t, "b", []string{a.GossipAddr()}, func(c *Config) { c.Slots = 3 })
	c := startNode(t, "c", []string{a.GossipAddr()}, nil)
	if err := c.Register("cube", func(x int) int { return x * x * x }); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{a, b, c} {
		for _, name := range []string{"a", "b", "c"} {
			waitState(t, n, name, grid.StateAlive)
		}
	}

	// shoal.members over RPC, with what each member gossips.
	cl, err := rpc.Dial(context.Background(), a.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var members []grid.Member
	if err := cl.Call(context.Background(), "shoal.members", &members); err != nil {
		t.Fatal(err)
	}
	if len(members) != 3 || members[1].Name != "b" || members[1].Slots != 3 || members[1].RPC != b.RPCAddr() || members[1].Version != "test" {
		t.Fatalf("shoal.members = %+v", members)
	}

	// cube was registered after c started: its digest change spreads and
	// shoal.functions on a finds it on c alone.
	testutil.WaitFor(t, 10*time.Second, "cube to be offered by c", func() bool {
		var fns []grid.Function
		if err := cl.Call(context.Background(), "shoal.functions", &fns); err != nil {
			t.Fatal(err)
		}
		offered := make(map[string][]string)
		for _, f := range fns {
			offered[f.Name] = f.Nodes
		}
		return strings.Join(offered["cube"], ",") == "c" && strings.Join(offered["square"], ",") == "a,b,c"
	})

	// Health endpoints.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/members": 200, "/metrics": 200} {
		resp, err := http.Get("http://" + a.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}

	// A node that leaves shows as left; one that dies shows as dead.
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, "b", grid.StateLeft)
	c.Close()
	waitState(t, a, "c", grid.StateDead)
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLoadIsGossiped(t *testing.T) {
	a := startNode(t, "a", nil, nil)
	b := startNode(t, "b", []string{a.GossipAddr()}, func(c *Config) { c.Slots = 1 })
	release := make(chan struct{})
	if err := b.Register("block", func(ctx context.Context) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cl, err := rpc.Dial(context.Background(), b.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 3; i++ {
		cl.Go(context.Background(), "block", nil, nil)
	}
	testutil.WaitFor(t, 10*time.Second, "a to see b's load", func() bool {
		for _, m := range a.Members() {
			if m.Name == "b" && m.Running == 1 && m.Queued == 2 {
				return true
			}
		}
		return false
	})
	close(release)
}

func TestConfigErrors(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"bad key":     func(c *Config) { c.GossipKey = []byte("short") },
		"bad address": func(c *Config) { c.RPCAddr = "nowhere" },
		"bad timing":  func(c *Config) { c.Timing.ProbeInterval = -1 },
	} {
		cfg := FastConfig()
		edit(&cfg)
		if _, err := New(cfg, "test"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJoinFailsClearlyWhenNoSeedAnswers(t *testing.T) {
	testutil.CheckGoroutines(t)
	cfg := FastConfig()
	cfg.Join = []string{"127.0.0.1:1"}
	cfg.JoinTimeout = 300 * time.Millisecond
	cfg.Logger = quiet()
	n, err := New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "could not join through 127.0.0.1:1") {
		t.Fatalf("Start with a dead seed: %v", err)
	}
}

func TestWrongGossipKeyCannotJoin(t *testing.T) {
	key := []byte("0123456789abcdef")
	a := startNode(t, "a", nil, func(c *Config) { c.GossipKey = key })
	cfg := FastConfig()
	cfg.Name = "intruder"
	cfg.Join = []string{a.GossipAddr()}
	cfg.JoinTimeout = 500 * time.Millisecond
	cfg.GossipKey = []byte("fedcba9876543210")
	cfg.Logger = quiet()
	n, err := New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil {
		t.Fatal("a node with the wrong key joined")
	}
	t.Logf("join error: %v", err)
	if _, seen := states(a)["intruder"]; seen {
		t.Fatal("the grid lists the intruder")
	}
}

func TestUnansweredProbesShowSuspect(t *testing.T) {
	slow := func(c *Config) { c.Timing.SuspicionMult = 40 } // at least 4s of suspicion
	a := startNode(t, "a", nil, slow)
	b := startNode(t, "b", []string{a.GossipAddr()}, slow)
	waitState(t, a, "b", grid.StateAlive)
	b.Close() // no leave: to a, b just stops answering
	waitState(t, a, "b", grid.StateSuspect)
}

func TestCacheableResultsAreStored(t *testing.T) {
	testutil.CheckGoroutines(t)
	n := startNode(t, "a", nil, nil)
	if err := n.Register("greet", func(name string) string { return "hello " + name }); err != nil {
		t.Fatal(err)
	}
	cl, err := rpc.Dial(context.Background(), n.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, x := range []int{7, 8} {
		if err := cl.Call(context.Background(), "square", nil, x); err != nil {
			t.Fatal(err)
		}
	}
	cl.Call(context.Background(), "greet", nil, "bob") // not cacheable
	k7, _ := cache.Key("square", "", 7)
	k8, _ := cache.Key("square", "", 8)
	kg, _ := cache.Key("greet", "", "bob")
	testutil.WaitFor(t, 5*time.Second, "results in the cache", func() bool {
		return len(n.cache.GetMulti(context.Background(), []string{k7, k8})) == 2
	})
	var v int
	if err := msgpack.Unmarshal(n.cache.GetMulti(context.Background(), []string{k7})[k7], &v); err != nil || v != 49 {
		t.Fatalf("cached square(7) = %d, %v", v, err)
	}
	if len(n.cache.GetMulti(context.Background(), []string{kg})) != 0 {
		t.Fatal("a function not marked cacheable was cached")
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestCacheRingConfigErrors(t *testing.T) {
	cfg := FastConfig()
	cfg.CacheRing = "gossip"
	cfg.Memcached = []string{"127.0.0.1:11211"}
	if _, err := New(cfg, "test"); err == nil {
		t.Error("gossip ring with static servers accepted")
	}
	cfg = FastConfig()
	cfg.CacheRing = "sometimes"
	if _, err := New(cfg, "test"); err == nil {
		t.Error("unknown ring accepted")
	}
}

func TestMapChunk(t *testing.T) {
	n := startNode(t, "a", nil, nil)
	if err := n.Register("sleep", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return ms, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	cl, err := rpc.Dial(context.Background(), n.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	params := func(args ...any) msgpack.RawMessage {
		b, err := msgpack.Marshal(args)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	items := func(params ...msgpack.RawMessage) grid.Values {
		var v grid.Values
		for _, p := range params {
			v.Append(p)
		}
		return v
	}
	// outcome reads item k of a reply: its value, or its error.
	outcome := func(reply grid.MapReply, k int) (value []byte, err string) {
		for _, e := range reply.Errors {
			if e.Index == k {
				return nil, e.Error
			}
		}
		values, splitErr := reply.Values.Split(nil)
		if splitErr != nil || len(values) <= k {
			t.Fatalf("reply %+v: %v", reply, splitErr)
		}
		return values[k], ""
	}
	req := grid.MapRequest{Function: "square", Items: items(params(3), params("x"), params(5))}
	var out grid.MapReply
	if err := cl.Call(context.Background(), grid.MethodMap, &out, req); err != nil {
		t.Fatal(err)
	}
	var v int
	if value, e := outcome(out, 0); out.Values.Count != 3 || e != "" || msgpack.Unmarshal(value, &v) != nil || v != 9 {
		t.Fatalf("item 0: %+v", out)
	}
	if _, e1 := outcome(out, 1); !strings.HasPrefix(e1, "BadArguments: ") {
		t.Fatalf("item 1: %+v", out)
	}
	if _, e2 := outcome(out, 2); e2 != "" {
		t.Fatalf("item 2: %+v", out)
	}

	// Per-item timeouts end the function's context on the node.
	req = grid.MapRequest{Function: "sleep", Items: items(params(1), params(60_000)), TimeoutMs: 50}
	if err := cl.Call(context.Background(), grid.MethodMap, &out, req); err != nil {
		t.Fatal(err)
	}
	if _, e0 := outcome(out, 0); e0 != "" {
		t.Fatalf("timeouts: %+v", out)
	}
	if _, e1 := outcome(out, 1); !strings.HasPrefix(e1, "Timeout: ") {
		t.Fatalf("timeouts: %+v", out)
	}

	err = cl.Call(context.Background(), grid.MethodMap, &out, grid.MapRequest{Function: "nope"})
	if !errors.Is(err, rpc.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	// Canceling the call stops the chunk.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req = grid.MapRequest{Function: "sleep", Items: items(params(60_000), params(60_000))}
	if err := cl.Call(ctx, grid.MethodMap, &out, req); !errors.Is(err, rpc.ErrTimeout) {
		t.Fatalf("canceled chunk: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "the chunk to stop on the node", func() bool {
		running, queued := n.Executor().Load()
		return running == 0 && queued == 0
	})
}

// A client dialling right after Start must find the node and its functions
// (found by a flaky client test: the node listed itself only once its event
// loop had seen its own join).
func TestNodeListsItselfAtOnce(t *testing.T) {
	for i := 0; i < 5; i++ {
		n := startNode(t, fmt.Sprintf("self%d", i), nil, nil)
		if m := n.Members(); len(m) != 1 || m[0].Name != n.Name() || m[0].RPC != n.RPCAddr() {
			t.Fatalf("members right after Start: %+v", m)
		}
		fns := n.Functions(context.Background())
		if len(fns) != 1 || fns[0].Name != "square" {
			t.Fatalf("functions right after Start: %+v", fns)
		}
		n.Close()
	}
}

// A function list fetched for a digest a member has since left behind is
// filed under the list's own digest, so members still sharing the old one
// do not seem to offer the new function (found by a flaky grid test: a node
// registering a function while being described made its peers "offer" it).
func TestDescribeIsFiledUnderItsOwnDigest(t *testing.T) {
	a := startNode(t, "a", nil, nil)
	b := startNode(t, "b", []string{a.GossipAddr()}, nil)
	old := functionDigest(b.srv.Functions())
	testutil.WaitFor(t, 10*time.Second, "a to have fetched b's list", func() bool {
		return a.catalogue.knows(old)
	})
	if err := b.Register("cube", func(x int) int { return x * x * x }); err != nil {
		t.Fatal(err)
	}
	// As if a had not fetched the old list yet when b changed.
	a.catalogue.mu.Lock()
	delete(a.catalogue.byDigest, old)
	a.catalogue.mu.Unlock()
	fns, err := a.functionsOf(context.Background(), grid.Member{Name: "b", RPC: b.RPCAddr(), Digest: old})
	if err != nil || len(fns) != 2 {
		t.Fatalf("fetched %v, %v", fns, err)
	}
	oldList, _ := a.catalogue.lookup(old)
	for _, f := range oldList {
		if f.Name == "cube" {
			t.Fatal("the new function was filed under the old digest")
		}
	}
	if newList, _ := a.catalogue.lookup(functionDigest(fns)); len(newList) != 2 {
		t.Fatal("the new list was not filed under its own digest")
	}
}

// TestEventQueueKeepsEveryEvent: memberlist's callbacks push while the
// event loop is busy; every event must come out, in order (a full buffer
// used to drop them, promising a re-read that never came).
func TestEventQueueKeepsEveryEvent(t *testing.T) {
	q := newEventQueue()
	const n = 10_000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			q.push(memberEvent{node: memberlist.Node{Name: strconv.Itoa(i)}})
		}
	}()
	var got []memberEvent
	for len(got) < n {
		select {
		case <-q.wake:
			got = append(got, q.take()...)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d events came out", len(got), n)
		}
	}
	<-done
	for i, ev := range got {
		if ev.node.Name != strconv.Itoa(i) {
			t.Fatalf("event %d is %s: out of order", i, ev.node.Name)
		}
	}
	if rest := q.take(); len(rest) != 0 {
		t.Fatalf("%d events more than were pushed", len(rest))
	}
}
