package shoal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"sort"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// Args is an input holding a whole argument list: Map over []Args to call
// a function of several arguments. Any other input type is passed as the
// function's single argument.
type Args []any

// Item is one input's outcome, as Stream and StreamSeq yield them.
type Item[Out any] struct {
	Index    int   // the input's position
	Value    Out   // the result, when Err is nil
	Err      error // the item's own error (its function's, or the last try's)
	Cached   bool  // served from the cache
	Node     string
	Attempts int
}

// Stats describes a finished job; see scheduler.Stats.
type Stats = scheduler.Stats

// Option tunes a Map or Stream job.
type Option func(*jobOptions)

type jobOptions struct {
	err      error // a bad option, reported before the job starts
	sched    scheduler.Options
	noCache  bool
	progress func(done, total int)
	stats    *Stats
	total    int // the inputs a sequence holds, when WithTotal says; else -1 for a sequence
}

// WithAttempts sets how many times an item is tried in all, the first
// try included (default 3); items failing for a retryable reason (a lost
// node, a broken connection, a timeout, an overloaded node) are retried up
// to that. Stats.Retries counts the tries beyond each item's first.
func WithAttempts(n int) Option {
	return func(o *jobOptions) {
		if n < 1 {
			o.fail(fmt.Errorf("shoal: WithAttempts(%d): an item needs at least one attempt", n))
		}
		o.sched.Attempts = n
	}
}

func (o *jobOptions) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

// WithRetryFunctionErrors retries items whose function failed, not only
// lost nodes, timeouts and overloaded nodes.
func WithRetryFunctionErrors() Option {
	return func(o *jobOptions) { o.sched.RetryFunctionErrors = true }
}

// WithTimeout bounds each item; its context ends on the node too. It also
// lengthens the time a call may go unanswered before the job gives it up
// as lost (see scheduler.Options.MinCallTimeout) to at least what the node
// may spend on its items.
func WithTimeout(d time.Duration) Option {
	return func(o *jobOptions) {
		if d < 0 {
			o.fail(fmt.Errorf("shoal: WithTimeout(%v): a timeout cannot be negative", d))
		}
		o.sched.ItemTimeout = d
	}
}

// WithChunkSize fixes how many items travel per call (default: sized from
// each item's measured cost).
func WithChunkSize(n int) Option {
	return func(o *jobOptions) {
		if n < 0 {
			o.fail(fmt.Errorf("shoal: WithChunkSize(%d): a chunk cannot hold fewer than 0 items (0 sizes chunks by item cost)", n))
		}
		o.sched.ChunkSize = n
	}
}

// WithHedging re-issues the slowest chunks at the tail of the job to idle
// nodes; the first answer wins.
func WithHedging() Option { return func(o *jobOptions) { o.sched.Hedge = true } }

// WithoutCache sends every item, even for cacheable functions.
func WithoutCache() Option { return func(o *jobOptions) { o.noCache = true } }

// WithProgress calls f as results arrive, once per batch of them (after
// Stream has yielded the batch, on the goroutine ranging over it), with
// how many items are done and how many there are: -1 for inputs given as
// an iter.Seq, whose length is unknown. f must not block.
func WithProgress(f func(done, total int)) Option { return func(o *jobOptions) { o.progress = f } }

// WithTotal tells a StreamSeq or MapSeq job how many inputs its sequence
// holds, for WithProgress and the grid's job listing (its progress and
// time left); without it a sequence's length is unknown until it ends.
// Jobs over slices know their length already.
func WithTotal(n int) Option {
	return func(o *jobOptions) {
		if n < 0 {
			o.fail(fmt.Errorf("shoal: WithTotal(%d): a job cannot have fewer than no inputs", n))
		}
		o.total = n
	}
}

// InOrder makes Stream and StreamSeq yield results in input order: a
// result waits for those of the items before it. The job then holds up to
// scheduler.DefaultWindow results back behind a slow item, and takes no
// new items meanwhile. (Map and MapSeq return results in input order
// anyway.)
func InOrder() Option { return func(o *jobOptions) { o.sched.Ordered = true } }

// WithStats stores the job's statistics in *s when it ends.
func WithStats(s *Stats) Option { return func(o *jobOptions) { o.stats = s } }

// ItemErrors reports the items of a Map that failed, by input index.
type ItemErrors map[int]error

