package scheduler

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/breaker"
	"github.com/shoalgrid/shoal/rpc"
)

// Membership tells a job who is in the grid. *grid.Views is one.
type Membership interface {
	// View returns the latest view of the grid and a channel that is
	// closed once a newer view replaces it (nil if none ever will).
	View() (*grid.View, <-chan struct{})
}

// Grid is what a job runs on: how to reach the nodes and who they are.
type Grid struct {
	Caller  grid.Caller // calls shoal.map on a node; *rpc.Pool is one
	Members Membership  // the members and what they offer, as they change
}

// Options tune a job. The zero value is a sensible default.
type Options struct {
	// ChunkSize fixes how many items travel in one shoal.map call, up to
	// grid.MaxChunkItems (a node refuses more); zero sizes chunks from the
	// measured cost of an item.
	ChunkSize int
	// Attempts bounds how often an item is tried, the first try included.
	// Default: 3.
	Attempts int
	// RetryFunctionErrors retries items whose function returned an error;
	// by default only lost nodes, broken connections, timeouts and
	// overloaded nodes are retried.
	RetryFunctionErrors bool
	// ItemTimeout bounds each item on the node; the function's context
	// ends there. Zero means none. It also lengthens how long a call may
	// go unanswered (see MinCallTimeout): never less than the node may
	// spend on the call's items.
	ItemTimeout time.Duration
	// Hedge re-issues the slowest chunks at the tail of the job to idle
	// nodes; the first answer wins.
	Hedge bool
	// Cache, when set, is asked for each window of items before they are
	// sent, under keys made from the function's name, Version and each
	// item's arguments (cache.KeyFromParams): hits are delivered at once,
	// only misses are sent. A cache problem is a miss, never a failure.
	Cache cache.Cache
	// Version of the function, for cache keys.
	Version string
	// ChunksPerSlot bounds the chunks in flight on a node per slot it
	// has. Default: 2.
	ChunksPerSlot int
	// BreakerCooldown is how long a node that failed three chunks in a row
	// gets no work before one chunk probes it. Default: 2s.
	BreakerCooldown time.Duration
	// MinCallTimeout is the least time a shoal.map call gets before it is
	// given up as lost and its items are retried as after a Timeout: a
	// node that is frozen or cut off answers nothing, and the grid may
	// never declare it dead in the job's view. A call's time is ten times
	// what its items are expected to take, measured from the calls
	// answered so far, doubled on each retry, and, with ItemTimeout, at
	// least MinCallTimeout plus ChunksPerSlot times ItemTimeout per item.
	// Until a call has been answered and without ItemTimeout, nothing
	// tells a slow item from a lost call, and calls get no time limit.
	// Default: 5s.
	MinCallTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.ChunksPerSlot <= 0 {
		o.ChunksPerSlot = 2
	}
	if o.BreakerCooldown <= 0 {
		o.BreakerCooldown = 2 * time.Second
	}
	if o.MinCallTimeout <= 0 {
		o.MinCallTimeout = 5 * time.Second
	}
	return o
}

// Result is the outcome of one item.
type Result struct {
	Index    int
	Value    msgpack.RawMessage // the encoded result, when Err is nil
	Err      error
	Cached   bool
	Node     string // the node that computed it
	Attempts int
}

// Stats describes a finished job.
type Stats struct {
	Items    int
	OK       int
	Failed   int
	Cached   int
	Retries  int            // attempts beyond each item's first
	Reissued int            // chunks re-issued as hedges: at the tail, or off a suspect node
	PerNode  map[string]int // items completed by each node
	Wall     time.Duration
}

// turnHook, when set (by tests only), is called at each turn of a job's
// loop.
var turnHook func()

const (
	breakerThreshold = 3
	targetChunkTime  = 20 * time.Millisecond
	maxChunk         = 4096
	backoffBase      = 20 * time.Millisecond
	// callSlack is how many times its expected time a call may take
	// before it is given up as lost.
	callSlack = 10
	// maxCallDoublings bounds how often retries double a call's time.
	maxCallDoublings = 4
)

