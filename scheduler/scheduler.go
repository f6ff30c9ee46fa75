package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/rpc"
)

// Worker is a node that can run chunks of a job.
type Worker struct {
	Name  string
	Addr  string // RPC address
	Slots int
}

// Grid is the scheduler's view of the grid.
type Grid interface {
	// Workers returns the live nodes that offer fn; none means no node
	// does.
	Workers(ctx context.Context, fn string) ([]Worker, error)
	// Client returns a connection to the node at addr.
	Client(ctx context.Context, addr string) (*rpc.Client, error)
	// Gone delivers the names of nodes that left or died, as membership
	// learns of them; nil if the grid cannot tell.
	Gone() <-chan string
}

// Options tune a job. The zero value is a sensible default.
type Options struct {
	// ChunkSize fixes how many items travel in one shoal.map call; zero
	// sizes chunks from the measured cost of an item.
	ChunkSize int
	// Attempts bounds how often an item is tried. Default: 3.
	Attempts int
	// RetryFunctionErrors retries items whose function returned an error;
	// by default only lost nodes, broken connections, timeouts and
	// overloaded nodes are retried.
	RetryFunctionErrors bool
	// ItemTimeout bounds each item on the node; the function's context
	// ends there. Zero means none.
	ItemTimeout time.Duration
	// Hedge re-issues the slowest chunks at the tail of the job to idle
	// nodes; the first answer wins.
	Hedge bool
	// Cache, with CacheKeys, is looked up before each chunk is sent: hits
	// are delivered at once, only misses are sent. A cache problem is a
	// miss, never a failure.
	Cache cache.Cache
	// Version of the function, for cache keys.
	Version string
	// ChunksPerSlot bounds the chunks in flight on a node per slot it
	// has. Default: 2.
	ChunksPerSlot int
}

