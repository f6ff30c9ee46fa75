package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// The grid cache with node processes and no memcached anywhere, as a
// newcomer following the README's tour has it.

// cacheGrid is a grid of node processes started without memcached.
type cacheGrid struct {
	t     *testing.T
	nodes map[string]*gridNode
	stub  grid.Stub
}

func startCacheGrid(t *testing.T, names []string, args ...string) *cacheGrid {
	t.Helper()
	pool := rpc.NewPool(rpc.ClientConfig{})
	t.Cleanup(func() { pool.Close() })
	g := &cacheGrid{t: t, nodes: map[string]*gridNode{}, stub: grid.Stub{Caller: pool}}
	join := ""
	for _, name := range names {
		n := startGridNode(t, name, join, args...)
		if join == "" {
			join = n.Gossip
		}
		g.nodes[name] = n
	}
	g.waitForRing(names...)
	return g
}

// add starts another node, joined to the grid.
func (g *cacheGrid) add(name string, args ...string) {
	g.t.Helper()
	var join string
	for _, n := range g.nodes {
		join = n.Gossip
		break
	}
	g.nodes[name] = startGridNode(g.t, name, join, args...)
}

// waitForRing waits until each of the named nodes places keys over
// exactly those nodes: it logs the cache ring it follows when it changes.
func (g *cacheGrid) waitForRing(names ...string) {
	g.t.Helper()
	sorted := slices.Sorted(slices.Values(names))
	want := `msg="grid cache follows the members" peers="?\[` + strings.Join(sorted, " ") + `\]`
	for _, name := range names {
		g.nodes[name].WaitForLine(want, 30*time.Second)
	}
}

// seed returns the RPC address of the named node.
func (g *cacheGrid) seed(name string) string { return g.nodes[name].RPC }

// entries returns the entries each live node of names holds.
func (g *cacheGrid) entries(names ...string) map[string]int64 {
	g.t.Helper()
	out := map[string]int64{}
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := g.stub.Cache(ctx, g.nodes[name].RPC)
		cancel()
		if err != nil {
			g.t.Fatalf("shoal.cache of %s: %v", name, err)
		}
		if info.Kind != grid.CacheGrid {
			g.t.Fatalf("%s uses a %q cache, want the grid cache", name, info.Kind)
		}
		out[name] = info.Entries
	}
	return out
}

// waitForEntries waits until the named nodes hold want entries in all: the
// nodes send results to their owners after replying.
func (g *cacheGrid) waitForEntries(want int64, names ...string) map[string]int64 {
	g.t.Helper()
	var held map[string]int64
	testutil.WaitFor(g.t, 30*time.Second, fmt.Sprintf("%d entries held in the grid cache", want), func() bool {
		held = g.entries(names...)
		sum := int64(0)
		for _, n := range held {
			sum += n
		}
		return sum == want
	})
	return held
}

// metric reads an unlabelled metric from the named node's /metrics.
func (g *cacheGrid) metric(name, metric string) float64 {
	g.t.Helper()
	resp, err := http.Get("http://" + g.nodes[name].HTTP + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, metric+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				g.t.Fatal(err)
			}
			return f
		}
	}
	g.t.Fatalf("%s has no %s", name, metric)
	return 0
}