// Run applies fn to every item (each the msgpack encoding of an argument
// array) across g and calls emit once per item, as results arrive, from
// one goroutine. It returns when every item has a result, with an
// UnknownFunction error at once if no live node offers fn, or with ctx's
// error after canceling the work on the nodes.
func Run(ctx context.Context, g Grid, fn string, items []msgpack.RawMessage, opts Options, emit func(Result)) (Stats, error) {
	j := &job{
		grid:     g,
		stub:     grid.Stub{Caller: g.Caller},
		fn:       fn,
		items:    items,
		state:    make([]itemState, len(items)),
		opts:     opts.withDefaults(),
		emit:     emit,
		start:    time.Now(),
		inflight: make(map[int]*chunk),
		busy:     make(map[string]int),
		breakers: make(map[string]*breaker.Breaker),
		done:     make(chan chunkDone),
		stats:    Stats{Items: len(items), PerNode: make(map[string]int)},
	}
	for i := range items {
		j.pending = append(j.pending, i)
	}
	return j.run(ctx)
}

type job struct {
	grid  Grid
	stub  grid.Stub
	fn    string
	items []msgpack.RawMessage
	state []itemState
	opts  Options
	emit  func(Result)
	start time.Time

	view      *grid.View      // the membership the job last saw
	changed   <-chan struct{} // closed when view is replaced
	workers   []grid.Member   // the live members offering fn
	suspects  map[string]bool // the members view shows suspect
	pending   []int           // items ready to send
	delayed   []retry         // items waiting for their backoff
	remaining int             // items without a result
	inflight  map[int]*chunk
	busy      map[string]int // chunks in flight per node
	breakers  map[string]*breaker.Breaker
	nextChunk int
	itemCost  time.Duration // moving average of an item's share of a chunk's round trip
	done      chan chunkDone
	stats     Stats
}

// itemState is what the job knows of one item.
type itemState struct {
	attempts  int    // tries sent, hedges not counted
	lastNode  string // where it last failed, avoided when it is retried
	delivered bool   // it has its result
	lookedUp  bool   // it has been looked up in the cache
}

type retry struct {
	item int
	at   time.Time
}

type chunk struct {
	id        int
	items     []int
	worker    grid.Member
	cancel    context.CancelFunc
	started   time.Time
	probe     bool // it probes a half-open breaker
	abandoned bool // its node is gone or it ran out of time: its answer is ignored, its items went elsewhere
	hedge     bool // a re-issue of another chunk
	hedged    bool // has been re-issued
	tries     int  // the most tries any of its items has had, this one included
}

type chunkDone struct {
	c     *chunk
	reply grid.MapReply
	err   error
}

