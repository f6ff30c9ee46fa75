package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// cluster is in-process nodes on real TCP, reached through a pool, with
// the membership the first node reports; tests install newer views.
type cluster struct {
	nodes   []*node.Node
	pool    *rpc.Pool
	members grid.Views
	grid    scheduler.Grid
}

// view is the membership the first node reports now, with the members
// named in gone shown dead.
func (c *cluster) view(gone ...string) *grid.View {
	members := c.nodes[0].Members()
	for i := range members {
		for _, g := range gone {
			if members[i].Name == g {
				members[i].State = grid.StateDead
			}
		}
	}
	return grid.NewView(members, c.nodes[0].Functions(context.Background()))
}

// startCluster starts n in-process nodes with square, fail-on-negative,
// and a sleep; configure may register more per node.
func startCluster(t *testing.T, n int, configure func(i int, nd *node.Node)) *cluster {
	t.Helper()
	var c cluster
	for i := 0; i < n; i++ {
		cfg := node.FastConfig()
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		nd, err := node.New(cfg, "test")
		if err != nil {
			t.Fatal(err)
		}
		must(t, nd.Register("square", func(x int) (int, error) {
			if x < 0 {
				return 0, fmt.Errorf("negative: %d", x)
			}
			return x * x, nil
		}, rpc.Cacheable(), rpc.WithVersion("1")))
		must(t, nd.Register("sleep", func(ctx context.Context, ms int) (int, error) {
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return ms, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}))
		if configure != nil {
			configure(i, nd)
		}
		must(t, nd.Start(context.Background()))
		t.Cleanup(func() { nd.Close() })
		c.nodes = append(c.nodes, nd)
	}
	testutil.WaitFor(t, 10*time.Second, "all nodes to see each other", func() bool {
		for _, nd := range c.nodes {
			alive := 0
			for _, m := range nd.Members() {
				if m.State == grid.StateAlive {
					alive++
				}
			}
			if alive != n {
				return false
			}
		}
		return true
	})
	c.pool = rpc.NewPool(rpc.ClientConfig{})
	t.Cleanup(func() { c.pool.Close() })
	testutil.WaitFor(t, 10*time.Second, "the first node to know every node's functions", func() bool {
		return len(c.view().Offering("square")) == n
	})
	c.members.Set(c.view())
	c.grid = scheduler.Grid{Caller: c.pool, Members: &c.members}
	return &c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func params(t testing.TB, args ...any) msgpack.RawMessage {
	b, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs a job and checks every item got exactly one result.
func run(t *testing.T, ctx context.Context, g scheduler.Grid, fn string, items []msgpack.RawMessage, opts scheduler.Options) ([]scheduler.Result, scheduler.Stats, error) {
	t.Helper()
	results := make([]scheduler.Result, len(items))
	seen := make([]int, len(items))
	st, err := scheduler.Run(ctx, g, fn, scheduler.Encoded(items), opts, each(func(r scheduler.Result) {
		seen[r.Index]++
		results[r.Index] = r
	}))
	for i, n := range seen {
		if n > 1 {
			t.Fatalf("item %d delivered %d times", i, n)
		}
		if n == 0 && err == nil {
			t.Fatalf("item %d never delivered", i)
		}
	}
	return results, st, err
}

func intOf(t *testing.T, r scheduler.Result) int {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("item %d: %v", r.Index, r.Err)
	}
	var v int
	if err := msgpack.Unmarshal(r.Value, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOrderAndCorrectnessOverThreeNodes(t *testing.T) {
	c := startCluster(t, 3, nil)
	const n = 20_000
	items := make([]msgpack.RawMessage, n)
	for i := range items {
		items[i] = params(t, i)
	}
	results, st, err := run(t, context.Background(), c.grid, "square", items, scheduler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if got := intOf(t, r); got != i*i {
			t.Fatalf("item %d = %d", i, got)
		}
	}
	total := 0
	for _, k := range st.PerNode {
		total += k
	}
	if st.OK != n || st.Failed != 0 || total != n || len(st.PerNode) != 3 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d items in %v (%.0f items/s), per node %v", n, st.Wall, float64(n)/st.Wall.Seconds(), st.PerNode)
}

func TestFunctionErrorsAreDeliveredNotRetried(t *testing.T) {
	c := startCluster(t, 2, nil)
	items := []msgpack.RawMessage{params(t, 2), params(t, -1), params(t, 3), params(t, "x")}
	results, st, err := run(t, context.Background(), c.grid, "square", items, scheduler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if intOf(t, results[0]) != 4 || intOf(t, results[2]) != 9 {
		t.Fatal("good items lost")
	}
	if !errors.Is(results[1].Err, rpc.ErrFunctionError) || results[1].Attempts != 1 {
		t.Fatalf("item 1: %v after %d attempts", results[1].Err, results[1].Attempts)
	}
	if !errors.Is(results[3].Err, rpc.ErrBadArguments) {
		t.Fatalf("item 3: %v", results[3].Err)
	}
	if st.OK != 2 || st.Failed != 2 || st.Retries != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnknownFunctionFailsAtOnce(t *testing.T) {
	c := startCluster(t, 1, nil)
	start := time.Now()
	_, err := scheduler.Run(context.Background(), c.grid, "nope", scheduler.Encoded([]msgpack.RawMessage{params(t, 1)}), scheduler.Options{}, func([]scheduler.Result) {})
	if !errors.Is(err, rpc.ErrUnknownFunction) || time.Since(start) > time.Second {
		t.Fatalf("unknown function: %v after %v", err, time.Since(start))
	}
}

func TestKilledNodeMidJobLosesNothing(t *testing.T) {
	c := startCluster(t, 3, nil)
	items := make([]msgpack.RawMessage, 300)
	for i := range items {
		items[i] = params(t, 10) // 10ms each: the job runs about a second
	}
	var delivered atomic.Int64
	var once sync.Once
	results := make([]scheduler.Result, len(items))
	seen := make([]int, len(items))
	st, err := scheduler.Run(context.Background(), c.grid, "sleep", scheduler.Encoded(items), scheduler.Options{}, each(func(r scheduler.Result) {
		seen[r.Index]++
		results[r.Index] = r
		if delivered.Add(1) == 50 {
			once.Do(func() { go c.nodes[2].Close() }) // dies without a word
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range seen {
		if n != 1 || intOf(t, results[i]) != 10 {
			t.Fatalf("item %d delivered %d times: %+v", i, n, results[i])
		}
	}
	t.Logf("stats after a node died: %+v", st)
	if st.Retries == 0 {
		t.Fatal("nothing was retried although a node died mid-job")
	}
}

func TestGoneNodeIsReroutedAtOnce(t *testing.T) {
	block := make(chan struct{})
	c := startCluster(t, 2, func(i int, nd *node.Node) {
		nd.Register("work", func(ctx context.Context, x int) (int, error) {
			if i == 1 {
				select { // n1 never answers while the test runs
				case <-block:
				case <-ctx.Done():
				}
				return 0, ctx.Err()
			}
			return x, nil
		})
	})
	defer close(block)
	items := make([]msgpack.RawMessage, 40)
	for i := range items {
		items[i] = params(t, i)
	}
	go func() {
		// Membership reports n1 gone once it holds some work.
		testutil.WaitFor(t, 10*time.Second, "n1 to be busy", func() bool {
			r, _ := c.nodes[1].Executor().Load()
			return r > 0
		})
		c.members.Set(c.view("n1"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results, _, err := run(t, ctx, c.grid, "work", items, scheduler.Options{ChunkSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if intOf(t, r) != i || r.Node != "n0" {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
}

func TestCancelStopsWorkOnNodes(t *testing.T) {
	c := startCluster(t, 2, nil)
	items := make([]msgpack.RawMessage, 50)
	for i := range items {
		items[i] = params(t, 60_000)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		testutil.WaitFor(t, 10*time.Second, "work to start", func() bool {
			r, _ := c.nodes[0].Executor().Load()
			return r > 0
		})
		cancel()
	}()
	start := time.Now()
	_, _, err := run(t, ctx, c.grid, "sleep", items, scheduler.Options{})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("canceled job: %v after %v", err, time.Since(start))
	}
	for _, nd := range c.nodes {
		testutil.WaitFor(t, 5*time.Second, nd.Name()+" to stop the job's work", func() bool {
			r, q := nd.Executor().Load()
			return r == 0 && q == 0
		})
	}
}

func TestCachedItemsAreNotSent(t *testing.T) {
	c := startCluster(t, 2, nil)
	mem := cache.NewMemory(1<<20, 0)
	var hits []cache.Item
	for i := 0; i < 10; i += 2 { // even items are cached (with a marker value)
		k, err := cache.KeyFromParams("square", "1", params(t, i))
		must(t, err)
		v, _ := msgpack.Marshal(-i)
		hits = append(hits, cache.Item{Key: k, Value: v})
	}
	mem.SetMulti(context.Background(), hits)
	items := make([]msgpack.RawMessage, 10)
	for i := range items {
		items[i] = params(t, i)
	}
	results, st, err := run(t, context.Background(), c.grid, "square", items, scheduler.Options{Cache: mem, Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		want := i * i
		if i%2 == 0 {
			want = -i
		}
		if intOf(t, r) != want || r.Cached != (i%2 == 0) {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	if st.Cached != 5 || st.OK != 10 {
		t.Fatalf("stats %+v", st)
	}
	// The key the node computes from its typed arguments is the one the
	// scheduler computes from the encoded params.
	typed, _ := cache.Key("square", "1", 4)
	fromParams, _ := cache.KeyFromParams("square", "1", params(t, int64(4)))
	if typed != fromParams {
		t.Fatal("keys from typed arguments and from params differ")
	}
}

func TestHedgingBeatsASlowNode(t *testing.T) {
	c := startCluster(t, 2, func(i int, nd *node.Node) {
		nd.Register("work", func(ctx context.Context, x int) (int, error) {
			d := time.Millisecond
			if i == 1 {
				d = 30 * time.Second // a node that has stalled
			}
			select {
			case <-time.After(d):
				return x, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		})
	})
	// Chunks spread over both nodes; those stuck on n1 are re-issued to n0
	// whenever n0 is idle at the tail, and the first answer wins.
	items := make([]msgpack.RawMessage, 20)
	for i := range items {
		items[i] = params(t, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results, st, err := run(t, ctx, c.grid, "work", items, scheduler.Options{ChunkSize: 1, Hedge: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if intOf(t, r) != i {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	if st.Wall > 10*time.Second || st.Reissued == 0 || st.PerNode["n1"] != 0 {
		t.Fatalf("hedging did not take over from the stalled node: %+v", st)
	}
	t.Logf("stats %+v", st)
}

// A job the cache answers whole sends nothing, across several lookup
// windows (found by shoal demo: the first item after each window of hits
// went out without a lookup, and a job answered whole never returned).
func TestFullyCachedJobSendsNothing(t *testing.T) {
	c := startCluster(t, 1, nil)
	mem := cache.NewMemory(64<<20, 0)
	items := make([]msgpack.RawMessage, 1000)
	var its []cache.Item
	for i := range items {
		items[i] = params(t, i)
		k, err := cache.KeyFromParams("square", "1", items[i])
		must(t, err)
		v, _ := msgpack.Marshal(i * i)
		its = append(its, cache.Item{Key: k, Value: v})
	}
	mem.SetMulti(context.Background(), its)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results, st, err := run(t, ctx, c.grid, "square", items, scheduler.Options{Cache: mem, Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Cached != 1000 || len(st.PerNode) != 0 || intOf(t, results[999]) != 999*999 {
		t.Fatalf("stats %+v", st)
	}
}
