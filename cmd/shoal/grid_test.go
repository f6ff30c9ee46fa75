package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// gridNode is a `shoal node` process and the addresses it logged.
type gridNode = testutil.Node

// startGridNode runs `shoal node` with free ports and fast gossip timing
// unless args say otherwise.
func startGridNode(t *testing.T, name string, join string, args ...string) *gridNode {
	t.Helper()
	return testutil.StartNode(t, name, join, args...)
}

// members asks a node for shoal.members.
func members(t *testing.T, rpcAddr string) map[string]grid.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, rpcAddr, rpc.ClientConfig{})
	if err != nil {
		return nil
	}
	defer c.Close()
	var list []grid.Member
	if err := c.Call(ctx, "shoal.members", &list); err != nil {
		return nil
	}
	out := make(map[string]grid.Member)
	for _, m := range list {
		out[m.Name] = m
	}
	return out
}

// awaitState waits until every observer sees name in state, and returns
// how long that took.
func awaitState(t *testing.T, observers []*gridNode, name, state string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for _, o := range observers {
		testutil.WaitFor(t, timeout, fmt.Sprintf("%s to see %s %s", o.Name, name, state), func() bool {
			return members(t, o.RPC)[name].State == state
		})
	}
	return time.Since(start)
}

func TestFiveNodesJoinThroughOneSeed(t *testing.T) {
	seed := startGridNode(t, "n0", "")
	nodes := []*gridNode{seed}
	for i := 1; i < 5; i++ {
		nodes = append(nodes, startGridNode(t, fmt.Sprintf("n%d", i), seed.Gossip))
	}
	for _, n := range nodes {
		awaitState(t, nodes, n.Name, grid.StateAlive, 15*time.Second)
	}
	for _, n := range nodes {
		if got := len(members(t, n.RPC)); got != 5 {
			t.Fatalf("%s knows %d members, want 5", n.Name, got)
		}
	}

	stdout, _, code := runShoal(t, nil, "members", "--seed", nodes[3].RPC, "--json")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &rows) != nil || len(rows) != 5 {
		t.Fatalf("members --json: exit %d\n%s", code, stdout)
	}
	for _, r := range rows {
		for _, key := range []string{"name", "rpc", "state", "slots"} {
			if _, ok := r[key]; !ok {
				t.Fatalf("members --json row lacks %q: %v", key, r)
			}
		}
		if r["state"] != "alive" || r["functions"] != float64(8) {
			t.Fatalf("members --json row %v", r)
		}
	}
	stdout, _, _ = runShoal(t, nil, "members", "--seed", seed.RPC)
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 6 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.Contains(lines[1], "alive") || !strings.Contains(lines[1], seed.RPC) {
		t.Fatalf("members table:\n%s", stdout)
	}
	stdout, stderr, code := runShoal(t, nil, "functions", "--seed", seed.RPC)
	if !strings.Contains(stdout, "square") || !strings.Contains(stdout, "n0,n1,n2,n3,n4") {
		t.Fatalf("functions: exit %d\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestKilledNodeIsMarkedDead(t *testing.T) {
	for _, timing := range []string{"fast", "lan"} {
		t.Run(timing, func(t *testing.T) {
			a := startGridNode(t, "a", "", "--gossip-timing", timing)
			b := startGridNode(t, "b", a.Gossip, "--gossip-timing", timing)
			c := startGridNode(t, "c", a.Gossip, "--gossip-timing", timing)
			all := []*gridNode{a, b, c}
			awaitState(t, all, "c", grid.StateAlive, 15*time.Second)
			awaitState(t, all, "b", grid.StateAlive, 15*time.Second)
			c.Signal(syscall.SIGKILL)
			took := awaitState(t, []*gridNode{a, b}, "c", grid.StateDead, 60*time.Second)
			t.Logf("with --gossip-timing %s, every other member marked the killed node dead within %v", timing, took.Round(10*time.Millisecond))
		})
	}
}

func TestGracefulLeave(t *testing.T) {
	a := startGridNode(t, "a", "")
	b := startGridNode(t, "b", a.Gossip)
	awaitState(t, []*gridNode{a, b}, "b", grid.StateAlive, 15*time.Second)

	c, err := rpc.Dial(context.Background(), b.RPC, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan *rpc.Call, 4)
	for i := 0; i < 4; i++ {
		c.Go(context.Background(), "sleep", new(int), done, 400)
	}
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatal(err)
	}
	b.Signal(syscall.SIGTERM)
	b.WaitForLine(`msg="leaving: .* in_flight=4`, processTimeout)
	for i := 0; i < 4; i++ {
		call := <-done
		if call.Error != nil || *call.Result.(*int) != 400 {
			t.Fatalf("in-flight call lost when its node left: %v", call.Error)
		}
	}
	if code := b.Wait(processTimeout); code != 0 {
		t.Fatalf("leaving node exited %d, want 0", code)
	}
	awaitState(t, []*gridNode{a}, "b", grid.StateLeft, 15*time.Second)
}