func (j *job) run(ctx context.Context) (Stats, error) {
	j.remaining = len(j.items)
	j.see(j.grid.Members.View())
	if len(j.workers) == 0 {
		return j.finish(), j.noWorkers()
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for j.remaining > 0 {
		if turnHook != nil {
			turnHook()
		}
		if err := ctx.Err(); err != nil {
			return j.abort(err)
		}
		now := time.Now()
		j.promoteRetries(now)
		j.expireOverdue(now)
		j.hedgeSuspects(ctx)
		j.dispatch(ctx)
		if j.remaining == 0 {
			break // the cache answered the rest
		}
		if j.opts.Hedge {
			j.hedge(ctx)
		}
		if len(j.inflight) == 0 && len(j.delayed) == 0 && len(j.workers) == 0 {
			return j.abort(j.noWorkers()) // every node offering fn is gone
		}
		var wake <-chan time.Time
		if next, ok := j.nextWake(); ok {
			if timer == nil {
				timer = time.NewTimer(time.Until(next))
			} else {
				timer.Reset(time.Until(next))
			}
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return j.abort(ctx.Err())
		case d := <-j.done:
			j.completed(d)
		case <-j.changed:
			j.membershipChanged()
		case <-wake:
		}
	}
	return j.finish(), nil
}

func (j *job) noWorkers() error {
	return rpc.Errorf(rpc.KindUnknownFunction, "no live node offers %q", j.fn)
}

// membershipChanged takes the newest view: the nodes gone since the last
// one lose their chunks in flight, and the workers are read again.
func (j *job) membershipChanged() {
	view, changed := j.grid.Members.View()
	for _, name := range view.GoneSince(j.view) {
		j.nodeGone(name)
	}
	j.see(view, changed)
}

// see makes view the job's membership: who works, and who is suspect.
func (j *job) see(view *grid.View, changed <-chan struct{}) {
	j.view, j.changed = view, changed
	j.workers = view.Offering(j.fn)
	j.suspects = nil
	for _, m := range view.Members() {
		if m.State == grid.StateSuspect {
			if j.suspects == nil {
				j.suspects = make(map[string]bool)
			}
			j.suspects[m.Name] = true
		}
	}
}

// nextWake is when the loop must look again without news: a backoff
// ending, a call running out of time, a breaker letting a probe through
// while items wait, or, at the tail of a hedged job, a chunk becoming slow
// enough to re-issue.
func (j *job) nextWake() (time.Time, bool) {
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, r := range j.delayed {
		earlier(r.at)
	}
	for _, c := range j.inflight {
		if limit, ok := j.callTimeout(c); ok && !c.abandoned {
			earlier(c.started.Add(limit))
		}
	}
	if j.opts.Hedge && len(j.pending) == 0 && len(j.delayed) == 0 {
		// Only ahead: a chunk already overdue waits for a node to fall
		// idle, which a completion announces.
		now := time.Now()
		for _, c := range j.inflight {
			if at := c.started.Add(j.hedgeAfter(c)); !c.hedge && !c.hedged && !c.abandoned && at.After(now) {
				earlier(at)
			}
		}
	}
	if len(j.pending) > 0 {
		// Only an open breaker's end is news; a half-open one waits for
		// its probe, or for credit, and a completion announces both.
		now := time.Now()
		for _, w := range j.workers {
			if b := j.breakers[w.Name]; b != nil && b.OpenUntil().After(now) {
				earlier(b.OpenUntil())
			}
		}
	}
	return next, !next.IsZero()
}

func (j *job) promoteRetries(now time.Time) {
	kept := j.delayed[:0]
	for _, r := range j.delayed {
		if j.state[r.item].delivered {
			continue
		}
		if !r.at.After(now) {
			j.pending = append(j.pending, r.item)
		} else {
			kept = append(kept, r)
		}
	}
	j.delayed = kept
}

// dispatch sends chunks while there are items and credit.
func (j *job) dispatch(ctx context.Context) {
	for len(j.pending) > 0 {
		w, ok := j.pickWorker(j.state[j.pending[0]].lastNode, false)
		if !ok {
			return
		}
		j.lookupAhead(ctx)
		if len(j.pending) == 0 {
			return
		}
		b := j.breaker(w.Name)
		probe := b.State(time.Now()) != breaker.Closed
		if !b.Allow(time.Now()) {
			return // pickWorker saw it ready; nothing else changes it meanwhile
		}
		size := j.chunkSize()
		if probe {
			size = 1 // a probe risks one item on a node that has been failing
		}
		items := j.takeChunk(w.Name, size)
		if len(items) == 0 {
			if probe {
				b.Abandon()
			}
			continue
		}
		c := j.send(ctx, w, items, false)
		c.probe = probe
	}
}

// lookupWindow is how many items one cache lookup covers: at least a
// chunk, and many chunks of fast items.
const lookupWindow = 256

// lookupAhead looks up, in one batch, the cache for the next items that
// have not been looked up yet, delivers the hits and leaves the misses
// queued in order. Retried items are not looked up again.
func (j *job) lookupAhead(ctx context.Context) {
	if j.opts.Cache == nil {
		return
	}
	// Whole windows of hits leave unlooked items at the front: go on until
	// the next item to send has been looked up.
	for len(j.pending) > 0 && !j.state[j.pending[0]].lookedUp {
		n := 0
		for n < len(j.pending) && n < lookupWindow && !j.state[j.pending[n]].lookedUp {
			j.state[j.pending[n]].lookedUp = true
			n++
		}
		misses := j.lookupCache(ctx, append([]int(nil), j.pending[:n]...))
		j.pending = append(misses, j.pending[n:]...)
	}
}

// pickWorker returns the worker with the most free credit for its slots
// whose breaker lets work through (is closed, when closedOnly), avoiding
// avoid when another has credit.
func (j *job) pickWorker(avoid string, closedOnly bool) (grid.Member, bool) {
	now := time.Now()
	var best grid.Member
	found, bestFree := false, 0.0
	for _, w := range j.workers {
		slots := max(w.Slots, 1)
		credit := slots*j.opts.ChunksPerSlot - j.busy[w.Name]
		b := j.breaker(w.Name)
		if credit <= 0 || !b.Ready(now) || (closedOnly && b.State(now) != breaker.Closed) {
			continue
		}
		free := float64(credit) / float64(slots)
		if w.Name == avoid {
			free -= 1000 // only if nothing else has room
		}
		if !found || free > bestFree {
			best, bestFree, found = w, free, true
		}
	}
	return best, found
}

// chunkSize is ChunkSize, or else sized from the measured cost of an item;
// never more than a node accepts.
func (j *job) chunkSize() int {
	size := j.opts.ChunkSize
	if size <= 0 {
		size = j.adaptiveChunk()
	}
	return min(size, grid.MaxChunkItems)
}

// takeChunk removes the next chunk of up to size items for node from the
// queue. Retried items that last failed on node stay queued, in order, for
// another node, unless one leads the chunk: pickWorker chose node for it
// because nothing else had room. It may return no items when those queued
// have all been answered meanwhile.
func (j *job) takeChunk(node string, size int) []int {
	items := make([]int, 0, min(size, len(j.pending)))
	var skipped []int
	k := 0
	for ; k < len(j.pending) && len(items) < size; k++ {
		i := j.pending[k]
		if j.state[i].delivered {
			continue // answered by another copy meanwhile
		}
		if len(items) > 0 && j.state[i].lastNode == node {
			skipped = append(skipped, i)
			continue
		}
		items = append(items, i)
	}
	// Put the skipped items back just ahead of the rest, in place.
	start := k - len(skipped)
	copy(j.pending[start:k], skipped)
	j.pending = j.pending[start:]
	return items
}

// adaptiveChunk sizes chunks so that one takes about targetChunkTime,
// while leaving enough chunks to keep every slot busy. Until an item has
// been measured, chunks hold one item each.
func (j *job) adaptiveChunk() int {
	if j.itemCost <= 0 {
		return 1
	}
	size := int(targetChunkTime / max(j.itemCost, time.Microsecond))
	slots := 0
	for _, w := range j.workers {
		slots += max(w.Slots, 1)
	}
	spread := (len(j.pending) + j.opts.ChunksPerSlot*slots - 1) / max(j.opts.ChunksPerSlot*slots, 1)
	return max(1, min(size, spread, maxChunk))
}

// lookupCache delivers the items whose results are cached and returns
// the rest.
func (j *job) lookupCache(ctx context.Context, items []int) []int {
	if j.opts.Cache == nil {
		return items
	}
	keys := make([]string, 0, len(items))
	keyOf := make(map[string][]int, len(items))
	for _, i := range items {
		k, err := cache.KeyFromParams(j.fn, j.opts.Version, j.items[i])
		if err != nil {
			continue
		}
		if _, dup := keyOf[k]; !dup {
			keys = append(keys, k)
		}
		keyOf[k] = append(keyOf[k], i)
	}
	hits := j.opts.Cache.GetMulti(ctx, keys)
	if len(hits) == 0 {
		return items
	}
	hit := make(map[int]bool)
	for k, v := range hits {
		for _, i := range keyOf[k] {
			hit[i] = true
			j.deliver(Result{Index: i, Value: v, Cached: true})
		}
	}
	misses := items[:0]
	for _, i := range items {
		if !hit[i] {
			misses = append(misses, i)
		}
	}
	return misses
}

// send starts one shoal.map call for items on w.
func (j *job) send(ctx context.Context, w grid.Member, items []int, hedge bool) *chunk {
	cctx, cancel := context.WithCancel(ctx)
	c := &chunk{id: j.nextChunk, items: items, worker: w, cancel: cancel, started: time.Now(), hedge: hedge}
	j.nextChunk++
	j.inflight[c.id] = c
	j.busy[w.Name]++
	for _, i := range items {
		if !hedge {
			j.state[i].attempts++
			if j.state[i].attempts > 1 {
				j.stats.Retries++
			}
		}
		c.tries = max(c.tries, j.state[i].attempts)
	}
	req := grid.MapRequest{Function: j.fn, TimeoutMs: j.opts.ItemTimeout.Milliseconds(), Cache: j.opts.Cache != nil}
	for _, i := range items {
		req.Items.Append(j.items[i])
	}
	go func() {
		reply, err := j.stub.Map(cctx, w.RPC, req)
		j.done <- chunkDone{c: c, reply: reply, err: err}
	}()
	return c
}

// completed handles a chunk's answer.
func (j *job) completed(d chunkDone) {
	c := d.c
	c.cancel()
	delete(j.inflight, c.id)
	j.busy[c.worker.Name]--
	b := j.breaker(c.worker.Name)
	if c.abandoned {
		if c.probe {
			b.Abandon() // its node went away: the probe tells nothing
		}
		return // its items were requeued when its node went away
	}
	if d.err != nil {
		b.Failure(time.Now())
		for _, i := range c.items {
			if !j.state[i].delivered && !j.anotherCopyRunning(c, i) {
				j.failed(i, c.worker.Name, rpc.ErrorOf(asWireError(d.err)), true)
			}
		}
		return
	}
	b.Success()
	elapsed := time.Since(c.started)
	perItem := elapsed / time.Duration(len(c.items))
	if j.itemCost == 0 {
		j.itemCost = perItem
	} else {
		j.itemCost = (3*j.itemCost + perItem) / 4
	}
	values, err := d.reply.Values.Split(make([][]byte, 0, len(c.items)))
	if err != nil {
		b.Failure(time.Now())
		for _, i := range c.items {
			if !j.state[i].delivered && !j.anotherCopyRunning(c, i) {
				j.failed(i, c.worker.Name, rpc.Errorf(rpc.KindUnavailable, "%s answered a malformed chunk: %v", c.worker.Name, err), true)
			}
		}
		return
	}
	itemErrs := make(map[int]string, len(d.reply.Errors))
	for _, e := range d.reply.Errors {
		itemErrs[e.Index] = e.Error
	}
	for k, i := range c.items {
		if j.state[i].delivered {
			continue // a hedge got there first
		}
		msg, failed := itemErrs[k]
		if !failed {
			j.stats.PerNode[c.worker.Name]++
			j.deliver(Result{Index: i, Value: values[k], Node: c.worker.Name, Attempts: j.state[i].attempts})
			continue
		}
		e := rpc.ParseError(msg)
		retryable := rpc.Retryable(e) || (j.opts.RetryFunctionErrors && errors.Is(e, rpc.ErrFunctionError))
		if retryable && j.anotherCopyRunning(c, i) {
			continue // the other copy of a hedged chunk answers for it
		}
		j.failed(i, c.worker.Name, e, retryable)
	}
}

// anotherCopyRunning reports whether item i is also in another chunk in
// flight (a hedge or its original).
func (j *job) anotherCopyRunning(c *chunk, i int) bool {
	for _, o := range j.inflight {
		if o != c && !o.abandoned {
			for _, x := range o.items {
				if x == i {
					return true
				}
			}
		}
	}
	return false
}

// asWireError keeps errors that carry a kind and marks the rest (a broken
// connection, say) as retryable losses of the node.
func asWireError(err error) error {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e
	}
	if rpc.Retryable(err) {
		return rpc.Errorf(rpc.KindUnavailable, "%v", err)
	}
	return err
}