// submitSquares runs `shoal submit --range lo:hi square` through seed,
// checks every result, and returns how many came from the cache.
func submitSquares(t *testing.T, seed string, lo, hi int) int {
	t.Helper()
	summaryFile := filepath.Join(t.TempDir(), "summary.json")
	stdout, stderr, code := runShoal(t, nil, "submit", "--seed", seed, "--range", fmt.Sprintf("%d:%d", lo, hi),
		"--summary-json", summaryFile, "square")
	if code != 0 {
		t.Fatalf("submit %d:%d: exit %d\n%s", lo, hi, code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != hi-lo {
		t.Fatalf("submit %d:%d: %d lines of output", lo, hi, len(lines))
	}
	for i, line := range lines {
		if x := lo + i; line != strconv.Itoa(x*x) {
			t.Fatalf("submit %d:%d: line %d is %q, want %d", lo, hi, i, line, x*x)
		}
	}
	b, err := os.ReadFile(summaryFile)
	if err != nil {
		t.Fatal(err)
	}
	var sum summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Items != hi-lo || sum.OK != hi-lo || sum.Failed != 0 {
		t.Fatalf("submit %d:%d: summary %+v", lo, hi, sum)
	}
	return sum.Cached
}

// owners returns how many of the squares of lo..hi-1 each node owns in a
// grid cache over names, by the placement every node and client computes
// (from keys over the version of square the grid offers).
func (g *cacheGrid) owners(names []string, lo, hi int) map[string]int {
	t := g.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fns, err := g.stub.Functions(ctx, g.seed(names[0]))
	if err != nil {
		t.Fatal(err)
	}
	version := ""
	for _, f := range fns {
		if f.Name == "square" {
			version = f.Version
		}
	}
	p := cache.NewPeers(cache.PeersConfig{})
	p.SetPeers("", names...)
	out := map[string]int{}
	for x := lo; x < hi; x++ {
		params, err := msgpack.Marshal([]any{x})
		if err != nil {
			t.Fatal(err)
		}
		key, err := cache.KeyFromParams("square", version, params)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Owner(key)]++
	}
	return out
}

// TestGridCacheTourKillAndConcurrentJobs follows the README's tour: three
// nodes, no memcached, the same cacheable job twice, the second wholly
// from the cache. Then jobs sharing keys run at once, and after one node
// is killed a rerun finds exactly the keys the other two own, about two
// thirds, and computes the rest again, correctly.
func TestGridCacheTourKillAndConcurrentJobs(t *testing.T) {
	t.Parallel()
	names := []string{"a", "b", "c"}
	g := startCacheGrid(t, names)
	const n = 3000

	if cached := submitSquares(t, g.seed("a"), 0, n); cached != 0 {
		t.Fatalf("the first run found %d items cached in a fresh grid", cached)
	}
	held := g.waitForEntries(n, names...)
	want := g.owners(names, 0, n)
	for _, name := range names {
		if held[name] != int64(want[name]) {
			t.Fatalf("%s holds %d entries; it owns %d of the keys (%v)", name, held[name], want[name], held)
		}
	}
	if cached := submitSquares(t, g.seed("b"), 0, n); cached != n {
		t.Fatalf("the second run found %d of %d items cached", cached, n)
	}
	stored, hits := 0.0, 0.0
	for _, name := range names {
		stored += g.metric(name, "shoal_cache_stored_total")
		hits += g.metric(name, "shoal_cache_hits_total")
	}
	if stored != n || hits != n {
		t.Fatalf("/metrics: stored %v and hits %v summed over the nodes, want %d each", stored, hits, n)
	}

	t.Run("concurrent jobs sharing keys", func(t *testing.T) {
		ranges := [][2]int{{2000, 6000}, {1000, 5000}, {4000, 7000}}
		var wg sync.WaitGroup
		for i, r := range ranges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				submitSquares(t, g.seed(names[i]), r[0], r[1])
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		// Each key lives once in the grid, whoever computed it and however
		// many times: 0..7000 in all.
		held := g.waitForEntries(7000, names...)
		want := g.owners(names, 0, 7000)
		for _, name := range names {
			if held[name] != int64(want[name]) {
				t.Fatalf("%s holds %d entries; it owns %d of the keys", name, held[name], want[name])
			}
		}
		if cached := submitSquares(t, g.seed("c"), 0, 7000); cached != 7000 {
			t.Fatalf("after the concurrent jobs, %d of 7000 cached", cached)
		}
	})

	t.Run("one of three killed", func(t *testing.T) {
		g.nodes["c"].Signal(syscall.SIGKILL)
		testutil.WaitFor(t, 30*time.Second, "a and b to see c dead", func() bool {
			return members(t, g.seed("a"))["c"].State == grid.StateDead && members(t, g.seed("b"))["c"].State == grid.StateDead
		})
		survivors := g.owners(names, 0, 7000)
		want := survivors["a"] + survivors["b"]
		cached := submitSquares(t, g.seed("a"), 0, 7000)
		if cached != want {
			t.Fatalf("with c killed, %d of 7000 cached; a and b own %d of the keys", cached, want)
		}
		if f := float64(cached) / 7000; f < 0.45 || f > 0.85 {
			t.Fatalf("with one of three killed, %.2f of the items were cached; want about two thirds", f)
		}
		// The keys c owned now belong to a and b, which computed them again
		// and hold them.
		g.waitForEntries(7000, "a", "b")
		if cached := submitSquares(t, g.seed("b"), 0, 7000); cached != 7000 {
			t.Fatalf("a rerun after the recomputation found %d of 7000", cached)
		}
	})
}

// TestGridCacheJoinMovesAThird starts two nodes, caches a job, adds a
// third and reruns it: the keys the newcomer owns (about a third) are
// misses, computed again and written to it; the others are hits.
func TestGridCacheJoinMovesAThird(t *testing.T) {
	t.Parallel()
	g := startCacheGrid(t, []string{"x", "y"})
	const n = 3000
	submitSquares(t, g.seed("x"), 0, n)
	g.waitForEntries(n, "x", "y")

	g.add("z")
	g.waitForRing("x", "y", "z")
	testutil.WaitFor(t, 30*time.Second, "x to list z alive", func() bool {
		return members(t, g.seed("x"))["z"].State == grid.StateAlive
	})
	placed := g.owners([]string{"x", "y", "z"}, 0, n)
	cached := submitSquares(t, g.seed("x"), 0, n)
	if cached != n-placed["z"] {
		t.Fatalf("after z joined, %d of %d cached; x and y still own %d", cached, n, n-placed["z"])
	}
	if f := float64(placed["z"]) / n; f < 0.2 || f > 0.47 {
		t.Fatalf("z owns %.2f of the keys; want about a third", f)
	}
	testutil.WaitFor(t, 30*time.Second, "z to hold the keys it owns", func() bool {
		return g.entries("z")["z"] == int64(placed["z"])
	})
	if cached := submitSquares(t, g.seed("z"), 0, n); cached != n {
		t.Fatalf("with the moved keys written to z, %d of %d cached", cached, n)
	}
}

// TestGridCacheFrozenOwnerIsAMiss freezes a node holding a share of a
// cached job and reruns the job at once, while the grid still lists the
// node alive: lookups of its keys time out and are misses, its breaker
// opens, and the job completes with every result right.
func TestGridCacheFrozenOwnerIsAMiss(t *testing.T) {
	t.Parallel()
	names := []string{"f1", "f2", "f3"}
	// LAN timing: the frozen node stays alive in the view for seconds.
	g := startCacheGrid(t, names, "--gossip-timing", "lan")
	const n = 3000
	submitSquares(t, g.seed("f1"), 0, n)
	g.waitForEntries(n, names...)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{g.seed("f1")}, CacheTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g.nodes["f3"].Signal(syscall.SIGSTOP)
	t.Cleanup(func() { g.nodes["f3"].Signal(syscall.SIGCONT) })

	inputs := make([]int, n)
	for i := range inputs {
		inputs[i] = i
	}
	var st shoal.Stats
	squares, err := shoal.Map[int, int](ctx, c, "square", inputs, shoal.WithStats(&st))
	if err != nil {
		t.Fatalf("the job failed with an owner frozen: %v", err)
	}
	for i, v := range squares {
		if v != i*i {
			t.Fatalf("square(%d) = %d", i, v)
		}
	}
	placed := g.owners(names, 0, n)
	if st.Cached != n-placed["f3"] {
		t.Fatalf("%d of %d cached with f3 frozen; f1 and f2 own %d", st.Cached, n, n-placed["f3"])
	}
}