func TestRestartWithSameNameRejoins(t *testing.T) {
	a := startGridNode(t, "a", "")
	b := startGridNode(t, "b", a.Gossip)
	awaitState(t, []*gridNode{a}, "b", grid.StateAlive, 15*time.Second)

	// After a graceful leave the name is free at once.
	b.Signal(syscall.SIGTERM)
	b.Wait(processTimeout)
	awaitState(t, []*gridNode{a}, "b", grid.StateLeft, 15*time.Second)
	b2 := startGridNode(t, "b", a.Gossip)
	awaitState(t, []*gridNode{a}, "b", grid.StateAlive, 15*time.Second)
	if got := members(t, a.RPC)["b"].RPC; got != b2.RPC {
		t.Fatalf("a has b at %s, want the new address %s", got, b2.RPC)
	}

	// After a crash, once the dead member's name may be reclaimed.
	b2.Signal(syscall.SIGKILL)
	awaitState(t, []*gridNode{a}, "b", grid.StateDead, 15*time.Second)
	b3 := startGridNode(t, "b", a.Gossip)
	testutil.WaitFor(t, 15*time.Second, "the restarted b to be alive at its new address", func() bool {
		m := members(t, a.RPC)["b"]
		return m.State == grid.StateAlive && m.RPC == b3.RPC
	})
}

func TestWrongGossipKeyIsRefused(t *testing.T) {
	a := startGridNode(t, "a", "", "--gossip-key", "MDEyMzQ1Njc4OWFiY2RlZg==")
	intruder := startGridNode(t, "intruder", a.Gossip, "--gossip-key", "ZmVkY2JhOTg3NjU0MzIxMA==", "--join-timeout", "2s")
	if code := intruder.Wait(processTimeout); code != 1 {
		t.Fatalf("node with the wrong key exited %d, want 1", code)
	}
	intruder.WaitForLine(`could not join through .*same --gossip-key`, processTimeout)
	if _, listed := members(t, a.RPC)["intruder"]; listed {
		t.Fatal("the grid lists the node with the wrong key")
	}
	// The right key joins.
	b := startGridNode(t, "b", a.Gossip, "--gossip-key", "MDEyMzQ1Njc4OWFiY2RlZg==")
	awaitState(t, []*gridNode{a, b}, "b", grid.StateAlive, 15*time.Second)
}