// failed retries item i with backoff if it may, else delivers its error.
func (j *job) failed(i int, node string, e *rpc.Error, retryable bool) {
	st := &j.state[i]
	st.lastNode = node
	if retryable && st.attempts < j.opts.Attempts {
		backoff := time.Duration(1<<min(st.attempts-1, 6)) * backoffBase
		backoff = backoff/2 + rand.N(backoff)
		j.delayed = append(j.delayed, retry{item: i, at: time.Now().Add(backoff)})
		return
	}
	j.deliver(Result{Index: i, Err: e, Node: node, Attempts: st.attempts})
}

func (j *job) breaker(name string) *breaker.Breaker {
	b := j.breakers[name]
	if b == nil {
		b = breaker.New(breakerThreshold, j.opts.BreakerCooldown)
		j.breakers[name] = b
	}
	return b
}

// nodeGone reroutes the chunks in flight on a node that left or died.
func (j *job) nodeGone(name string) {
	kept := j.workers[:0]
	for _, w := range j.workers {
		if w.Name != name {
			kept = append(kept, w)
		}
	}
	j.workers = kept
	for _, c := range j.inflight {
		if c.worker.Name != name || c.abandoned {
			continue
		}
		c.abandoned = true
		c.cancel()
		for _, i := range c.items {
			if !j.state[i].delivered && !j.anotherCopyRunning(c, i) {
				j.state[i].lastNode = name
				j.pending = append(j.pending, i)
			}
		}
	}
}

