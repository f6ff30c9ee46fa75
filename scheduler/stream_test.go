package scheduler_test

// The tests in this file pin down a job fed by a Source: items are taken
// as the window has room, never more than Window past the earliest item
// without a result, and results come out per batch, in input order with
// Ordered.

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// windowSource gives n items, item i carrying the argument i (n < 0: no
// end), and checks as it goes that the job takes an item only while it
// is fewer than window items past the earliest item not yet emitted. Next
// and emit run on the job's goroutine, so the source sees every emitted
// result before it is asked again.
type windowSource struct {
	t      *testing.T
	n      int
	window int
	failAt int   // Next fails when asked for this item; -1: never
	err    error // what it fails with
	next   int

	delivered map[int]bool
	low       int // the earliest item not yet emitted
	worst     int // the farthest past low the job ever took an item
}

func newWindowSource(t *testing.T, n, window int) *windowSource {
	return &windowSource{t: t, n: n, window: window, failAt: -1, delivered: make(map[int]bool)}
}

func (s *windowSource) Next(buf []byte) ([]byte, error) {
	if s.n >= 0 && s.next >= s.n {
		return buf, io.EOF
	}
	if s.next == s.failAt {
		return append(buf, 0x91), s.err // a half-written item, to be discarded
	}
	if d := s.next - s.low; d >= s.window {
		s.t.Errorf("the job took item %d while item %d had no result: %d past it, with a window of %d", s.next, s.low, d, s.window)
	} else {
		s.worst = max(s.worst, d)
	}
	b, err := msgpack.Marshal([]any{s.next})
	if err != nil {
		s.t.Fatal(err)
	}
	s.next++
	return append(buf, b...), nil
}

// emitted records results as emit gets them.
func (s *windowSource) emitted(batch []scheduler.Result) {
	for _, r := range batch {
		if s.delivered[r.Index] {
			s.t.Errorf("item %d delivered twice", r.Index)
		}
		s.delivered[r.Index] = true
	}
	for s.delivered[s.low] {
		delete(s.delivered, s.low)
		s.low++
	}
}

// streamJob is a job fed by a Source running on a fakeGrid.
type streamJob struct {
	done      chan struct{}
	mu        sync.Mutex
	results   []scheduler.Result // in the order emitted
	batches   int
	delivered int

	stats scheduler.Stats
	err   error
}

// count returns how many results have been emitted.
func (j *streamJob) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.delivered
}

// stream runs a job over src on g; observe, if not nil, sees each batch
// on the job's goroutine. When the test ends the job is canceled and must
// have returned.
func (g *fakeGrid) stream(t *testing.T, ctx context.Context, src scheduler.Source, opts scheduler.Options, observe func([]scheduler.Result)) *streamJob {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	j := &streamJob{done: make(chan struct{})}
	go func() {
		defer close(j.done)
		j.stats, j.err = scheduler.Run(ctx, scheduler.Grid{Caller: g, Members: &g.members}, fakeFn, src, opts, func(batch []scheduler.Result) {
			if observe != nil {
				observe(batch)
			}
			j.mu.Lock()
			j.results = append(j.results, batch...)
			j.batches++
			j.delivered += len(batch)
			j.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		g.shutdown()
		select {
		case <-j.done:
		case <-time.After(10 * time.Second):
			t.Error("Run still running 10s after its context was canceled")
		}
	})
	return j
}

// wait waits for Run to return.
func (j *streamJob) wait(t *testing.T) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run has not returned after 20s")
	}
}

// checkAll checks that the job delivered items 0..n-1 once each, each
// with i*10, and returns them by index.
func (j *streamJob) checkAll(t *testing.T, n int) []scheduler.Result {
	t.Helper()
	if j.err != nil {
		t.Fatalf("Run: %v", j.err)
	}
	byIndex := make([]scheduler.Result, n)
	seen := make([]int, n)
	for _, r := range j.results {
		if r.Index < 0 || r.Index >= n {
			t.Fatalf("result for item %d of %d", r.Index, n)
		}
		seen[r.Index]++
		byIndex[r.Index] = r
	}
	for i, k := range seen {
		if k != 1 {
			t.Fatalf("item %d delivered %d times", i, k)
		}
	}
	checkTimes10(t, byIndex)
	if j.stats.Items != n || j.stats.OK != n {
		t.Fatalf("stats %+v for %d items", j.stats, n)
	}
	return byIndex
}