// scrape reads a node's /metrics and checks it parses as Prometheus text.
func scrape(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	out := make(map[string]float64)
	for name, fam := range families {
		for _, m := range fam.Metric {
			key := name
			for _, l := range m.Label {
				key += fmt.Sprintf(",%s=%s", l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestMetricsMoveWithCalls(t *testing.T) {
	a := startGridNode(t, "a", "", "--slots", "3")
	before := scrape(t, a.HTTP)
	for _, args := range [][]string{{"add", "1", "2"}, {"add", "3", "4"}, {"fail", `"no"`}} {
		runShoal(t, nil, append([]string{"call", "--direct", "--seed", a.RPC}, args...)...)
	}
	after := scrape(t, a.HTTP)
	for key, delta := range map[string]float64{
		"shoal_rpc_calls_total,method=add,outcome=ok":                       2,
		"shoal_rpc_calls_total,method=fail,outcome=FunctionError":           1,
		"shoal_rpc_call_duration_seconds,method=add,outcome=ok":             2,
		"shoal_rpc_call_duration_seconds,method=fail,outcome=FunctionError": 1,
	} {
		if got := after[key] - before[key]; got != delta {
			t.Errorf("%s moved by %v, want %v", key, got, delta)
		}
	}
	for key, want := range map[string]float64{
		"shoal_executor_slots":      3,
		"shoal_executor_running":    0,
		"shoal_members,state=alive": 1,
		"shoal_gossip_health_score": 0,
	} {
		if after[key] != want {
			t.Errorf("%s = %v, want %v", key, after[key], want)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/members"} {
		resp, err := http.Get("http://" + a.HTTP + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
}

func TestCallRoutesToLeastLoadedNode(t *testing.T) {
	a := startGridNode(t, "a", "", "--slots", "1")
	b := startGridNode(t, "b", a.Gossip, "--slots", "1")
	awaitState(t, []*gridNode{a, b}, "b", grid.StateAlive, 15*time.Second)

	// Fill a's only slot, and wait until its load is gossiped.
	c, err := rpc.Dial(context.Background(), a.RPC, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Go(ctx, "sleep", nil, nil, 60_000)
	testutil.WaitFor(t, 15*time.Second, "a's load to show", func() bool { return members(t, a.RPC)["a"].Running == 1 })

	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "call", "--seed", a.RPC, "--log-level", "debug", "square", "9")
	if code := p.Wait(processTimeout); code != 0 || p.Stdout() != "81\n" {
		t.Fatalf("routed call: exit %d, %q\n%s", code, p.Stdout(), p.Stderr())
	}
	p.WaitForLine(`msg="call sent" function=square node=`+b.RPC, processTimeout)

	_, stderr, code := runShoal(t, nil, "call", "--seed", a.RPC, "nope")
	if code != 1 || !strings.Contains(stderr, `UnknownFunction: no live node offers "nope"`) {
		t.Fatalf("unknown function: %q %d", stderr, code)
	}
}

// cachedInt reads the cached result of fn(arg) from memcached servers, as
// any ketama client would.
func cachedInt(t *testing.T, servers []string, fn string, arg int) (int, bool) {
	t.Helper()
	c, err := cache.NewMemcached(cache.MemcachedConfig{Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := cache.Key(fn, "1", arg)
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := c.GetMulti(context.Background(), []string{key})[key]
	if !ok {
		return 0, false
	}
	var v int
	if err := msgpack.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v, true
}

func TestNodeWritesResultsToMemcached(t *testing.T) {
	m1, m2 := testutil.StartMemcached(t), testutil.StartMemcached(t)
	servers := []string{m1.Addr, m2.Addr}
	a := startGridNode(t, "a", "", "--memcached", strings.Join(servers, ","))
	c, err := rpc.Dial(context.Background(), a.RPC, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	square := func(x int) {
		t.Helper()
		var got int
		if err := c.Call(context.Background(), "square", &got, x); err != nil || got != x*x {
			t.Fatalf("square(%d) = %d, %v", x, got, err)
		}
	}
	for x := 1; x <= 20; x++ {
		square(x)
	}
	for x := 1; x <= 20; x++ {
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("square(%d) in memcached", x), func() bool {
			v, ok := cachedInt(t, servers, "square", x)
			return ok && v == x*x
		})
	}
	got := scrape(t, a.HTTP)
	if got["shoal_cache_stored_total"] < 20 || got["shoal_cache_server_breaker,server="+m1.Addr+",state=closed"] != 1 {
		t.Fatalf("cache metrics: stored %v, breaker %v", got["shoal_cache_stored_total"], got["shoal_cache_server_breaker,server="+m1.Addr+",state=closed"])
	}

	// With one memcached gone the node keeps answering; writes to it are
	// counted as errors until its breaker opens.
	m2.Stop()
	for x := 21; x <= 40; x++ {
		square(x)
	}
	testutil.WaitFor(t, 10*time.Second, "the dead server's breaker to open", func() bool {
		return scrape(t, a.HTTP)["shoal_cache_server_breaker,server="+m2.Addr+",state=open"] == 1
	})
}

func TestGossipCacheRing(t *testing.T) {
	m1, m2 := testutil.StartMemcached(t), testutil.StartMemcached(t)
	a := startGridNode(t, "a", "", "--cache-addr", m1.Addr, "--cache-ring", "gossip")
	b := startGridNode(t, "b", a.Gossip, "--cache-addr", m2.Addr, "--cache-ring", "gossip")
	awaitState(t, []*gridNode{a, b}, "b", grid.StateAlive, 15*time.Second)
	a.WaitForLine(`msg="cache ring follows the members" servers="\[`+regexp.QuoteMeta(min(m1.Addr, m2.Addr))+` `+regexp.QuoteMeta(max(m1.Addr, m2.Addr))+`\]"`, processTimeout)
	b.WaitForLine(`msg="cache ring follows the members" servers="\[`+regexp.QuoteMeta(min(m1.Addr, m2.Addr))+` `+regexp.QuoteMeta(max(m1.Addr, m2.Addr))+`\]"`, processTimeout)

	// Results computed on either node land where ketama over both
	// servers puts them.
	both := []string{m1.Addr, m2.Addr}
	for x := 1; x <= 30; x++ {
		seed := a.RPC
		if x%2 == 0 {
			seed = b.RPC
		}
		c, err := rpc.Dial(context.Background(), seed, rpc.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Call(context.Background(), "square", nil, x)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	perServer := map[string]int{}
	for x := 1; x <= 30; x++ {
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("square(%d) in the ring", x), func() bool {
			v, ok := cachedInt(t, both, "square", x)
			return ok && v == x*x
		})
		key, _ := cache.Key("square", "1", x)
		sel, _ := cache.NewSelector(both...)
		addr, _ := sel.PickServer(key)
		perServer[addr.String()]++
	}
	if len(perServer) != 2 {
		t.Fatalf("results all on one server: %v", perServer)
	}

	// When b leaves, a's ring shrinks to its own memcached.
	b.Signal(syscall.SIGTERM)
	a.WaitForLine(`msg="cache ring follows the members" servers=\[`+regexp.QuoteMeta(m1.Addr)+`\]`, processTimeout)
}
