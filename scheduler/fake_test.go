package scheduler_test

// The tests in this file run jobs on fakeGrid, an in-process grid of
// programmable nodes, as hashicorp/raft's tests run on its in-memory
// transport: no processes and no TCP, but the same wire types, since every
// call goes through msgpack both ways. A test says how each node answers
// each call, changes the membership with grid.Views, and reads back every
// call a node received: which items, when, and whether its context ended.
//
// Item i of every job carries the single argument i, so the fake sees an
// item's index in its argument.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// fakeFn is the function every fake node offers.
const fakeFn = "times10"

// awaitTimeout bounds every wait for a condition in these tests.
const awaitTimeout = 5 * time.Second

// fakeCall is one shoal.map call the fake grid received.
type fakeCall struct {
	addr     string          // where it was sent
	seq      int             // its number among the calls to addr, from 0
	items    []int           // each item's first argument: its index in the job
	ctx      context.Context // the call's context
	start    time.Time       // when it arrived
	end      time.Time       // when it returned; zero while it runs
	canceled time.Time       // when its context ended while it ran, if it did
	err      error           // what it returned
}

// behavior is how a fake node answers one call: one result per item of c,
// or an error for the whole call.
type behavior func(ctx context.Context, c *fakeCall) ([]itemResult, error)

// fakeNode is one node of a fakeGrid.
type fakeNode struct {
	behave     behavior
	calls      int // calls received
	running    int // calls in flight
	maxRunning int // the most calls it ever had in flight
}

// fakeGrid is a grid.Caller over in-process fake nodes; its members are
// the scheduler.Membership that lists them.
type fakeGrid struct {
	members fakeMembers

	mu       sync.Mutex
	nodes    map[string]*fakeNode // by RPC address
	calls    []*fakeCall          // every call, in the order they arrived
	inflight int                  // calls that have not returned

	stopOnce sync.Once
	stop     chan struct{} // closed when the test ends: held calls return
}

func newFakeGrid() *fakeGrid {
	return &fakeGrid{nodes: make(map[string]*fakeNode), stop: make(chan struct{})}
}

// fakeAddr is the RPC address of the fake node called name.
func fakeAddr(name string) string { return name + ".fake:7373" }

// add adds a node called name that answers as b.
func (g *fakeGrid) add(name string, b behavior) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes[fakeAddr(name)] = &fakeNode{behave: b}
}

// set changes how the node called name answers the calls it receives from
// now on.
func (g *fakeGrid) set(name string, b behavior) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes[fakeAddr(name)].behave = b
}

// Call is grid.Caller's: it serves shoal.map on the fake node at addr, with
// the request and the results passed through msgpack as on the wire. An
// address with no fake node fails to dial.
func (g *fakeGrid) Call(ctx context.Context, addr, method string, result any, args ...any) error {
	if method != grid.MethodMap || len(args) != 1 {
		return rpc.Errorf(rpc.KindUnknownFunction, "fake grid serves %s with one argument, not %s with %d", grid.MethodMap, method, len(args))
	}
	items, err := decodeMapRequest(args[0])
	if err != nil {
		return err
	}
	c := &fakeCall{addr: addr, items: items, ctx: ctx, start: time.Now()}
	g.mu.Lock()
	n := g.nodes[addr]
	var behave behavior
	if n != nil {
		c.seq, behave = n.calls, n.behave
		n.calls++
		n.running++
		n.maxRunning = max(n.maxRunning, n.running)
	}
	g.calls = append(g.calls, c)
	g.inflight++
	g.mu.Unlock()
	stopWatching := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		c.canceled = time.Now()
		g.mu.Unlock()
	})
	defer stopWatching()

	if n == nil {
		err = &rpc.DialError{Addr: addr, Err: errors.New("connection refused")}
	} else {
		var results []itemResult
		if results, err = behave(ctx, c); err == nil {
			err = roundTrip(replyOf(results), result)
		}
	}

	g.mu.Lock()
	c.end, c.err = time.Now(), err
	g.inflight--
	if n != nil {
		n.running--
	}
	g.mu.Unlock()
	return err
}

// itemResult is how a fake node answers one item: a value, or an error in
// the wire form.
type itemResult struct {
	Value msgpack.RawMessage
	Error string
}

// replyOf puts a fake node's answers into the wire form of a chunk.
func replyOf(results []itemResult) *grid.MapReply {
	reply := &grid.MapReply{}
	for k, r := range results {
		if r.Error != "" {
			reply.Errors = append(reply.Errors, grid.ItemError{Index: k, Error: r.Error})
			r.Value = msgpack.RawMessage{0xc0}
		}
		reply.Values.Append(r.Value)
	}
	return reply
}

// decodeMapRequest passes arg through msgpack into a grid.MapRequest and
// returns each item's first argument, decoded as an int.
func decodeMapRequest(arg any) ([]int, error) {
	var req grid.MapRequest
	if err := roundTrip(arg, &req); err != nil {
		return nil, rpc.Errorf(rpc.KindBadArguments, "shoal.map request: %v", err)
	}
	if req.Function != fakeFn {
		return nil, rpc.Errorf(rpc.KindUnknownFunction, "%q", req.Function)
	}
	raws, err := req.Items.Split(nil)
	if err != nil {
		return nil, rpc.Errorf(rpc.KindBadArguments, "shoal.map items: %v", err)
	}
	items := make([]int, len(raws))
	for k, raw := range raws {
		var params []msgpack.RawMessage
		if err := msgpack.Unmarshal(raw, &params); err != nil || len(params) == 0 {
			return nil, rpc.Errorf(rpc.KindBadArguments, "item %d is not an argument array: %v", k, err)
		}
		if err := msgpack.Unmarshal(params[0], &items[k]); err != nil {
			return nil, rpc.Errorf(rpc.KindBadArguments, "item %d: %v", k, err)
		}
	}
	return items, nil
}

