package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
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
	// StoreResults asks the nodes to store each result in their result
	// cache (the chunk's Cache flag), as they do whenever Cache is set; a
	// job without it costs the nodes no cache work. A client that cannot
	// read the nodes' caches (their own memory) still wants it for a
	// cacheable function.
	StoreResults bool
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
	// Ordered delivers results in input order: each batch emit gets
	// continues where the one before ended. Without it results are
	// delivered as their chunks are answered.
	Ordered bool
	// Window bounds the items a job holds at once: an item is taken from
	// the source only while it is fewer than Window items past the
	// earliest item not yet delivered. It bounds the job's memory and,
	// with Ordered, the results held back until the earlier ones are in.
	// A chunk holds at most Window items. Default: DefaultWindow.
	Window int
	// WindowBytes bounds the bytes of the arguments of the chunks in
	// flight plus those of the results held back for order: no item is
	// taken from the source while they exceed it. Default:
	// DefaultWindowBytes.
	WindowBytes int
}

// DefaultWindow is Options.Window's default: room for two rounds of
// chunks of several thousand items on each of a few nodes, in 3 MiB of
// the job's own state (48 bytes an item).
const DefaultWindow = 1 << 16

// DefaultWindowBytes is Options.WindowBytes's default. Trivial items never
// reach it (65,536 of them take a few hundred KiB); items of kilobytes do,
// and it keeps them to a few thousand at once.
const DefaultWindowBytes = 8 << 20

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.WindowBytes <= 0 {
		o.WindowBytes = DefaultWindowBytes
	}
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
	Index int
	// Value is the encoded result, when Err is nil. It shares the bytes
	// of its chunk's answer, which nothing writes again: it may be kept.
	Value    msgpack.RawMessage
	Err      error
	Cached   bool
	Node     string // the node that computed it
	Attempts int
}

// Stats describes a finished job.
type Stats struct {
	Items    int // taken from the source
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
	// minItemCost bounds the measured cost of an item from below when
	// sizing chunks by time: below it chunks are as large as the window
	// allows anyway.
	minItemCost = 100 * time.Nanosecond
	// maxChunkBytes bounds the encoded arguments of one chunk. Past a
	// few hundred kilobytes a call's fixed cost is lost in the noise,
	// and larger messages only hold more memory at both ends.
	maxChunkBytes = 1 << 20
	// maxBatch bounds the results handed to emit at once.
	maxBatch    = 4096
	backoffBase = 20 * time.Millisecond
	// callSlack is how many times its expected time a call may take
	// before it is given up as lost.
	callSlack = 10
	// maxCallDoublings bounds how often retries double a call's time.
	maxCallDoublings = 4
)

// Run applies fn across g to every item src gives, taking them as its
// window has room, and calls emit with the results in batches (each
// item's once, as their chunks are answered, or in input order with
// Options.Ordered), from the goroutine that called Run. emit must not
// keep the slice it is given (the Values in it it may keep). Run returns
// when every item has a result, with an UnknownFunction error at once if
// no live node offers fn, with an *InputError if src failed, or with
// ctx's error after canceling the work on the nodes.
func Run(ctx context.Context, g Grid, fn string, src Source, opts Options, emit func([]Result)) (Stats, error) {
	opts = opts.withDefaults()
	size := 1
	for size < opts.Window {
		size <<= 1
	}
	j := &job{
		grid:     g,
		stub:     grid.Stub{Caller: g.Caller},
		fn:       fn,
		src:      src,
		opts:     opts,
		emit:     emit,
		start:    time.Now(),
		ring:     make([]slot, size),
		mask:     size - 1,
		inflight: make(map[int]*chunk),
		busy:     make(map[string]int),
		breakers: make(map[string]*breaker.Breaker),
		done:     make(chan chunkDone),
		nodes:    []string{""},
		nodeIDs:  make(map[string]uint32),
		perNode:  []int{0},
	}
	if w, ok := src.(Waiter); ok {
		j.ready = w.Ready()
	}
	// A panic in emit (or a test's FailNow) leaves no call running.
	defer func() {
		if !j.finished {
			j.finish()
		}
	}()
	return j.run(ctx)
}