func (o Options) withDefaults() Options {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.ChunksPerSlot <= 0 {
		o.ChunksPerSlot = 2
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
	Retried  int            // item attempts beyond the first
	Reissued int            // chunks re-issued at the tail
	PerNode  map[string]int // items completed by each node
	Wall     time.Duration
}

// ErrNoWorkers reports a function that no live node offers.
var ErrNoWorkers = errors.New("scheduler: no live node offers the function")

// Run applies fn to every item (each the msgpack encoding of an argument
// array) across the grid and calls emit once per item, as results arrive,
// from one goroutine. It returns when every item has a result, or with
// ctx's error after canceling the work on the nodes.
func Run(ctx context.Context, grid Grid, fn string, items []msgpack.RawMessage, opts Options, emit func(Result)) (Stats, error) {
	j := &job{
		grid:      grid,
		fn:        fn,
		items:     items,
		opts:      opts.withDefaults(),
		emit:      emit,
		start:     time.Now(),
		delivered: make([]bool, len(items)),
		attempts:  make([]int, len(items)),
		lastNode:  make([]string, len(items)),
		lookedUp:  make([]bool, len(items)),
		inflight:  make(map[int]*chunk),
		busy:      make(map[string]int),
		breakers:  make(map[string]*nodeBreaker),
		done:      make(chan chunkDone),
		stats:     Stats{Items: len(items), PerNode: make(map[string]int)},
	}
	for i := range items {
		j.pending = append(j.pending, i)
	}
	return j.run(ctx)
}

type job struct {
	grid  Grid
	fn    string
	items []msgpack.RawMessage
	opts  Options
	emit  func(Result)
	start time.Time

	workers   []Worker
	refreshed time.Time
	pending   []int    // items ready to send
	delayed   []retry  // items waiting for their backoff
	delivered []bool   // items with a result
	remaining int      // items without a result
	attempts  []int    // tries per item
	lastNode  []string // where each item last failed
	lookedUp  []bool   // items already looked up in the cache
	inflight  map[int]*chunk
	busy      map[string]int // chunks in flight per node
	breakers  map[string]*nodeBreaker
	nextChunk int
	itemCost  time.Duration // moving average of an item's share of a chunk's round trip
	done      chan chunkDone
	stats     Stats
}

type retry struct {
	item int
	at   time.Time
}

type chunk struct {
	id        int
	items     []int
	worker    Worker
	cancel    context.CancelFunc
	started   time.Time
	abandoned bool // its node is gone; its items were sent elsewhere
	hedge     bool // a re-issue of another chunk
	hedged    bool // has been re-issued
}

type chunkDone struct {
	c       *chunk
	results []MapResult
	err     error
}

// nodeBreaker stops sending to a node after chunks fail on it in a row,
// until a cooldown passes and a probe chunk succeeds.
type nodeBreaker struct {
	failures  int
	openUntil time.Time
}

const (
	breakerThreshold = 3
	breakerCooldown  = 2 * time.Second
	targetChunkTime  = 20 * time.Millisecond
	maxChunk         = 4096
	refreshEvery     = time.Second
)

func (j *job) run(ctx context.Context) (Stats, error) {
	j.remaining = len(j.items)
	if err := j.refresh(ctx, true); err != nil {
		return j.finish(), err
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for j.remaining > 0 {
		if err := ctx.Err(); err != nil {
			return j.abort(err)
		}
		j.promoteRetries(time.Now())
		if time.Since(j.refreshed) > refreshEvery {
			if err := j.refresh(ctx, false); err != nil {
				return j.abort(err)
			}
		}
		j.dispatch(ctx)
		if j.remaining == 0 {
			break // the cache answered the rest
		}
		if j.opts.Hedge {
			j.hedge(ctx)
		}
		if len(j.inflight) == 0 && len(j.pending) > 0 && len(j.delayed) == 0 {
			// Nothing running and nowhere to send: every node is out.
			if err := j.refresh(ctx, true); err != nil {
				return j.abort(err)
			}
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
		case name := <-j.grid.Gone():
			j.nodeGone(name)
		case <-wake:
		}
	}
	return j.finish(), nil
}

// nextWake is when the loop must look again without news: a backoff
// ending, a breaker closing, or the next membership refresh.
func (j *job) nextWake() (time.Time, bool) {
	if j.remaining == 0 {
		return time.Time{}, false
	}
	next := j.refreshed.Add(refreshEvery)
	for _, r := range j.delayed {
		if r.at.Before(next) {
			next = r.at
		}
	}
	return next, true
}

// refresh reads the workers; with mustHave, having none is an error.
func (j *job) refresh(ctx context.Context, mustHave bool) error {
	workers, err := j.grid.Workers(ctx, j.fn)
	if err != nil {
		return err
	}
	j.workers, j.refreshed = workers, time.Now()
	if mustHave && len(workers) == 0 {
		return rpc.Errorf(rpc.KindUnknownFunction, "no live node offers %q", j.fn)
	}
	return nil
}

func (j *job) promoteRetries(now time.Time) {
	kept := j.delayed[:0]
	for _, r := range j.delayed {
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
		w, ok := j.pickWorker(j.lastNode[j.pending[0]])
		if !ok {
			return
		}
		j.lookupAhead(ctx)
		if len(j.pending) == 0 {
			return
		}
		j.send(ctx, w, j.takeChunk(), false)
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
	for len(j.pending) > 0 && !j.lookedUp[j.pending[0]] {
		n := 0
		for n < len(j.pending) && n < lookupWindow && !j.lookedUp[j.pending[n]] {
			j.lookedUp[j.pending[n]] = true
			n++
		}
		misses := j.lookupCache(ctx, append([]int(nil), j.pending[:n]...))
		j.pending = append(misses, j.pending[n:]...)
	}
}

// pickWorker returns the worker with the most free credit for its slots,
// avoiding avoid when another has credit.
func (j *job) pickWorker(avoid string) (Worker, bool) {
	now := time.Now()
	var best Worker
	bestFree := -1.0
	for _, w := range j.workers {
		slots := max(w.Slots, 1)
		credit := slots*j.opts.ChunksPerSlot - j.busy[w.Name]
		if credit <= 0 {
			continue
		}
		if b := j.breakers[w.Name]; b != nil && b.failures >= breakerThreshold && now.Before(b.openUntil) {
			continue
		}
		free := float64(credit) / float64(slots)
		if w.Name == avoid {
			free -= 1000 // only if nothing else has room
		}
		if free > bestFree {
			best, bestFree = w, free
		}
	}
	return best, bestFree > -1
}

// takeChunk removes the next chunk of items from the queue.
func (j *job) takeChunk() []int {
	size := j.opts.ChunkSize
	if size <= 0 {
		size = j.adaptiveChunk()
	}
	size = min(size, len(j.pending))
	items := append([]int(nil), j.pending[:size]...)
	j.pending = j.pending[size:]
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
func (j *job) send(ctx context.Context, w Worker, items []int, hedge bool) *chunk {
	cctx, cancel := context.WithCancel(ctx)
	c := &chunk{id: j.nextChunk, items: items, worker: w, cancel: cancel, started: time.Now(), hedge: hedge}
	j.nextChunk++
	j.inflight[c.id] = c
	j.busy[w.Name]++
	for _, i := range items {
		if !hedge {
			j.attempts[i]++
			if j.attempts[i] > 1 {
				j.stats.Retried++
			}
		}
	}
	req := MapRequest{Function: j.fn, Items: make([]msgpack.RawMessage, len(items)), TimeoutMs: j.opts.ItemTimeout.Milliseconds()}
	for k, i := range items {
		req.Items[k] = j.items[i]
	}
	go func() {
		var results []MapResult
		client, err := j.grid.Client(cctx, w.Addr)
		if err == nil {
			err = client.Call(cctx, MapMethod, &results, req)
		}
		if err == nil && len(results) != len(items) {
			err = fmt.Errorf("scheduler: %s answered %d results for %d items", w.Name, len(results), len(items))
		}
		j.done <- chunkDone{c: c, results: results, err: err}
	}()
	return c
}

// completed handles a chunk's answer.
func (j *job) completed(d chunkDone) {
	c := d.c
	c.cancel()
	delete(j.inflight, c.id)
	j.busy[c.worker.Name]--
	if c.abandoned {
		return // its items were requeued when its node went away
	}
	b := j.breaker(c.worker.Name)
	if d.err != nil {
		b.failures++
		if b.failures >= breakerThreshold {
			b.openUntil = time.Now().Add(breakerCooldown)
		}
		for _, i := range c.items {
			if !j.delivered[i] && !j.anotherCopyRunning(c, i) {
				j.failed(i, c.worker.Name, rpc.ErrorOf(asWireError(d.err)), true)
			}
		}
		return
	}
	b.failures = 0
	elapsed := time.Since(c.started)
	perItem := elapsed / time.Duration(len(c.items))
	if j.itemCost == 0 {
		j.itemCost = perItem
	} else {
		j.itemCost = (3*j.itemCost + perItem) / 4
	}
	for k, i := range c.items {
		if j.delivered[i] {
			continue // a hedge got there first
		}
		r := d.results[k]
		if r.Error == "" {
			j.stats.PerNode[c.worker.Name]++
			j.deliver(Result{Index: i, Value: r.Value, Node: c.worker.Name, Attempts: j.attempts[i]})
			continue
		}
		e := rpc.ParseError(r.Error)
		j.failed(i, c.worker.Name, e, rpc.Retryable(e) || (j.opts.RetryFunctionErrors && errors.Is(e, rpc.ErrFunctionError)))
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
	j.lastNode[i] = node
	if retryable && j.attempts[i] < j.opts.Attempts {
		backoff := time.Duration(1<<min(j.attempts[i]-1, 6)) * 20 * time.Millisecond
		backoff = backoff/2 + rand.N(backoff)
		j.delayed = append(j.delayed, retry{item: i, at: time.Now().Add(backoff)})
		return
	}
	j.deliver(Result{Index: i, Err: e, Node: node, Attempts: j.attempts[i]})
}

func (j *job) breaker(name string) *nodeBreaker {
	b := j.breakers[name]
	if b == nil {
		b = &nodeBreaker{}
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
			if !j.delivered[i] && !j.anotherCopyRunning(c, i) {
				j.lastNode[i] = name
				j.pending = append(j.pending, i)
			}
		}
	}
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
	if slowest == nil || time.Since(slowest.started) < 2*j.expectedChunkTime(len(slowest.items)) {
		return
	}
	var idle []Worker
	for _, w := range j.workers {
		if j.busy[w.Name] == 0 && w.Name != slowest.worker.Name {
			idle = append(idle, w)
		}
	}
	if len(idle) == 0 {
		return
	}
	sort.Slice(idle, func(a, b int) bool { return idle[a].Slots > idle[b].Slots })
	var items []int
	for _, i := range slowest.items {
		if !j.delivered[i] {
			items = append(items, i)
		}
	}
	if len(items) == 0 {
		return
	}
	slowest.hedged = true
	j.stats.Reissued++
	j.send(ctx, idle[0], items, true)
}

func (j *job) expectedChunkTime(items int) time.Duration {
	if j.itemCost <= 0 {
		return targetChunkTime
	}
	return max(j.itemCost*time.Duration(items), time.Millisecond)
}

func (j *job) deliver(r Result) {
	if j.delivered[r.Index] {
		return
	}
	j.delivered[r.Index] = true
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