// roundTrip encodes v with msgpack and decodes it into out.
func roundTrip(v, out any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return err
	}
	return msgpack.Unmarshal(b, out)
}

// shutdown releases every held call; the test is over.
func (g *fakeGrid) shutdown() { g.stopOnce.Do(func() { close(g.stop) }) }

// callsTo returns copies of the calls sent to the node called name, in the
// order they arrived; all calls when name is "".
func (g *fakeGrid) callsTo(name string) []fakeCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []fakeCall
	for _, c := range g.calls {
		if name == "" || c.addr == fakeAddr(name) {
			out = append(out, *c)
		}
	}
	return out
}

// maxRunning returns the most calls the node called name had in flight.
func (g *fakeGrid) maxRunning(name string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nodes[fakeAddr(name)].maxRunning
}

// inFlight returns the number of calls that have not returned.
func (g *fakeGrid) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight
}

// running returns the calls that have not returned among calls.
func running(calls []fakeCall) []fakeCall {
	var out []fakeCall
	for _, c := range calls {
		if c.end.IsZero() {
			out = append(out, c)
		}
	}
	return out
}

// tries returns the calls among calls that carried item x.
func tries(calls []fakeCall, x int) []fakeCall {
	var out []fakeCall
	for _, c := range calls {
		if slices.Contains(c.items, x) {
			out = append(out, c)
		}
	}
	return out
}

// itemsOf returns the items of calls, in order, with repeats.
func itemsOf(calls []fakeCall) []int {
	var out []int
	for _, c := range calls {
		out = append(out, c.items...)
	}
	return out
}

// Behaviours of fake nodes.

// answer answers every item with f of its argument.
func answer(f func(x int) itemResult) behavior {
	return func(_ context.Context, c *fakeCall) ([]itemResult, error) {
		out := make([]itemResult, len(c.items))
		for k, x := range c.items {
			out[k] = f(x)
		}
		return out, nil
	}
}

// value is a result holding v.
func value(v int) itemResult {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return itemResult{Value: b}
}

// itemError is a result failed with err, in its wire form.
func itemError(err error) itemResult { return itemResult{Error: rpc.ErrorOf(err).Error()} }

// times10 answers every item x with x*10, at once.
var times10 = answer(func(x int) itemResult { return value(x * 10) })

// fail fails every call with err.
func fail(err error) behavior {
	return func(context.Context, *fakeCall) ([]itemResult, error) { return nil, err }
}

// hang answers nothing until the call's context ends, and then returns its
// error, as a client does.
func hang(ctx context.Context, _ *fakeCall) ([]itemResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// after answers as b after d, unless the call's context ends first.
func after(d time.Duration, b behavior) behavior {
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return b(ctx, c)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// slowUntil answers as b after d, or at once once fast is closed, unless
// the call's context ends first.
func slowUntil(d time.Duration, fast <-chan struct{}, b behavior) behavior {
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-fast:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return b(ctx, c)
	}
}

// when answers as b once release is closed, unless the call's context ends
// first.
func when(release <-chan struct{}, b behavior) behavior {
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		select {
		case <-release:
			return b(ctx, c)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// held answers as b once release is closed, whether or not the call's
// context ended meanwhile: a node whose answer was already on its way.
func (g *fakeGrid) held(release <-chan struct{}, b behavior) behavior {
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		select {
		case <-release:
		case <-g.stop:
		}
		return b(ctx, c)
	}
}

// script answers a node's call number k as bs[k], and every later call as
// the last of bs.
func script(bs ...behavior) behavior {
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		return bs[min(c.seq, len(bs)-1)](ctx, c)
	}
}

// Membership.

// fakeMembers is the job's Membership: a grid.Views that remembers which
// views the job read, so that a test knows the job has seen a view.
type fakeMembers struct {
	views grid.Views

	mu   sync.Mutex
	read map[*grid.View]bool
}

func (m *fakeMembers) View() (*grid.View, <-chan struct{}) {
	v, changed := m.views.View()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.read == nil {
		m.read = make(map[*grid.View]bool)
	}
	m.read[v] = true
	return v, changed
}

// hasRead reports whether the job has read v.
func (m *fakeMembers) hasRead(v *grid.View) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.read[v]
}

// member is an alive member called name with slots slots, reached at the
// fake node called name.
func member(name string, slots int) grid.Member {
	return grid.Member{Name: name, RPC: fakeAddr(name), State: grid.StateAlive, Slots: slots}
}

// inState returns m in state.
func inState(m grid.Member, state string) grid.Member {
	m.State = state
	return m
}

// viewOf is a view of members in which every member not gone offers fakeFn.
func viewOf(members ...grid.Member) *grid.View {
	var names []string
	for _, m := range members {
		if !m.Gone() {
			names = append(names, m.Name)
		}
	}
	return grid.NewView(members, []grid.Function{{FunctionInfo: rpc.FunctionInfo{Name: fakeFn}, Nodes: names}})
}

// setView installs a view of members.
func (g *fakeGrid) setView(members ...grid.Member) { g.members.views.Set(viewOf(members...)) }

// install installs v and waits until the job has read it, so that it
// handles v before any later view.
func (g *fakeGrid) install(t *testing.T, v *grid.View) {
	t.Helper()
	g.members.views.Set(v)
	testutil.WaitFor(t, awaitTimeout, "the job to read the new view", func() bool { return g.members.hasRead(v) })
}