type job struct {
	grid  Grid
	stub  grid.Stub
	fn    string
	src   Source
	ready <-chan struct{} // the source's Ready, when it may wait
	opts  Options
	emit  func([]Result)
	start time.Time

	view     *grid.View      // the membership the job last saw
	changed  <-chan struct{} // closed when view is replaced
	workers  []grid.Member   // the live members offering fn
	suspects map[string]bool // the members view shows suspect

	// ring holds the state of the items in the window, [low, next), item
	// i at i&mask; an item before low has been delivered.
	ring     []slot
	mask     int
	low      int   // the earliest item not yet delivered
	next     int   // the index the source's next item gets
	srcEnded bool  // the source said io.EOF
	srcIdle  bool  // the source said ErrNotReady: wait for ready
	srcErr   error // the source failed: the job ends with it

	queued        []queuedItem // items to send before new ones: retries due, cache misses
	delayed       []retry      // items waiting for their backoff
	inflightBytes int          // the argument bytes of the chunks in flight
	heldBytes     int          // the bytes of results held back for order
	inflight      map[int]*chunk
	busy          map[string]int // chunks in flight per node
	breakers      map[string]*breaker.Breaker
	nextChunk     int
	itemCost      time.Duration // moving average of an item's share of a chunk's round trip
	done          chan chunkDone
	spare         []*chunk // answered chunks, their buffers ready for reuse
	skipped       []queuedItem
	ends          []int // where each result of a chunk ends

	nodes   []string          // node names by id; id 0 is none
	nodeIDs map[string]uint32 // and ids by name
	perNode []int             // items completed, by node id

	batch    []Result // results to emit
	stats    Stats
	finished bool
}

// slot is what the job knows of one item in its window.
type slot struct {
	value    []byte     // with Ordered: its result, held until the earlier ones are delivered
	err      *rpc.Error // with Ordered: its error, held likewise
	attempts int32      // tries sent, hedges not counted
	node     uint32     // with Ordered: the node that answered
	lastNode uint32     // where it last failed, avoided when it is retried
	copies   uint16     // chunks in flight carrying it, abandoned ones not counted
	done     bool       // it has its result
	cached   bool
}

// queuedItem is an item waiting to be sent again (or, after a cache
// miss, at all), with its encoded arguments.
type queuedItem struct {
	index int
	args  []byte
}

type retry struct {
	item int
	at   time.Time
	args []byte
}

type chunk struct {
	id        int
	items     []int       // the items' indexes
	args      grid.Values // the items' arguments, as sent
	keep      bool        // items waiting to be sent again hold slices of args: do not reuse it
	worker    grid.Member
	cancel    context.CancelFunc
	started   time.Time
	probe     bool // it probes a half-open breaker
	abandoned bool // its node is gone or it ran out of time: its answer is ignored, its items went elsewhere
	hedge     bool // a re-issue of another chunk
	hedged    bool // has been re-issued
	tries     int  // the most tries any of its items has had, this one included
}

// add appends item i, whose encoded arguments are args.
func (c *chunk) add(i int, args []byte) {
	c.items = append(c.items, i)
	c.args.Append(args)
}

// eachArgs calls f with each item's position in c and its encoded
// arguments, sliced from c's buffer, which c then keeps.
func (c *chunk) eachArgs(f func(k int, args []byte)) {
	c.keep = true
	rest := c.args.Raw
	for k := range c.items {
		n, err := grid.ValueLen(rest)
		if err != nil {
			panic("scheduler: a chunk's own arguments are malformed: " + err.Error())
		}
		f(k, rest[:n:n])
		rest = rest[n:]
	}
}

type chunkDone struct {
	c     *chunk
	reply grid.MapReply
	err   error
}