func (e ItemErrors) Error() string {
	idx := make([]int, 0, len(e))
	for i := range e {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	fmt.Fprintf(&b, "shoal: %d items failed", len(e))
	for k, i := range idx {
		if k == 3 {
			b.WriteString("; ...")
			break
		}
		fmt.Fprintf(&b, "; item %d: %v", i, e[i])
	}
	return b.String()
}

// Map applies fn to every input across the grid and returns the results
// in input order. If some items fail, the others are still returned and
// the error is an ItemErrors naming the failed ones; an error of the job
// itself (no node offers fn, ctx ended, an input that cannot be encoded)
// returns nil results.
func Map[In, Out any](ctx context.Context, c *Client, fn string, inputs []In, opts ...Option) ([]Out, error) {
	o, err := prepare(ctx, c, fn, opts)
	if err != nil {
		return nil, err
	}
	out := make([]Out, len(inputs))
	failed := ItemErrors{}
	var dec resultDecoder
	_, err = run(ctx, c, fn, &sliceSource[In]{inputs: inputs}, len(inputs), o, func(batch []scheduler.Result) bool {
		for _, r := range batch {
			storeResult(&dec, fn, r, &out[r.Index], failed)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if len(failed) > 0 {
		return out, failed
	}
	return out, nil
}

// storeResult decodes r's value into *dst, or records its error (or the
// decoder's) in failed and leaves *dst zero.
func storeResult[Out any](dec *resultDecoder, fn string, r scheduler.Result, dst *Out, failed ItemErrors) {
	if r.Err != nil {
		failed[r.Index] = r.Err
	} else if err := decodeResult(dec, r.Value, dst); err != nil {
		var zero Out
		*dst = zero
		failed[r.Index] = &rpc.DecodeError{Method: fn, Err: err}
	}
}

// MapSeq is Map for inputs given as a sequence, read as the job has room
// for them (see StreamSeq); it returns the results in input order.
func MapSeq[In, Out any](ctx context.Context, c *Client, fn string, inputs iter.Seq[In], opts ...Option) ([]Out, error) {
	o, err := prepare(ctx, c, fn, opts)
	if err != nil {
		return nil, err
	}
	o.sched.Ordered = true
	var out []Out
	failed := ItemErrors{}
	var dec resultDecoder
	src := startFeed(inputs)
	defer src.close()
	_, err = run(ctx, c, fn, src, -1, o, func(batch []scheduler.Result) bool {
		for _, r := range batch {
			var zero Out
			out = append(out, zero)
			storeResult(&dec, fn, r, &out[r.Index], failed)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if len(failed) > 0 {
		return out, failed
	}
	return out, nil
}

// Stream is Map yielding each item as it completes, in completion order,
// or in input order with InOrder. A job-level error is yielded last, with
// a zero Item. The job runs in the loop's own goroutine: while the loop's
// body runs, the chunks in flight go on, and new ones wait.
func Stream[In, Out any](ctx context.Context, c *Client, fn string, inputs []In, opts ...Option) iter.Seq2[Item[Out], error] {
	return func(yield func(Item[Out], error) bool) {
		o, err := prepare(ctx, c, fn, opts)
		if err != nil {
			yield(Item[Out]{}, err)
			return
		}
		streamFrom(ctx, c, fn, &sliceSource[In]{inputs: inputs}, len(inputs), o, yield)
	}
}

// StreamSeq is Stream for inputs given as a sequence, of any length: the
// job reads inputs ahead of what it sends by at most 64 KiB of encoded
// items, and holds at most its window of items (scheduler.DefaultWindow),
// so it runs in constant memory however long inputs is. inputs runs on a
// goroutine of its own, so results keep coming while it waits for its
// next item. When the job ends before inputs does (the loop broke, ctx
// ended, the job failed), inputs' next yield returns false; StreamSeq
// returns once inputs has returned. A panic in inputs is raised again in
// the loop's goroutine.
func StreamSeq[In, Out any](ctx context.Context, c *Client, fn string, inputs iter.Seq[In], opts ...Option) iter.Seq2[Item[Out], error] {
	return func(yield func(Item[Out], error) bool) {
		o, err := prepare(ctx, c, fn, opts)
		if err != nil {
			yield(Item[Out]{}, err)
			return
		}
		src := startFeed(inputs)
		defer src.close()
		streamFrom(ctx, c, fn, src, -1, o, yield)
	}
}

// streamFrom runs the job and yields its items.
func streamFrom[Out any](ctx context.Context, c *Client, fn string, src scheduler.Source, total int, o *jobOptions, yield func(Item[Out], error) bool) {
	var dec resultDecoder
	value := new(Out) // decoded into here: a result's own variable would escape, one allocation per item
	stopped, err := run(ctx, c, fn, src, total, o, func(batch []scheduler.Result) bool {
		for _, r := range batch {
			it := Item[Out]{Index: r.Index, Err: r.Err, Cached: r.Cached, Node: r.Node, Attempts: r.Attempts}
			if r.Err == nil {
				var zero Out
				*value = zero
				if err := decodeResult(&dec, r.Value, value); err != nil {
					it.Err = &rpc.DecodeError{Method: fn, Err: err}
				} else {
					it.Value = *value
				}
			}
			if !yield(it, nil) {
				return false
			}
		}
		return true
	})
	if err != nil && !stopped {
		yield(Item[Out]{}, err)
	}
}

// readOptions applies opts, failing on the first bad one.
func readOptions(opts []Option) (*jobOptions, error) {
	o := &jobOptions{total: -1}
	for _, opt := range opts {
		opt(o)
	}
	return o, o.err
}

// prepare reads the options and finds fn in the grid, before any input is
// read.
func prepare(ctx context.Context, c *Client, fn string, opts []Option) (*jobOptions, error) {
	o, err := readOptions(opts)
	if err != nil {
		return nil, err
	}
	view := c.view()
	f, ok := view.Function(fn)
	if !ok {
		return nil, unknownFunction(view, fn)
	}
	o.sched.Version = f.Version
	if f.Cacheable && !o.noCache {
		o.sched.Cache = c.resultCache(ctx)
		o.sched.StoreResults = true
	}
	return o, nil
}

// run runs fn over src on c's grid and hands each batch of results to
// each, which returns false to end the job early (stopped is then true,
// and err nil).
func run(ctx context.Context, c *Client, fn string, src scheduler.Source, total int, o *jobOptions, each func([]scheduler.Result) bool) (stopped bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := 0
	if total < 0 {
		total = o.total
	}
	g := scheduler.Grid{Caller: c.pool, Members: &c.views}
	reg := c.attach(fn, total, cancel)
	st, err := scheduler.Run(ctx, g, fn, src, o.sched, func(batch []scheduler.Result) {
		reg.count(batch)
		if stopped {
			return // the job ends at its next turn
		}
		if !each(batch) {
			stopped = true
			cancel()
			return
		}
		done += len(batch)
		if o.progress != nil {
			o.progress(done, total)
		}
	})
	if o.stats != nil {
		*o.stats = st
	}
	if stopped {
		reg.finish(st, context.Canceled) // its caller stopped reading
	} else {
		reg.finish(st, err)
	}
	if reg.canceledByGrid.Load() && err != nil {
		return false, fmt.Errorf("%w: job %s", ErrJobCanceled, reg.progress().ID)
	}
	if stopped {
		return true, nil
	}
	var inputErr *scheduler.InputError
	if errors.As(err, &inputErr) {
		err = fmt.Errorf("shoal: %w", err)
	}
	return false, err
}

// sliceSource gives a slice's inputs to a job, encoding each into the
// chunk that carries it.
type sliceSource[In any] struct {
	inputs []In
	next   int
	enc    argEncoder
}

func (s *sliceSource[In]) Next(buf []byte) ([]byte, error) {
	if s.next >= len(s.inputs) {
		return buf, io.EOF
	}
	s.next++
	return appendInput(&s.enc, buf, &s.inputs[s.next-1])
}

// resultDecoder decodes results with one msgpack decoder, reset onto each.
type resultDecoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

// decodeResult decodes the encoded result value into *out; a RawMessage
// takes the bytes as they are, without copying them (nothing writes them
// again). Integers into an int or int64 are read directly, exactly as
// msgpack's decoder reads them.
func decodeResult[Out any](d *resultDecoder, value []byte, out *Out) error {
	switch p := any(out).(type) {
	case *msgpack.RawMessage:
		*p = value
		return nil
	case *int:
		if n, ok := plainInt(value); ok {
			*p = int(n)
			return nil
		}
	case *int64:
		if n, ok := plainInt(value); ok {
			*p = n
			return nil
		}
	}
	d.r.Reset(value)
	if d.dec == nil {
		d.dec = msgpack.NewDecoder(&d.r)
	} else {
		d.dec.Reset(&d.r)
	}
	return d.dec.Decode(out)
}

// plainInt reads an integer encoded in one of msgpack's integer forms, as
// msgpack's decoder does (a uint64 beyond int64 wraps, as there); ok is
// false for anything else, left to the decoder.
func plainInt(b []byte) (n int64, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	c := b[0]
	if msgpcode.IsFixedNum(c) {
		return int64(int8(c)), len(b) == 1
	}
	size := 0
	switch c {
	case msgpcode.Uint8, msgpcode.Int8:
		size = 1
	case msgpcode.Uint16, msgpcode.Int16:
		size = 2
	case msgpcode.Uint32, msgpcode.Int32:
		size = 4
	case msgpcode.Uint64, msgpcode.Int64:
		size = 8
	default:
		return 0, false
	}
	if len(b) != 1+size {
		return 0, false
	}
	switch c {
	case msgpcode.Uint8:
		return int64(b[1]), true
	case msgpcode.Int8:
		return int64(int8(b[1])), true
	case msgpcode.Uint16:
		return int64(binary.BigEndian.Uint16(b[1:])), true
	case msgpcode.Int16:
		return int64(int16(binary.BigEndian.Uint16(b[1:]))), true
	case msgpcode.Uint32:
		return int64(binary.BigEndian.Uint32(b[1:])), true
	case msgpcode.Int32:
		return int64(int32(binary.BigEndian.Uint32(b[1:]))), true
	}
	return int64(binary.BigEndian.Uint64(b[1:])), true
}