// expireOverdue gives up the calls that have run past their callTimeout:
// their node may be frozen or cut off while the view still shows it alive.
// Each such call is canceled and its late answer ignored, its node's
// breaker counts a failure, and its items are retried (elsewhere, when
// another node has room) as after a Timeout, unless another copy of them
// runs.
func (j *job) expireOverdue(now time.Time) {
	for _, c := range j.inflight {
		if c.abandoned {
			continue
		}
		limit, ok := j.callTimeout(c)
		if !ok || now.Sub(c.started) < limit {
			continue
		}
		c.abandoned = true
		c.cancel()
		j.breaker(c.worker.Name).Failure(now)
		c.probe = false // its verdict is in: completed must not abandon a later probe
		err := rpc.Errorf(rpc.KindTimeout, "%s on %s gave no answer within %v", grid.MethodMap, c.worker.Name, limit.Round(time.Millisecond))
		for _, i := range c.items {
			if !j.state[i].delivered && !j.anotherCopyRunning(c, i) {
				j.failed(i, c.worker.Name, err, true)
			}
		}
	}
}

// callTimeout is how long c may go unanswered before it is given up as
// lost (see Options.MinCallTimeout), and false when nothing bounds it
// yet.
func (j *job) callTimeout(c *chunk) (time.Duration, bool) {
	var limit time.Duration
	if j.itemCost > 0 {
		limit = max(j.opts.MinCallTimeout, mulDuration(j.expectedChunkTime(len(c.items)), callSlack))
	}
	if j.opts.ItemTimeout > 0 {
		// The node may spend ItemTimeout on each item of c and of the
		// chunks ahead of it in the slot.
		onNode := mulDuration(j.opts.ItemTimeout, j.opts.ChunksPerSlot*len(c.items))
		limit = max(limit, min(onNode, math.MaxInt64-j.opts.MinCallTimeout)+j.opts.MinCallTimeout)
	}
	if limit <= 0 {
		return 0, false
	}
	return mulDuration(limit, 1<<min(c.tries-1, maxCallDoublings)), true
}