// TestFakeSourceLongerThanTheWindow pins down a job over many times its
// window: every item is delivered once, results come in batches rather
// than one by one, and the job never takes an item Window or more past
// the earliest item without a result, as or out of order.
func TestFakeSourceLongerThanTheWindow(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		name := "as completed"
		if ordered {
			name = "ordered"
		}
		t.Run(name, func(t *testing.T) {
			g := newFakeGrid()
			g.add("a", after(time.Millisecond, times10))
			g.add("b", after(2*time.Millisecond, times10))
			g.setView(member("a", 2), member("b", 2))
			const n, window = 5000, 64
			src := newWindowSource(t, n, window)
			j := g.stream(t, context.Background(), src, scheduler.Options{Window: window, Ordered: ordered}, src.emitted)
			j.wait(t)
			j.checkAll(t, n)
			if ordered {
				for k, r := range j.results {
					if r.Index != k {
						t.Fatalf("result %d emitted is item %d", k, r.Index)
					}
				}
			}
			if j.batches >= n/2 {
				t.Errorf("%d batches for %d items: results are not batched", j.batches, n)
			}
			largest := 0
			for _, c := range g.callsTo("") {
				largest = max(largest, len(c.items))
			}
			t.Logf("%d items in %d batches and %d calls (largest %d items); the job took items up to %d past the earliest without a result", n, j.batches, len(g.callsTo("")), largest, src.worst)
			if largest > window {
				t.Errorf("a chunk of %d items with a window of %d", largest, window)
			}
		})
	}
}

// TestFakeOrderedWaitsForASlowEarlyItem pins down Ordered: while the
// first item is held on a slow node, the others are computed but none is
// delivered, and no item Window or more past it is taken; once it
// answers, everything comes out in input order.
func TestFakeOrderedWaitsForASlowEarlyItem(t *testing.T) {
	g := newFakeGrid()
	release := make(chan struct{})
	first := func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		if slices.Contains(c.items, 0) {
			return when(release, times10)(ctx, c)
		}
		return times10(ctx, c)
	}
	g.add("a", first)
	g.add("b", first)
	g.setView(member("a", 2), member("b", 2))
	const n, window = 300, 16
	src := newWindowSource(t, n, window)
	j := g.stream(t, context.Background(), src, scheduler.Options{Window: window, Ordered: true, ChunkSize: 1}, src.emitted)
	testutil.WaitFor(t, awaitTimeout, "every item of the window but the first to be answered", func() bool {
		answered := 0
		for _, c := range g.callsTo("") {
			if !c.end.IsZero() {
				answered += len(c.items)
			}
		}
		return answered == window-1
	})
	// An absence: the job holds the window until the first item answers.
	// Give it time to do wrong.
	time.Sleep(100 * time.Millisecond)
	if k := j.count(); k != 0 {
		t.Fatalf("%d results delivered before item 0's", k)
	}
	if sent := len(itemsOf(g.callsTo(""))); sent != window {
		t.Fatalf("%d items sent while item 0 was held, with a window of %d", sent, window)
	}
	close(release)
	j.wait(t)
	j.checkAll(t, n)
	for k, r := range j.results {
		if r.Index != k {
			t.Fatalf("result %d emitted is item %d", k, r.Index)
		}
	}
}