func (j *job) run(ctx context.Context) (Stats, error) {
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
	for {
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
		// The results are handed over before new items are taken: the
		// window is counted from the earliest item the caller has not
		// had.
		j.advance()
		j.flush()
		j.dispatch(ctx)
		j.advance()
		j.flush()
		if j.srcErr != nil {
			return j.abort(j.srcErr)
		}
		if j.srcEnded && j.low == j.next {
			break // every item is delivered
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
		var ready <-chan struct{}
		if j.srcIdle {
			ready = j.ready
		}
		select {
		case <-ctx.Done():
			return j.abort(ctx.Err())
		case d := <-j.done:
			j.completed(d)
		case <-j.changed:
			j.membershipChanged()
		case <-ready:
			j.srcIdle = false
		case <-wake:
		}
	}
	return j.finish(), nil
}

func (j *job) noWorkers() error {
	return rpc.Errorf(rpc.KindUnknownFunction, "no live node offers %q", j.fn)
}

// nodeID returns the id standing for the node called name in the ring.
func (j *job) nodeID(name string) uint32 {
	id, ok := j.nodeIDs[name]
	if !ok {
		id = uint32(len(j.nodes))
		j.nodes = append(j.nodes, name)
		j.nodeIDs[name] = id
		j.perNode = append(j.perNode, 0)
	}
	return id
}

// slot returns the state of item i, which must be in the window.
func (j *job) slot(i int) *slot { return &j.ring[i&j.mask] }

// isDone reports whether item i has its result.
func (j *job) isDone(i int) bool { return i < j.low || j.slot(i).done }

// hasRoom reports whether the window may take another item, extra bytes
// of arguments being on their way into a chunk.
func (j *job) hasRoom(extra int) bool {
	return j.next-j.low < j.opts.Window && j.inflightBytes+j.heldBytes+extra < j.opts.WindowBytes
}

// canPull reports whether the source may be asked for an item now.
func (j *job) canPull(extra int) bool {
	return j.srcErr == nil && !j.srcEnded && !j.srcIdle && j.hasRoom(extra)
}

// workWaiting reports whether there are items that could be sent now.
func (j *job) workWaiting() bool { return len(j.queued) > 0 || j.canPull(0) }

// pull appends the next item's arguments to buf and returns its index,
// when the window has room and the source has an item ready.
func (j *job) pull(buf []byte, extra int) ([]byte, int, bool) {
	if !j.canPull(extra) {
		return buf, 0, false
	}
	n := len(buf)
	out, err := j.src.Next(buf)
	switch {
	case err == nil:
		// A chunk's items travel end to end: one that is not exactly one
		// value would garble the rest.
		if size, verr := grid.ValueLen(out[n:]); verr != nil || size != len(out)-n {
			if verr == nil {
				verr = fmt.Errorf("%d bytes after the value", len(out)-n-size)
			}
			j.srcErr = &InputError{Index: j.next, Err: fmt.Errorf("not one msgpack value: %w", verr)}
			return buf[:n], 0, false
		}
		j.next++
		return out, j.next - 1, true // its slot was cleared when low passed its last item
	case err == io.EOF:
		j.srcEnded = true
	case err == ErrNotReady && j.ready != nil:
		j.srcIdle = true
	default:
		j.srcErr = &InputError{Index: j.next, Err: err}
	}
	return buf[:n], 0, false
}

// advance moves the window past the items delivered at its start; with
// Ordered it hands their results over.
func (j *job) advance() {
	for j.low < j.next {
		s := j.slot(j.low)
		if !s.done {
			return
		}
		if j.opts.Ordered {
			r := Result{Index: j.low, Value: s.value, Cached: s.cached, Node: j.nodes[s.node], Attempts: int(s.attempts)}
			if s.err != nil {
				r.Err = s.err
			}
			j.heldBytes -= len(s.value)
			j.batch = append(j.batch, r)
			if len(j.batch) >= maxBatch {
				j.flush()
			}
		}
		*s = slot{}
		j.low++
	}
}

// flush hands the results gathered to emit.
func (j *job) flush() {
	if len(j.batch) == 0 {
		return
	}
	j.emit(j.batch)
	// Not cleared: the next batch overwrites it, and until then it holds
	// on to a few chunks' answers at most.
	j.batch = j.batch[:0]
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
	waiting := j.workWaiting()
	if j.opts.Hedge && !waiting && len(j.delayed) == 0 {
		// Only ahead: a chunk already overdue waits for a node to fall
		// idle, which a completion announces.
		now := time.Now()
		for _, c := range j.inflight {
			if at := c.started.Add(j.hedgeAfter(c)); !c.hedge && !c.hedged && !c.abandoned && at.After(now) {
				earlier(at)
			}
		}
	}
	if waiting {
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
		if j.isDone(r.item) {
			continue
		}
		if !r.at.After(now) {
			j.queued = append(j.queued, queuedItem{index: r.item, args: r.args})
		} else {
			kept = append(kept, r)
		}
	}
	clear(j.delayed[len(kept):])
	j.delayed = kept
}

// dispatch sends chunks while there are items and credit.
func (j *job) dispatch(ctx context.Context) {
	for j.workWaiting() {
		var avoid string
		if len(j.queued) > 0 && !j.isDone(j.queued[0].index) {
			avoid = j.nodes[j.slot(j.queued[0].index).lastNode]
		}
		w, ok := j.pickWorker(avoid, false)
		if !ok {
			return
		}
		b := j.breaker(w.Name)
		probe := b.State(time.Now()) != breaker.Closed
		size := j.chunkSize()
		if probe {
			size = 1 // a probe risks one item on a node that has been failing
		}
		if j.opts.Cache != nil {
			j.lookupAhead(ctx, size)
			if len(j.queued) == 0 {
				return // the cache answered everything it could take
			}
		}
		if !b.Allow(time.Now()) {
			return // pickWorker saw it ready; nothing else changes it meanwhile
		}
		c := j.newChunk()
		j.fill(c, w.Name, size)
		if len(c.items) == 0 {
			if probe {
				b.Abandon()
			}
			j.spare = append(j.spare, c)
			continue
		}
		c.worker = w
		c.probe = probe
		j.send(ctx, c, false)
	}
}

// newChunk returns an empty chunk, reusing the buffers of one answered.
func (j *job) newChunk() *chunk {
	if n := len(j.spare); n > 0 {
		c := j.spare[n-1]
		j.spare = j.spare[:n-1]
		*c = chunk{items: c.items[:0], args: grid.Values{Raw: c.args.Raw[:0]}}
		return c
	}
	return &chunk{}
}

// recycle keeps an answered chunk's buffers for the next chunk, unless
// items waiting to be sent hold slices of its arguments.
func (j *job) recycle(c *chunk) {
	if c.keep || len(j.spare) >= 8 {
		return
	}
	j.spare = append(j.spare, c)
}

// fill puts up to size items into c for node: first the queued ones, in
// order (those that last failed on node stay queued for another node,
// unless one leads the chunk: pickWorker chose node for it because
// nothing else had room), then new ones from the source, while the
// chunk's arguments are fewer than maxChunkBytes.
func (j *job) fill(c *chunk, node string, size int) {
	limit := j.maxChunkBytes()
	if len(j.queued) > 0 {
		id := j.nodeID(node)
		skipped := j.skipped[:0]
		k := 0
		for ; k < len(j.queued) && len(c.items) < size && len(c.args.Raw) < limit; k++ {
			q := j.queued[k]
			if j.isDone(q.index) {
				continue // answered by another copy meanwhile
			}
			if len(c.items) > 0 && j.slot(q.index).lastNode == id {
				skipped = append(skipped, q)
				continue
			}
			c.add(q.index, q.args)
		}
		// Put the skipped items back just ahead of the rest, in place.
		start := k - len(skipped)
		copy(j.queued[start:k], skipped)
		clear(j.queued[:start])
		j.queued = j.queued[start:]
		clear(skipped)
		j.skipped = skipped[:0]
	}
	if j.opts.Cache != nil {
		return // new items come through lookupAhead
	}
	for len(c.items) < size && len(c.args.Raw) < limit {
		raw, i, ok := j.pull(c.args.Raw, len(c.args.Raw))
		if !ok {
			return
		}
		c.args.Raw = raw
		c.args.Count++
		c.items = append(c.items, i)
	}
}

// maxChunkBytes bounds a chunk's arguments: maxChunkBytes, and no more
// than two rounds of chunks on every slot fit in WindowBytes.
func (j *job) maxChunkBytes() int {
	return max(1, min(maxChunkBytes, j.opts.WindowBytes/(2*j.credit())))
}

// credit is how many chunks the workers may hold at once.
func (j *job) credit() int {
	slots := 0
	for _, w := range j.workers {
		slots += max(w.Slots, 1)
	}
	return max(1, slots*j.opts.ChunksPerSlot)
}

// lookupWindow is how many items one cache lookup covers: one request per
// cache server or grid member, waited for before anything else moves, so
// a window pays a round trip. 1024 served a warm 200,000-item job of
// three grid-cache nodes at 590-600k items/s against 385-404k with 256;
// 4096 gained nothing more (the client's CPU was then the limit).
const lookupWindow = 1024

// lookupAhead takes new items from the source a lookupWindow at a time
// and looks them up in the cache in one batch each, delivering the hits
// and queueing the misses in order, until want items are queued or no
// more can be taken. Retried items are not looked up again.
func (j *job) lookupAhead(ctx context.Context, want int) {
	for len(j.queued) < want && j.canPull(0) && ctx.Err() == nil {
		var buf []byte // the misses keep slices of it
		ends := make([]int, 0, lookupWindow)
		first := j.next
		for len(ends) < lookupWindow {
			raw, _, ok := j.pull(buf, len(buf))
			if !ok {
				break
			}
			buf = raw
			ends = append(ends, len(buf))
		}
		items := make([]queuedItem, len(ends))
		start := 0
		for k, end := range ends {
			items[k] = queuedItem{index: first + k, args: buf[start:end:end]}
			start = end
		}
		j.lookupCache(ctx, items)
		j.advance()
		j.flush()
	}
}

// lookupCache delivers the items whose results are cached and queues the
// rest.
func (j *job) lookupCache(ctx context.Context, items []queuedItem) {
	if len(items) == 0 {
		return
	}
	keys := make([]string, 0, len(items))
	keyOf := make([]string, len(items))
	seen := make(map[string]bool, len(items))
	for k, it := range items {
		key, err := cache.KeyFromParams(j.fn, j.opts.Version, it.args)
		if err != nil {
			continue
		}
		keyOf[k] = key
		if !seen[key] {
			seen[key] = true
			keys = append(keys, key)
		}
	}
	hits := j.opts.Cache.GetMulti(ctx, keys)
	for k, it := range items {
		if v, ok := hits[keyOf[k]]; ok && keyOf[k] != "" {
			j.deliver(it.index, v, nil, 0, true)
			continue
		}
		j.queued = append(j.queued, it)
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
		if avoid != "" && w.Name == avoid {
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

// adaptiveChunk sizes chunks so that one takes about targetChunkTime,
// while two rounds of chunks on every slot fit in the window, so that the
// next round goes out while the last is answered. Until an item has been
// measured, chunks hold one item each.
func (j *job) adaptiveChunk() int {
	if j.itemCost <= 0 {
		return 1
	}
	size := int(targetChunkTime / max(j.itemCost, minItemCost))
	return max(1, min(size, j.opts.Window/(2*j.credit())))
}

// send starts one shoal.map call for c's items on c.worker.
func (j *job) send(ctx context.Context, c *chunk, hedge bool) {
	cctx, cancel := context.WithCancel(ctx)
	c.id, c.cancel, c.started, c.hedge = j.nextChunk, cancel, time.Now(), hedge
	j.nextChunk++
	j.inflight[c.id] = c
	j.busy[c.worker.Name]++
	j.inflightBytes += len(c.args.Raw)
	for _, i := range c.items {
		s := j.slot(i)
		if !hedge {
			s.attempts++
			if s.attempts > 1 {
				j.stats.Retries++
			}
		}
		s.copies++
		c.tries = max(c.tries, int(s.attempts))
	}
	req := grid.MapRequest{Function: j.fn, Items: c.args, TimeoutMs: j.opts.ItemTimeout.Milliseconds(), Cache: j.opts.StoreResults || j.opts.Cache != nil}
	addr := c.worker.RPC
	go func() {
		reply, err := j.stub.Map(cctx, addr, req)
		j.done <- chunkDone{c: c, reply: reply, err: err}
	}()
}

// release counts c out of the copies of its items in flight: it was
// answered, or abandoned.
func (j *job) release(c *chunk) {
	for _, i := range c.items {
		if i >= j.low {
			j.slot(i).copies--
		}
	}
}

// completed handles a chunk's answer.
func (j *job) completed(d chunkDone) {
	c := d.c
	c.cancel()
	delete(j.inflight, c.id)
	j.busy[c.worker.Name]--
	j.inflightBytes -= len(c.args.Raw)
	b := j.breaker(c.worker.Name)
	if c.abandoned {
		if c.probe {
			b.Abandon() // its node went away: the probe tells nothing
		}
		j.recycle(c) // its items were requeued when it was abandoned
		return
	}
	j.release(c)
	node := j.nodeID(c.worker.Name)
	if d.err != nil {
		b.Failure(time.Now())
		j.failAll(c, node, rpc.ErrorOf(asWireError(d.err)))
		j.recycle(c)
		return
	}
	ends, err := splitValues(j.ends[:0], d.reply.Values, len(c.items))
	j.ends = ends
	if err != nil {
		b.Failure(time.Now())
		j.failAll(c, node, rpc.Errorf(rpc.KindUnavailable, "%s answered a malformed chunk: %v", c.worker.Name, err))
		j.recycle(c)
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
	errs := d.reply.Errors
	if !slices.IsSortedFunc(errs, func(a, b grid.ItemError) int { return a.Index - b.Index }) {
		errs = slices.Clone(errs)
		slices.SortStableFunc(errs, func(a, b grid.ItemError) int { return a.Index - b.Index })
	}
	var args [][]byte // each item's arguments, once an item must be sent again
	if len(errs) > 0 {
		args = make([][]byte, len(c.items))
		c.eachArgs(func(k int, a []byte) { args[k] = a })
	}
	raw := d.reply.Values.Raw
	e, ok, start := 0, 0, 0
	for k, i := range c.items {
		value := raw[start:ends[k]:ends[k]]
		start = ends[k]
		for e < len(errs) && errs[e].Index < k {
			e++
		}
		if j.isDone(i) {
			continue // a hedge got there first
		}
		if e == len(errs) || errs[e].Index != k {
			ok++
			j.deliver(i, value, nil, node, false)
			continue
		}
		err := rpc.ParseError(errs[e].Error)
		retryable := rpc.Retryable(err) || (j.opts.RetryFunctionErrors && errors.Is(err, rpc.ErrFunctionError))
		if retryable && j.slot(i).copies > 0 {
			continue // the other copy of a hedged chunk answers for it
		}
		j.failed(i, node, err, retryable, args[k])
	}
	j.perNode[node] += ok
	j.recycle(c)
}

// splitValues appends to ends where each of the n values in values ends,
// failing unless it holds exactly n well-formed values.
func splitValues(ends []int, values grid.Values, n int) ([]int, error) {
	if values.Count != n {
		return ends, fmt.Errorf("%d results for %d items", values.Count, n)
	}
	end := 0
	for k := 0; k < n; k++ {
		size, err := grid.ValueLen(values.Raw[end:])
		if err != nil {
			return ends, fmt.Errorf("result %d of %d: %w", k+1, n, err)
		}
		end += size
		ends = append(ends, end)
	}
	if end != len(values.Raw) {
		return ends, fmt.Errorf("%d bytes after %d results", len(values.Raw)-end, n)
	}
	return ends, nil
}

// failAll fails every item of c that has no result and no other copy in
// flight: its chunk was lost on node.
func (j *job) failAll(c *chunk, node uint32, e *rpc.Error) {
	c.eachArgs(func(k int, args []byte) {
		if i := c.items[k]; !j.isDone(i) && j.slot(i).copies == 0 {
			j.failed(i, node, e, true, args)
		}
	})
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

// failed retries item i, whose arguments are args, with backoff if it may,
// else delivers its error.
func (j *job) failed(i int, node uint32, e *rpc.Error, retryable bool, args []byte) {
	s := j.slot(i)
	s.lastNode = node
	if retryable && int(s.attempts) < j.opts.Attempts {
		backoff := time.Duration(1<<min(s.attempts-1, 6)) * backoffBase
		backoff = backoff/2 + rand.N(backoff)
		j.delayed = append(j.delayed, retry{item: i, at: time.Now().Add(backoff), args: args})
		return
	}
	j.deliver(i, nil, e, node, false)
}

// deliver records item i's result: hands it over at once, or with
// Ordered holds it until the items before it are delivered.
func (j *job) deliver(i int, value []byte, e *rpc.Error, node uint32, cached bool) {
	s := j.slot(i)
	s.done = true
	switch {
	case cached:
		j.stats.Cached++
		j.stats.OK++
	case e != nil:
		j.stats.Failed++
	default:
		j.stats.OK++
	}
	if j.opts.Ordered {
		s.value, s.err, s.node, s.cached = value, e, node, cached
		j.heldBytes += len(value)
		return
	}
	r := Result{Index: i, Value: value, Cached: cached, Node: j.nodes[node], Attempts: int(s.attempts)}
	if e != nil {
		r.Err = e
	}
	j.batch = append(j.batch, r)
	if len(j.batch) >= maxBatch {
		j.flush()
	}
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
	id := j.nodeID(name)
	for _, c := range j.inflightByID() {
		if c.worker.Name != name || c.abandoned {
			continue
		}
		c.abandoned = true
		c.cancel()
		j.release(c)
		c.eachArgs(func(k int, args []byte) {
			if i := c.items[k]; !j.isDone(i) && j.slot(i).copies == 0 {
				j.slot(i).lastNode = id
				j.queued = append(j.queued, queuedItem{index: i, args: args})
			}
		})
	}
}

// expireOverdue gives up the calls that have run past their callTimeout:
// their node may be frozen or cut off while the view still shows it alive.
// Each such call is canceled and its late answer ignored, its node's
// breaker counts a failure, and its items are retried (elsewhere, when
// another node has room) as after a Timeout, unless another copy of them
// runs.
func (j *job) expireOverdue(now time.Time) {
	for _, c := range j.inflightByID() {
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
		j.release(c)
		err := rpc.Errorf(rpc.KindTimeout, "%s on %s gave no answer within %v", grid.MethodMap, c.worker.Name, limit.Round(time.Millisecond))
		j.failAll(c, j.nodeID(c.worker.Name), err)
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
		if !j.anyUndelivered(c) {
			continue
		}
		w, ok := j.pickWorker(c.worker.Name, true)
		if !ok {
			return // a completion will make room
		}
		c.hedged = true
		j.stats.Reissued++
		j.reissue(ctx, c, w)
	}
}

// reissue sends c's items that have no result yet to w, as a hedge.
func (j *job) reissue(ctx context.Context, c *chunk, w grid.Member) {
	h := j.newChunk()
	c.eachArgs(func(k int, args []byte) {
		if i := c.items[k]; !j.isDone(i) {
			h.add(i, args)
		}
	})
	h.worker = w
	j.send(ctx, h, true)
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

// anyUndelivered reports whether some item of c has no result yet.
func (j *job) anyUndelivered(c *chunk) bool {
	for _, i := range c.items {
		if !j.isDone(i) {
			return true
		}
	}
	return false
}

// hedge re-issues the slowest chunk still running to an idle node when
// nothing else can be sent.
func (j *job) hedge(ctx context.Context) {
	if j.workWaiting() || len(j.delayed) > 0 || len(j.inflight) == 0 {
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
	if !j.anyUndelivered(slowest) {
		return
	}
	slowest.hedged = true
	j.stats.Reissued++
	j.reissue(ctx, slowest, idle[0])
}

// hedgeAfter is how long c may run before it is worth re-issuing.
func (j *job) hedgeAfter(c *chunk) time.Duration { return 2 * j.expectedChunkTime(len(c.items)) }

func (j *job) expectedChunkTime(items int) time.Duration {
	if j.itemCost <= 0 {
		return targetChunkTime
	}
	return max(j.itemCost*time.Duration(items), time.Millisecond)
}

// abort stops the job with err.
func (j *job) abort(err error) (Stats, error) { return j.finish(), err }

// finish cancels whatever still runs (the losers of hedges, or everything
// when the job is canceled; the nodes stop those calls too) and waits for
// it.
func (j *job) finish() Stats {
	j.finished = true
	for _, c := range j.inflight {
		c.cancel()
	}
	for len(j.inflight) > 0 {
		d := <-j.done
		delete(j.inflight, d.c.id)
	}
	j.stats.Items = j.next
	j.stats.PerNode = make(map[string]int)
	for id, n := range j.perNode {
		if n > 0 {
			j.stats.PerNode[j.nodes[id]] += n
		}
	}
	j.stats.Wall = time.Since(j.start)
	return j.stats
}