// mulDuration is d*n, saturating instead of overflowing.
func mulDuration(d time.Duration, n int) time.Duration {
	if n > 0 && d > math.MaxInt64/time.Duration(n) {
		return math.MaxInt64
	}
	return d * time.Duration(n)
}

// hedgeSuspects re-issues, each to another node with room, the chunks in
// flight on nodes the view shows suspect: such a node may be frozen or cut
// off, and the grid takes seconds to declare it dead. The original call
// keeps running, since the node may yet refute the suspicion; the first
// answer wins. Chunks wait for room here before new items go out.
func (j *job) hedgeSuspects(ctx context.Context) {
	if len(j.suspects) == 0 {
		return
	}
	for _, c := range j.inflightByID() {
		if c.hedge || c.hedged || c.abandoned || !j.suspects[c.worker.Name] {
			continue
		}
		items := j.undelivered(c)
		if len(items) == 0 {
			continue
		}
		w, ok := j.pickWorker(c.worker.Name, true)
		if !ok {
			return // a completion will make room
		}
		c.hedged = true
		j.stats.Reissued++
		j.send(ctx, w, items, true)
	}
}

// inflightByID returns the chunks in flight in the order they were sent.
func (j *job) inflightByID() []*chunk {
	out := make([]*chunk, 0, len(j.inflight))
	for _, c := range j.inflight {
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}

// undelivered returns c's items that have no result yet.
func (j *job) undelivered(c *chunk) []int {
	var items []int
	for _, i := range c.items {
		if !j.state[i].delivered {
			items = append(items, i)
		}
	}
	return items
}

// hedge re-issues the slowest chunk still running to an idle node when
// nothing else is left to send.
func (j *job) hedge(ctx context.Context) {
	if len(j.pending) > 0 || len(j.delayed) > 0 || len(j.inflight) == 0 {
		return
	}
	var slowest *chunk
	for _, c := range j.inflight {
		if !c.hedge && !c.hedged && !c.abandoned && (slowest == nil || c.started.Before(slowest.started)) {
			slowest = c
		}
	}
	if slowest == nil || time.Since(slowest.started) < j.hedgeAfter(slowest) {
		return
	}
	now := time.Now()
	var idle []grid.Member
	for _, w := range j.workers {
		if j.busy[w.Name] == 0 && w.Name != slowest.worker.Name && j.breaker(w.Name).State(now) == breaker.Closed {
			idle = append(idle, w)
		}
	}
	if len(idle) == 0 {
		return
	}
	sort.Slice(idle, func(a, b int) bool { return idle[a].Slots > idle[b].Slots })
	items := j.undelivered(slowest)
	if len(items) == 0 {
		return
	}
	slowest.hedged = true
	j.stats.Reissued++
	j.send(ctx, idle[0], items, true)
}

// hedgeAfter is how long c may run before it is worth re-issuing.
func (j *job) hedgeAfter(c *chunk) time.Duration { return 2 * j.expectedChunkTime(len(c.items)) }

func (j *job) expectedChunkTime(items int) time.Duration {
	if j.itemCost <= 0 {
		return targetChunkTime
	}
	return max(j.itemCost*time.Duration(items), time.Millisecond)
}

func (j *job) deliver(r Result) {
	if j.state[r.Index].delivered {
		return
	}
	j.state[r.Index].delivered = true
	j.remaining--
	switch {
	case r.Cached:
		j.stats.Cached++
		j.stats.OK++
	case r.Err != nil:
		j.stats.Failed++
	default:
		j.stats.OK++
	}
	j.emit(r)
}

// abort stops the job with err.
func (j *job) abort(err error) (Stats, error) { return j.finish(), err }

// finish cancels whatever still runs (the losers of hedges, or everything
// when the job is canceled; the nodes stop those calls too) and waits for
// it.
func (j *job) finish() Stats {
	for _, c := range j.inflight {
		c.cancel()
	}
	for len(j.inflight) > 0 {
		d := <-j.done
		delete(j.inflight, d.c.id)
	}
	j.stats.Wall = time.Since(j.start)
	return j.stats
}