// TestFakeSourceFailsMidStream pins down a source that fails: the job
// ends with an *InputError naming the item and wrapping the source's
// error; nothing of that item or after it is sent, and no call is left
// running. A source that gives bytes that are not one msgpack value fails
// the same way.
func TestFakeSourceFailsMidStream(t *testing.T) {
	boom := errors.New("cannot encode chan int")
	cases := []struct {
		name string
		src  func(t *testing.T) scheduler.Source
		want error
	}{
		{"source error", func(t *testing.T) scheduler.Source {
			s := newWindowSource(t, 1000, 1<<20)
			s.failAt, s.err = 120, boom
			return s
		}, boom},
		{"not one value", func(t *testing.T) scheduler.Source {
			items := make([]msgpack.RawMessage, 1000)
			for i := range items {
				items[i], _ = msgpack.Marshal([]any{i})
			}
			items[120] = append(items[120], 0x01) // two values
			return scheduler.Encoded(items)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			g.add("a", after(time.Millisecond, times10))
			g.setView(member("a", 2))
			j := g.stream(t, context.Background(), tc.src(t), scheduler.Options{ChunkSize: 10}, nil)
			j.wait(t)
			var inputErr *scheduler.InputError
			if !errors.As(j.err, &inputErr) || inputErr.Index != 120 {
				t.Fatalf("Run: %v; want an InputError for item 120", j.err)
			}
			if tc.want != nil && !errors.Is(j.err, tc.want) {
				t.Fatalf("Run: %v; want it to wrap %v", j.err, tc.want)
			}
			t.Logf("Run: %v", j.err)
			for _, x := range itemsOf(g.callsTo("")) {
				if x >= 120 {
					t.Fatalf("item %d was sent", x)
				}
			}
			if k := g.inFlight(); k != 0 {
				t.Fatalf("%d calls in flight after Run returned", k)
			}
			for _, r := range j.results {
				if r.Err != nil || r.Index >= 120 {
					t.Fatalf("result %+v", r)
				}
			}
		})
	}
}

// chanSource is a Waiter fed item by item by the test: the job must go on
// with the nodes' answers while it waits.
type chanSource struct {
	mu    sync.Mutex
	items []int
	ended bool
	wait  bool // the job waits for ready
	ready chan struct{}
}

func newChanSource() *chanSource { return &chanSource{ready: make(chan struct{}, 1)} }

func (s *chanSource) Next(buf []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.items) == 0 {
		if s.ended {
			return buf, io.EOF
		}
		s.wait = true
		return buf, scheduler.ErrNotReady
	}
	b, _ := msgpack.Marshal([]any{s.items[0]})
	s.items = s.items[1:]
	return append(buf, b...), nil
}

func (s *chanSource) Ready() <-chan struct{} { return s.ready }

// give hands the source item x, or its end when x < 0.
func (s *chanSource) give(x int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x < 0 {
		s.ended = true
	} else {
		s.items = append(s.items, x)
	}
	if s.wait {
		s.wait = false
		s.ready <- struct{}{}
	}
}

// TestFakeWaitingSourceKeepsResultsFlowing pins down a Waiter: results
// of the items it gave come out while it has no next item, and the job
// ends when it ends; canceled while it waits, the job returns at once.
func TestFakeWaitingSourceKeepsResultsFlowing(t *testing.T) {
	g := newFakeGrid()
	g.add("a", times10)
	g.setView(member("a", 2))
	src := newChanSource()
	j := g.stream(t, context.Background(), src, scheduler.Options{}, nil)
	src.give(0)
	src.give(1)
	testutil.WaitFor(t, awaitTimeout, "the first two items' results while the source waits", func() bool { return j.count() == 2 })
	for x := 2; x < 50; x++ {
		src.give(x)
	}
	src.give(-1)
	j.wait(t)
	j.checkAll(t, 50)

	// Canceled while the source waits.
	turns, stop := scheduler.CountTurns()
	defer stop()
	src = newChanSource()
	ctx, cancel := context.WithCancel(context.Background())
	j = g.stream(t, ctx, src, scheduler.Options{}, nil)
	src.give(7)
	testutil.WaitFor(t, awaitTimeout, "item 7's result", func() bool { return j.count() == 1 })
	before := turns()
	time.Sleep(100 * time.Millisecond) // an idle job must not spin meanwhile
	if spun := turns() - before; spun > 5 {
		t.Errorf("the job's loop turned %d times while its source waited", spun)
	}
	canceled := time.Now()
	cancel()
	j.wait(t)
	if !errors.Is(j.err, context.Canceled) || time.Since(canceled) > 2*time.Second {
		t.Fatalf("Run: %v after %v; want context.Canceled at once", j.err, time.Since(canceled))
	}
}