// Jobs.

// fakeJob is a job running on a fakeGrid.
type fakeJob struct {
	cancel    context.CancelFunc
	done      chan struct{} // closed when Run returned
	delivered atomic.Int64  // results emitted so far

	// Set by the job's goroutine; read them after done is closed.
	seen     []int // results emitted per item
	results  []scheduler.Result
	stats    scheduler.Stats
	err      error
	returned time.Time
}

// start runs a job of n items on g, the item i carrying the argument i.
// When the test ends the job is canceled, held calls are released, and Run
// must have returned.
func (g *fakeGrid) start(t *testing.T, ctx context.Context, n int, opts scheduler.Options) *fakeJob {
	t.Helper()
	items := make([]msgpack.RawMessage, n)
	for i := range items {
		b, err := msgpack.Marshal([]any{i})
		if err != nil {
			t.Fatal(err)
		}
		items[i] = b
	}
	ctx, cancel := context.WithCancel(ctx)
	j := &fakeJob{cancel: cancel, done: make(chan struct{}), seen: make([]int, n), results: make([]scheduler.Result, n)}
	go func() {
		defer close(j.done)
		j.stats, j.err = scheduler.Run(ctx, scheduler.Grid{Caller: g, Members: &g.members}, fakeFn, scheduler.Encoded(items), opts, each(func(r scheduler.Result) {
			j.seen[r.Index]++
			j.results[r.Index] = r
			j.delivered.Add(1)
		}))
		j.returned = time.Now()
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

// each makes an emit function of a function of one result.
func each(f func(scheduler.Result)) func([]scheduler.Result) {
	return func(batch []scheduler.Result) {
		for _, r := range batch {
			f(r)
		}
	}
}

// wait waits for Run to return and checks that it delivered every item
// exactly once: never twice, and never not at all unless Run failed (a
// canceled job, or one no node can run, leaves items undelivered).
func (j *fakeJob) wait(t *testing.T) ([]scheduler.Result, scheduler.Stats, error) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run has not returned after 10s")
	}
	for i, k := range j.seen {
		if k > 1 {
			t.Errorf("item %d delivered %d times", i, k)
		}
		if k == 0 && j.err == nil {
			t.Errorf("item %d never delivered", i)
		}
	}
	if j.err == nil && j.stats.OK+j.stats.Failed != len(j.seen) {
		t.Errorf("stats count %d OK and %d failed for %d items", j.stats.OK, j.stats.Failed, len(j.seen))
	}
	return j.results, j.stats, j.err
}

// run runs a job of n items on g and waits for it (see start and wait).
func (g *fakeGrid) run(t *testing.T, ctx context.Context, n int, opts scheduler.Options) ([]scheduler.Result, scheduler.Stats, error) {
	t.Helper()
	return g.start(t, ctx, n, opts).wait(t)
}

// valueOf decodes r's value as an int; r must have succeeded.
func valueOf(t *testing.T, r scheduler.Result) int {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("item %d failed on %q after %d attempts: %v", r.Index, r.Node, r.Attempts, r.Err)
	}
	var v int
	if err := msgpack.Unmarshal(r.Value, &v); err != nil {
		t.Fatalf("item %d: %v", r.Index, err)
	}
	return v
}

// checkTimes10 checks that every item i succeeded with i*10.
func checkTimes10(t *testing.T, results []scheduler.Result) {
	t.Helper()
	for i, r := range results {
		if r.Index != i {
			t.Fatalf("results[%d] is item %d", i, r.Index)
		}
		if v := valueOf(t, r); v != i*10 {
			t.Fatalf("item %d = %d from %q, want %d", i, v, r.Node, i*10)
		}
	}
}

// The tests.