// TestFakeCancelMidStream pins down canceling a job over an endless
// source: Run returns context.Canceled promptly, with no call left
// running.
func TestFakeCancelMidStream(t *testing.T) {
	testutil.CheckGoroutines(t)
	g := newFakeGrid()
	g.add("a", after(2*time.Millisecond, times10))
	g.add("b", after(50*time.Millisecond, times10))
	g.setView(member("a", 2), member("b", 1))
	const window = 256
	src := newWindowSource(t, -1, window)
	ctx, cancel := context.WithCancel(context.Background())
	j := g.stream(t, ctx, src, scheduler.Options{Window: window}, src.emitted)
	testutil.WaitFor(t, awaitTimeout, "b to hold a chunk and a to answer many", func() bool {
		return len(running(g.callsTo("b"))) > 0 && j.count() > 2000
	})
	canceled := time.Now()
	cancel()
	j.wait(t)
	if !errors.Is(j.err, context.Canceled) || time.Since(canceled) > 2*time.Second {
		t.Fatalf("Run: %v after %v", j.err, time.Since(canceled))
	}
	if k := g.inFlight(); k != 0 {
		t.Fatalf("%d calls in flight after Run returned", k)
	}
	t.Logf("%d items taken, %d delivered before the cancel", src.next, j.count())
}

// TestFakeRetriesAtTheWindowsEdge pins down retries in a small window:
// every first try fails, so the window's earliest items wait for their
// backoff while later ones go out; each item is still delivered once,
// with its value, after two attempts, and the window holds.
func TestFakeRetriesAtTheWindowsEdge(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(map[bool]string{false: "as completed", true: "ordered"}[ordered], func(t *testing.T) {
			g := newFakeGrid()
			b := firstTriesFail()
			g.add("a", b)
			g.add("b", b)
			g.setView(member("a", 1), member("b", 1))
			const n, window = 400, 8
			src := newWindowSource(t, n, window)
			j := g.stream(t, context.Background(), src, scheduler.Options{Window: window, ChunkSize: 3, Ordered: ordered}, src.emitted)
			j.wait(t)
			results := j.checkAll(t, n)
			for i, r := range results {
				if r.Attempts != 2 {
					t.Fatalf("item %d: %d attempts", i, r.Attempts)
				}
			}
			if j.stats.Retries != n {
				t.Fatalf("stats %+v; want %d retries", j.stats, n)
			}
			// Retries go to the other node when it has room.
			calls := g.callsTo("")
			same := 0
			for i := range n {
				if tr := tries(calls, i); len(tr) == 2 && tr[0].addr == tr[1].addr {
					same++
				}
			}
			t.Logf("%d of %d items retried on the node they failed on", same, n)
		})
	}
}

// TestFakeItemErrorsInABatch pins down a chunk answered with some items
// failed: the failed ones are delivered with their errors, the others
// with their values, in one batch.
func TestFakeItemErrorsInABatch(t *testing.T) {
	g := newFakeGrid()
	g.add("a", answer(func(x int) itemResult {
		if x%3 == 0 {
			return itemError(rpc.Errorf(rpc.KindBadArguments, "no multiples of 3"))
		}
		return value(x * 10)
	}))
	g.setView(member("a", 1))
	src := newWindowSource(t, 30, 1<<10)
	j := g.stream(t, context.Background(), src, scheduler.Options{ChunkSize: 30}, src.emitted)
	j.wait(t)
	if j.err != nil {
		t.Fatal(j.err)
	}
	if len(j.results) != 30 || j.stats.Failed != 10 || j.stats.OK != 20 {
		t.Fatalf("%d results, stats %+v", len(j.results), j.stats)
	}
	for _, r := range j.results {
		if r.Index%3 == 0 {
			if !errors.Is(r.Err, rpc.ErrBadArguments) || r.Value != nil {
				t.Fatalf("item %d: %+v", r.Index, r)
			}
		} else if valueOf(t, r) != r.Index*10 {
			t.Fatalf("item %d: %+v", r.Index, r)
		}
	}
}