// TestFakeHappyPath pins down a job with nothing going wrong: every item's
// value, indexed by item, computed once, work spread over every node, and
// no node given more calls at once than ChunksPerSlot per slot.
func TestFakeHappyPath(t *testing.T) {
	g := newFakeGrid()
	names := []string{"a", "b", "c"}
	for _, name := range names {
		g.add(name, after(time.Millisecond, times10))
	}
	g.setView(member("a", 2), member("b", 2), member("c", 2))
	const n = 300
	results, st, err := g.run(t, context.Background(), n, scheduler.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTimes10(t, results)
	total := 0
	for _, name := range names {
		if st.PerNode[name] == 0 {
			t.Errorf("node %s computed nothing: %v", name, st.PerNode)
		}
		if got := g.maxRunning(name); got > 2*2 {
			t.Errorf("node %s had %d calls at once, more than 2 slots x 2 chunks", name, got)
		}
		total += st.PerNode[name]
	}
	if st.Items != n || st.OK != n || st.Failed != 0 || st.Retries != 0 || total != n {
		t.Errorf("stats %+v", st)
	}
	if sent := itemsOf(g.callsTo("")); len(sent) != n {
		t.Errorf("%d items sent for %d items without failures", len(sent), n)
	}
	for i, r := range results {
		if !slices.Contains(names, r.Node) || r.Attempts != 1 {
			t.Fatalf("item %d: node %q, %d attempts", i, r.Node, r.Attempts)
		}
	}
}

// TestFakeBreakerOpensAndProbes pins down the breaker: after three failed
// chunks in a row a node gets no calls for BreakerCooldown; then one chunk
// of one item probes it; a failed probe opens the breaker for another
// cooldown; a successful one closes it and full chunks go there again.
func TestFakeBreakerOpensAndProbes(t *testing.T) {
	const cooldown = 200 * time.Millisecond
	const chunk = 4
	g := newFakeGrid()
	unavailable := fail(rpc.Errorf(rpc.KindUnavailable, "draining"))
	// Three failures, a failed probe, then it is well again.
	g.add("bad", script(unavailable, unavailable, unavailable, unavailable, times10))
	// The healthy nodes keep the job going until the test has seen it all.
	fast := make(chan struct{})
	g.add("good1", slowUntil(10*time.Millisecond, fast, times10))
	g.add("good2", slowUntil(10*time.Millisecond, fast, times10))
	g.setView(member("bad", 1), member("good1", 1), member("good2", 1))

	const n = 2000
	j := g.start(t, context.Background(), n, scheduler.Options{ChunkSize: chunk, ChunksPerSlot: 1, BreakerCooldown: cooldown})
	testutil.WaitFor(t, awaitTimeout, "six calls to bad to return", func() bool {
		calls := g.callsTo("bad")
		return len(calls) >= 6 && !calls[5].end.IsZero()
	})
	close(fast)
	results, st, err := j.wait(t)
	if err != nil {
		t.Fatal(err)
	}
	checkTimes10(t, results)

	calls := g.callsTo("bad")
	for k := 1; k < len(calls); k++ {
		if calls[k].start.Before(calls[k-1].end) {
			t.Fatalf("bad had calls %d and %d at once with one chunk per slot", k-1, k)
		}
	}
	for k := 0; k < 3; k++ {
		if calls[k].err == nil || len(calls[k].items) != chunk {
			t.Errorf("call %d to bad: %d items, error %v; want a full chunk that failed", k, len(calls[k].items), calls[k].err)
		}
	}
	steps := []struct {
		what   string
		k      int  // the call
		gap    bool // it must wait a cooldown after the call before
		items  int
		failed bool
	}{
		{what: "first probe, which fails", k: 3, gap: true, items: 1, failed: true},
		{what: "second probe, which succeeds", k: 4, gap: true, items: 1},
		{what: "first call after the breaker closed", k: 5, items: chunk},
	}
	for _, s := range steps {
		c := calls[s.k]
		gap := c.start.Sub(calls[s.k-1].end)
		t.Logf("%s: %d items, %v after the call before", s.what, len(c.items), gap)
		if s.gap && gap < cooldown {
			t.Errorf("%s came %v after the failure before, within the %v cooldown", s.what, gap, cooldown)
		}
		if s.gap && gap > cooldown+250*time.Millisecond {
			t.Errorf("%s came %v after the failure before: the cooldown is %v", s.what, gap, cooldown)
		}
		if len(c.items) != s.items || (c.err != nil) != s.failed {
			t.Errorf("%s: %d items, error %v; want %d items, failed %v", s.what, len(c.items), c.err, s.items, s.failed)
		}
	}
	var computed int
	for _, c := range calls {
		if c.err == nil {
			computed += len(c.items)
		}
	}
	if st.PerNode["bad"] != computed {
		t.Errorf("bad computed %d items, stats say %d", computed, st.PerNode["bad"])
	}
}

// TestFakeRetryBackoff pins down retries, on the only node or on two: an
// item that fails for a retryable reason is tried again after a backoff of 20ms,
// then 40ms, each with jitter of 0.5 to 1.5, up to Attempts tries, and is
// then delivered with its error; Stats.Retries counts the tries beyond the
// first. A function's own error is delivered at once unless
// RetryFunctionErrors.
func TestFakeRetryBackoff(t *testing.T) {
	cases := []struct {
		name    string
		items   int
		behave  behavior
		opts    scheduler.Options
		tries   int
		wantErr error
	}{
		{
			name:  "overloaded item",
			items: 20, behave: answer(func(int) itemResult { return itemError(rpc.Errorf(rpc.KindOverloaded, "busy")) }),
			tries: 3, wantErr: rpc.ErrOverloaded,
		},
		{
			name:  "overloaded item, five attempts",
			items: 20, behave: answer(func(int) itemResult { return itemError(rpc.Errorf(rpc.KindOverloaded, "busy")) }),
			opts:  scheduler.Options{Attempts: 5},
			tries: 5, wantErr: rpc.ErrOverloaded,
		},
		{
			name:  "unavailable node",
			items: 1, behave: fail(rpc.Errorf(rpc.KindUnavailable, "draining")),
			tries: 3, wantErr: rpc.ErrUnavailable,
		},
		{
			name:  "broken connection",
			items: 1, behave: fail(&rpc.ConnError{Addr: fakeAddr("only"), Err: io.EOF}),
			tries: 3, wantErr: rpc.ErrUnavailable,
		},
		{
			name:  "function error",
			items: 20, behave: answer(func(x int) itemResult { return itemError(fmt.Errorf("boom %d", x)) }),
			tries: 1, wantErr: rpc.ErrFunctionError,
		},
		{
			name:  "function error, RetryFunctionErrors",
			items: 20, behave: answer(func(x int) itemResult { return itemError(fmt.Errorf("boom %d", x)) }),
			opts:  scheduler.Options{RetryFunctionErrors: true},
			tries: 3, wantErr: rpc.ErrFunctionError,
		},
	}
	// The tries of an item go to the only node, or alternate between two.
	grids := []struct {
		name  string
		nodes []string
	}{
		{"one node", []string{"only"}},
		{"two nodes", []string{"a", "b"}},
	}
	for _, tc := range cases {
		for _, gr := range grids {
			t.Run(tc.name+"/"+gr.name, func(t *testing.T) {
				g := newFakeGrid()
				var members []grid.Member
				for _, name := range gr.nodes {
					g.add(name, tc.behave)
					members = append(members, member(name, tc.items))
				}
				g.setView(members...)
				opts := tc.opts
				opts.ChunkSize = 1 // each item's tries are calls of their own
				// Five tries back off 450ms at most.
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				results, st, err := g.run(t, ctx, tc.items, opts)
				calls := g.callsTo("")
				if err != nil {
					tr := tries(calls, 0)
					t.Fatalf("Run: %v; item 0 was sent %d times, last to %s, and not tried again", err, len(tr), tr[len(tr)-1].addr)
				}
				gaps := make([][]time.Duration, tc.tries) // gaps[k]: before try k+1, per item
				for i, r := range results {
					tr := tries(calls, i)
					if len(tr) != tc.tries {
						t.Fatalf("item %d was sent %d times, want %d", i, len(tr), tc.tries)
					}
					if !errors.Is(r.Err, tc.wantErr) || r.Attempts != tc.tries || fakeAddr(r.Node) != tr[len(tr)-1].addr {
						t.Errorf("item %d: error %v after %d attempts on %q; want %v after %d on %s", i, r.Err, r.Attempts, r.Node, tc.wantErr, tc.tries, tr[len(tr)-1].addr)
					}
					for k := 1; k < len(tr); k++ {
						gap := tr[k].start.Sub(tr[k-1].end)
						gaps[k] = append(gaps[k], gap)
						if least := (20 * time.Millisecond << (k - 1)) / 2; gap < least {
							t.Errorf("item %d: try %d came %v after try %d failed, want at least %v", i, k+1, gap, k, least)
						}
					}
				}
				for k := 1; k < tc.tries; k++ {
					var sum time.Duration
					for _, gap := range gaps[k] {
						sum += gap
					}
					t.Logf("gap before try %d: min %v, mean %v, max %v", k+1, slices.Min(gaps[k]), sum/time.Duration(len(gaps[k])), slices.Max(gaps[k]))
					// The backoff grows: among many items some waited longer
					// before this try than any may wait before the one
					// before. (A stalled machine only makes gaps longer.)
					if k < 2 || tc.items < 10 {
						continue
					}
					if longest := 3 * (20 * time.Millisecond << (k - 2)) / 2; slices.Max(gaps[k]) < longest {
						t.Errorf("no item waited longer than %v before try %d: the backoff did not grow", longest, k+1)
					}
				}
				if st.Retries != tc.items*(tc.tries-1) || st.Failed != tc.items || st.OK != 0 {
					t.Errorf("stats %+v; want %d retries", st, tc.items*(tc.tries-1))
				}
			})
		}
	}
}

// firstTriesFail answers every item x with x*10, except that the first
// time any node of the grid sees an item it fails as overloaded. Give the
// same one to several nodes.
func firstTriesFail() behavior {
	var mu sync.Mutex
	tried := make(map[int]bool)
	return answer(func(x int) itemResult {
		mu.Lock()
		defer mu.Unlock()
		if !tried[x] {
			tried[x] = true
			return itemError(rpc.Errorf(rpc.KindOverloaded, "busy"))
		}
		return value(x * 10)
	})
}

// TestFakeRetryAvoidsFailedNode pins down where retries go: an item that
// failed on a node is retried on another node when one has room; here
// every node has room for every chunk of the job, always.
func TestFakeRetryAvoidsFailedNode(t *testing.T) {
	cases := []struct {
		name  string
		nodes func() (a, b behavior)
	}{
		{"one node fails every item", func() (behavior, behavior) {
			overloaded := answer(func(int) itemResult { return itemError(rpc.Errorf(rpc.KindOverloaded, "busy")) })
			return overloaded, after(2*time.Millisecond, times10)
		}},
		// The retries of items failed on a and of items failed on b queue
		// up together.
		{"every node fails first tries", func() (behavior, behavior) {
			b := firstTriesFail()
			return b, b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			a, b := tc.nodes()
			g.add("a", a)
			g.add("b", b)
			const n = 200
			g.setView(member("a", n), member("b", n)) // room for every chunk on each
			results, _, err := g.run(t, context.Background(), n, scheduler.Options{ChunkSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			calls := g.callsTo("")
			var again []string
			for i := range n {
				tr := tries(calls, i)
				for k := 1; k < len(tr); k++ {
					if tr[k].addr == tr[k-1].addr {
						again = append(again, fmt.Sprintf("item %d (call %d of %s with items %v)", i, tr[k].seq, tr[k].addr, tr[k].items))
					}
				}
			}
			if len(again) > 0 {
				t.Errorf("%d items retried on the node they failed on while the other had room, e.g. %v", len(again), again[:min(len(again), 3)])
			}
			checkTimes10(t, results)
		})
	}
}

// TestFakeRerouteOnNodeLoss pins down what happens to a node's chunks in
// flight when a newer view shows it gone, whether dead, left, no longer
// listed, or dead after being suspect: they go to another node at once
// (already when it turns suspect), the gone node's calls are canceled, and
// its late answers are ignored.
func TestFakeRerouteOnNodeLoss(t *testing.T) {
	a, b := member("a", 1), member("b", 1)
	cases := []struct {
		name  string
		views []*grid.View // installed one after another, the last showing a gone
	}{
		{"dead", []*grid.View{viewOf(inState(a, grid.StateDead), b)}},
		{"left", []*grid.View{viewOf(inState(a, grid.StateLeft), b)}},
		{"absent", []*grid.View{viewOf(b)}},
		{"alive, suspect, dead", []*grid.View{viewOf(inState(a, grid.StateSuspect), b), viewOf(inState(a, grid.StateDead), b)}},
		{"alive, suspect, absent", []*grid.View{viewOf(inState(a, grid.StateSuspect), b), viewOf(b)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			releaseA, releaseB := make(chan struct{}), make(chan struct{})
			// a holds its calls; when released it answers them, canceled or
			// not, with values the job must not use.
			g.add("a", g.held(releaseA, answer(func(x int) itemResult { return value(x*10 + 1) })))
			g.add("b", times10)
			g.setView(a, b)
			const n, chunk = 40, 2
			j := g.start(t, context.Background(), n, scheduler.Options{ChunkSize: chunk})
			testutil.WaitFor(t, awaitTimeout, "a to hold two chunks and b to finish the rest", func() bool {
				return len(running(g.callsTo("a"))) == 2 && j.delivered.Load() == n-2*chunk
			})
			held := itemsOf(g.callsTo("a"))
			g.set("b", when(releaseB, times10)) // b keeps what it gets until a has answered

			gone := time.Now() // the first view showing a not alive
			for _, v := range tc.views {
				g.install(t, v)
			}
			testutil.WaitFor(t, awaitTimeout, "a's items to be sent to b", func() bool {
				return len(itemsOf(running(g.callsTo("b")))) == len(held)
			})
			var rerouted time.Time
			for _, c := range running(g.callsTo("b")) {
				if c.start.Before(gone) {
					t.Errorf("b got items %v %v before the view showing a not alive", c.items, gone.Sub(c.start))
				}
				if c.start.After(rerouted) {
					rerouted = c.start
				}
			}
			if got := itemsOf(running(g.callsTo("b"))); !sameItems(got, held) {
				t.Fatalf("b got %v, a held %v", got, held)
			}
			testutil.WaitFor(t, awaitTimeout, "a's calls to be canceled", func() bool {
				for _, c := range g.callsTo("a") {
					if c.canceled.IsZero() {
						return false
					}
				}
				return true
			})
			var canceled time.Time
			for _, c := range g.callsTo("a") {
				if c.canceled.After(canceled) {
					canceled = c.canceled
				}
			}
			t.Logf("a's items %v reached b %v after the view, a's calls canceled after %v", held, rerouted.Sub(gone), canceled.Sub(gone))
			if d := rerouted.Sub(gone); d > 250*time.Millisecond {
				t.Errorf("a's items reached b %v after a was gone", d)
			}

			close(releaseA) // a's late answers
			testutil.WaitFor(t, awaitTimeout, "a to answer", func() bool { return len(running(g.callsTo("a"))) == 0 })
			close(releaseB)
			results, st, err := j.wait(t)
			if err != nil {
				t.Fatal(err)
			}
			checkTimes10(t, results)
			for _, i := range held {
				if r := results[i]; r.Node != "b" {
					t.Errorf("item %d, held by a, delivered from %q", i, r.Node)
				}
			}
			if st.PerNode["a"] != 0 || st.OK != n {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// sameItems reports whether x and y hold the same items, in any order.
func sameItems(x, y []int) bool {
	x, y = slices.Clone(x), slices.Clone(y)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// slowFirst answers as b, but the first call carrying item x answers only
// after d (or when its context ends).
func slowFirst(x int, d time.Duration, b behavior) behavior {
	var once sync.Once
	return func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
		slow := false
		if slices.Contains(c.items, x) {
			once.Do(func() { slow = true })
		}
		if slow {
			return after(d, b)(ctx, c)
		}
		return b(ctx, c)
	}
}

// TestFakeHedge pins down hedging: with Hedge, a chunk still running on a
// slow node at the tail of the job is re-issued to an idle node and the
// first answer wins; each item is still delivered once, also when both
// copies answer.
func TestFakeHedge(t *testing.T) {
	// A node that stalls from the start: its chunks are the oldest at the
	// tail, and the healthy node takes them over.
	t.Run("stalled node", func(t *testing.T) {
		g := newFakeGrid()
		g.add("fast", after(10*time.Millisecond, times10))
		g.add("stalled", hang)
		g.setView(member("fast", 1), member("stalled", 1))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		results, st, err := g.run(t, ctx, 10, scheduler.Options{ChunkSize: 1, Hedge: true})
		if err != nil {
			t.Fatalf("the job did not finish without the stalled node: %v", err)
		}
		checkTimes10(t, results)
		stalled := itemsOf(g.callsTo("stalled"))
		for _, i := range stalled {
			if results[i].Node != "fast" {
				t.Errorf("item %d from %q", i, results[i].Node)
			}
		}
		if st.Reissued != len(stalled) || st.PerNode["stalled"] != 0 {
			t.Errorf("stats %+v; want %d re-issued", st, len(stalled))
		}
		for _, c := range g.callsTo("stalled") {
			if c.ctx.Err() == nil {
				t.Errorf("the losing call with %v still runs", c.items)
			}
		}
		t.Logf("stalled node held %v; job took %v, stats %+v", stalled, st.Wall, st)
	})

	// Every item takes 25ms, but the first call carrying the last item
	// takes 800ms: it is the only chunk left at the tail, and the other
	// node idles.
	t.Run("slow chunk at the tail", func(t *testing.T) {
		const slow = 800 * time.Millisecond
		g := newFakeGrid()
		const n = 8
		b := slowFirst(n-1, slow, after(25*time.Millisecond, times10))
		g.add("a", b)
		g.add("b", b)
		g.setView(member("a", 1), member("b", 1))
		results, st, err := g.run(t, context.Background(), n, scheduler.Options{ChunkSize: 1, Hedge: true})
		if err != nil {
			t.Fatal(err)
		}
		checkTimes10(t, results)
		t.Logf("job took %v, stats %+v", st.Wall, st)
		if st.Reissued == 0 || st.Wall > slow/2 {
			t.Errorf("the slow chunk at the tail was not re-issued to the idle node: %d re-issued, and the job took %v, waiting for the one call of %v", st.Reissued, st.Wall, slow)
		}
	})

	// The slow node answers right after its chunk was re-issued, and the
	// copy answers too: the first answer wins and the other is dropped.
	t.Run("both copies answer", func(t *testing.T) {
		g := newFakeGrid()
		release := make(chan struct{})
		g.add("fast", func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
			time.Sleep(10 * time.Millisecond) // works on, and answers, even when canceled
			return times10(ctx, c)
		})
		g.add("slow", g.held(release, times10))
		g.setView(member("fast", 1), member("slow", 1))
		j := g.start(t, context.Background(), 10, scheduler.Options{ChunkSize: 1, Hedge: true})
		testutil.WaitFor(t, awaitTimeout, "a chunk of slow to be re-issued", func() bool {
			for _, x := range itemsOf(g.callsTo("slow")) {
				if len(tries(g.callsTo("fast"), x)) > 0 {
					return true
				}
			}
			return false
		})
		close(release)
		results, st, err := j.wait(t)
		if err != nil {
			t.Fatal(err)
		}
		checkTimes10(t, results)
		if st.Reissued == 0 {
			t.Errorf("stats %+v", st)
		}
		for _, c := range g.callsTo("") {
			if c.err != nil {
				t.Errorf("call to %s with %v failed: %v", c.addr, c.items, c.err)
			}
		}
		t.Logf("stats %+v", st)
	})
}

// TestFakeNoNodeOffersFunction pins down a job that no live node can run:
// Run returns an UnknownFunction error at once and sends nothing.
func TestFakeNoNodeOffersFunction(t *testing.T) {
	other := func(members ...grid.Member) *grid.View {
		return grid.NewView(members, []grid.Function{{FunctionInfo: rpc.FunctionInfo{Name: "other"}, Nodes: []string{"a"}}})
	}
	cases := []struct {
		name string
		view *grid.View
	}{
		{"empty view", grid.NewView(nil, nil)},
		{"offers another function", other(member("a", 1))},
		{"offering node dead", viewOf(inState(member("a", 1), grid.StateDead))},
		{"offering node suspect", viewOf(inState(member("a", 1), grid.StateSuspect))},
		{"offering node has no slots", viewOf(member("a", 0))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			g.add("a", times10)
			g.members.views.Set(tc.view)
			start := time.Now()
			_, _, err := g.run(t, context.Background(), 5, scheduler.Options{})
			if !errors.Is(err, rpc.ErrUnknownFunction) || time.Since(start) > 500*time.Millisecond {
				t.Errorf("Run: %v after %v; want an UnknownFunction error at once", err, time.Since(start))
			}
			if calls := g.callsTo(""); len(calls) != 0 {
				t.Errorf("%d calls sent", len(calls))
			}
		})
	}
}

// TestFakeEveryOfferingNodeGoes pins down a job whose every node goes away
// while holding its chunks: Run ends with an UnknownFunction error instead
// of waiting.
func TestFakeEveryOfferingNodeGoes(t *testing.T) {
	a, b := member("a", 1), member("b", 1)
	cases := []struct {
		name string
		view *grid.View
	}{
		{"all dead", viewOf(inState(a, grid.StateDead), inState(b, grid.StateDead))},
		{"all absent", viewOf()},
		{"one dead, one left", viewOf(inState(a, grid.StateDead), inState(b, grid.StateLeft))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			g.add("a", hang)
			g.add("b", hang)
			g.setView(a, b)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			j := g.start(t, ctx, 20, scheduler.Options{})
			testutil.WaitFor(t, awaitTimeout, "both nodes to hold chunks", func() bool {
				return len(running(g.callsTo("a"))) > 0 && len(running(g.callsTo("b"))) > 0
			})
			gone := time.Now()
			g.members.views.Set(tc.view)
			_, _, err := j.wait(t)
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Run waited for its deadline after every node went: %v", err)
			}
			if !errors.Is(err, rpc.ErrUnknownFunction) {
				t.Fatalf("Run: %v; want an UnknownFunction error", err)
			}
			t.Logf("Run returned %v after the nodes went: %v", j.returned.Sub(gone), err)
			if d := j.returned.Sub(gone); d > time.Second {
				t.Errorf("Run returned %v after the nodes went", d)
			}
			if k := g.inFlight(); k != 0 {
				t.Errorf("%d calls in flight after Run returned", k)
			}
		})
	}
}

// TestFakeCancel pins down canceling a job: Run returns context.Canceled
// promptly, and only once every call it made has returned, each with its
// context ended.
func TestFakeCancel(t *testing.T) {
	testutil.CheckGoroutines(t)
	g := newFakeGrid()
	g.add("a", hang)
	g.add("b", after(5*time.Millisecond, times10))
	g.setView(member("a", 1), member("b", 2))
	const n = 200
	j := g.start(t, context.Background(), n, scheduler.Options{ChunkSize: 1})
	testutil.WaitFor(t, awaitTimeout, "a to hold chunks and b to answer some", func() bool {
		return len(running(g.callsTo("a"))) == 2 && j.delivered.Load() > 0
	})
	canceled := time.Now()
	j.cancel()
	_, _, err := j.wait(t)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v; want context.Canceled", err)
	}
	t.Logf("Run returned %v after the cancel, %d of %d items delivered", j.returned.Sub(canceled), j.delivered.Load(), n)
	if d := j.returned.Sub(canceled); d > time.Second {
		t.Errorf("Run returned %v after the cancel", d)
	}
	if k := g.inFlight(); k != 0 {
		t.Errorf("%d calls in flight after Run returned", k)
	}
	for _, c := range g.callsTo("") {
		if c.ctx.Err() == nil {
			t.Errorf("the context of the call to %s with %v has not ended", c.addr, c.items)
		}
	}
}

// TestFakeFailedCallsAreRetriedElsewhere pins down a node whose calls
// fail, however they fail (a node refusing work, a broken connection, an
// address nobody listens on, an answer with the wrong number of results):
// each failure counts against its breaker, which opens after three, and
// its items are computed by another node.
func TestFakeFailedCallsAreRetriedElsewhere(t *testing.T) {
	cases := []struct {
		name   string
		behave behavior // nil: no node listens at a's address
	}{
		{"unavailable", fail(rpc.Errorf(rpc.KindUnavailable, "draining"))},
		{"overloaded", fail(rpc.Errorf(rpc.KindOverloaded, "queue full"))},
		{"broken connection", fail(&rpc.ConnError{Addr: fakeAddr("a"), Err: io.EOF})},
		{"unreachable", nil},
		{"one result too few", func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
			out, err := times10(ctx, c)
			return out[:len(out)-1], err
		}},
		{"one result too many", func(ctx context.Context, c *fakeCall) ([]itemResult, error) {
			out, err := times10(ctx, c)
			return append(out, value(-1)), err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGrid()
			if tc.behave != nil {
				g.add("a", tc.behave)
			}
			g.add("b", after(5*time.Millisecond, times10))
			g.setView(member("a", 1), member("b", 4))
			const n = 80
			results, st, err := g.run(t, context.Background(), n, scheduler.Options{ChunkSize: 2, ChunksPerSlot: 1})
			if err != nil {
				t.Fatal(err)
			}
			checkTimes10(t, results)
			calls := g.callsTo("a")
			// The default cooldown of 2s outlasts the job.
			if len(calls) != 3 {
				t.Errorf("a got %d calls; want 3, then none while its breaker is open", len(calls))
			}
			for _, i := range itemsOf(calls) {
				if r := results[i]; r.Node != "b" || r.Attempts < 2 {
					t.Errorf("item %d, sent to a, delivered from %q after %d attempts", i, r.Node, r.Attempts)
				}
			}
			if st.PerNode["a"] != 0 || st.Retries < len(itemsOf(calls)) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestFakeNoSpinWhileAProbeRuns pins down the loop's sleep: while the one
// probe of a half-open breaker runs and items wait for it, nothing can be
// sent, so the job's loop must wait for news instead of turning (it once
// woke at the breaker's past reopening time, again and again, burning a
// core for as long as the probe ran).
func TestFakeNoSpinWhileAProbeRuns(t *testing.T) {
	g := newFakeGrid()
	unavailable := fail(rpc.Errorf(rpc.KindUnavailable, "draining"))
	release := make(chan struct{})
	g.add("only", script(unavailable, unavailable, unavailable, when(release, times10), times10))
	g.setView(member("only", 1))
	turns, stop := scheduler.CountTurns()
	j := g.start(t, context.Background(), 20, scheduler.Options{ChunkSize: 4, ChunksPerSlot: 1, BreakerCooldown: 20 * time.Millisecond})
	testutil.WaitFor(t, awaitTimeout, "the probe to be sent", func() bool { return len(g.callsTo("only")) == 4 })
	before := turns()
	// Long enough for a spinning loop to turn many thousand times.
	select {
	case <-j.done:
		t.Fatal("the job ended while its probe was held")
	case <-time.After(300 * time.Millisecond):
	}
	during := turns() - before
	close(release)
	results, _, err := j.wait(t)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	checkTimes10(t, results)
	if during > 20 {
		t.Fatalf("the job's loop turned %d times in 300ms while waiting for its probe", during)
	}
	t.Logf("%d turns while the probe ran", during)
}

// TestFakeItemErrorOnAHedgeWaitsForTheOriginal pins down hedging with
// per-item errors: when the hedge copy of a chunk answers an item with a
// retryable error while the original copy still runs, the original answers
// for it; the item is neither failed nor sent a third time.
func TestFakeItemErrorOnAHedgeWaitsForTheOriginal(t *testing.T) {
	g := newFakeGrid()
	release := make(chan struct{})
	// slow holds its chunk until released, then answers well; quick
	// answers its own chunk, then times out every item of the hedge.
	timedOut := answer(func(x int) itemResult { return itemError(rpc.Errorf(rpc.KindTimeout, "item timed out")) })
	g.add("slow", when(release, times10))
	g.add("quick", script(times10, timedOut))
	g.setView(member("slow", 1), member("quick", 1))
	j := g.start(t, context.Background(), 2, scheduler.Options{ChunkSize: 1, ChunksPerSlot: 1, Hedge: true, Attempts: 1})
	testutil.WaitFor(t, awaitTimeout, "the hedge of slow's chunk to be answered", func() bool {
		calls := g.callsTo("quick")
		return len(calls) >= 2 && !calls[1].end.IsZero()
	})
	close(release)
	results, st, err := j.wait(t)
	if err != nil {
		t.Fatal(err)
	}
	checkTimes10(t, results)
	if st.Reissued == 0 {
		t.Fatal("nothing was hedged")
	}
	sent := 0
	for _, c := range append(g.callsTo("slow"), g.callsTo("quick")...) {
		sent += len(c.items)
	}
	if sent != 3 {
		t.Fatalf("%d items sent for 2 items and one hedge, want 3", sent)
	}
}
