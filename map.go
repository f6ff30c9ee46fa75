package shoal

import (
	"context"
	"fmt"
	"iter"
	"sort"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// Args is an input holding a whole argument list: Map over []Args to call
// a function of several arguments. Any other input type is passed as the
// function's single argument.
type Args []any

// Item is one input's outcome, as Stream yields them.
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

// WithProgress calls f after each item with how many are done; f must not
// block.
func WithProgress(f func(done, total int)) Option { return func(o *jobOptions) { o.progress = f } }

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
// itself (no node offers fn, ctx ended) returns nil results.
func Map[In, Out any](ctx context.Context, c *Client, fn string, inputs []In, opts ...Option) ([]Out, error) {
	out := make([]Out, len(inputs))
	failed := ItemErrors{}
	for it, err := range Stream[In, Out](ctx, c, fn, inputs, opts...) {
		if err != nil {
			return nil, err
		}
		if it.Err != nil {
			failed[it.Index] = it.Err
			continue
		}
		out[it.Index] = it.Value
	}
	if len(failed) > 0 {
		return out, failed
	}
	return out, nil
}

// Stream is Map yielding each item as it completes, in completion order.
// A job-level error is yielded last, with a zero Item.
func Stream[In, Out any](ctx context.Context, c *Client, fn string, inputs []In, opts ...Option) iter.Seq2[Item[Out], error] {
	return func(yield func(Item[Out], error) bool) {
		var o jobOptions
		for _, opt := range opts {
			opt(&o)
		}
		if o.err != nil {
			yield(Item[Out]{}, o.err)
			return
		}
		items := make([]msgpack.RawMessage, len(inputs))
		for i, in := range inputs {
			var err error
			if items[i], err = encodeArgs(in); err != nil {
				yield(Item[Out]{}, fmt.Errorf("shoal: input %d: %w", i, err))
				return
			}
		}
		view := c.view()
		f, ok := view.Function(fn)
		if !ok {
			yield(Item[Out]{}, unknownFunction(view, fn))
			return
		}
		o.sched.Version = f.Version
		if f.Cacheable && !o.noCache {
			o.sched.Cache = c.resultCache(ctx)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()

		results := make(chan scheduler.Result, 256)
		type outcome struct {
			stats scheduler.Stats
			err   error
		}
		finished := make(chan outcome, 1)
		go func() {
			g := scheduler.Grid{Caller: c.pool, Members: &c.views}
			st, err := scheduler.Run(ctx, g, fn, items, o.sched, func(r scheduler.Result) { results <- r })
			close(results)
			finished <- outcome{st, err}
		}()
		done, stopped := 0, false
		for r := range results {
			if stopped {
				continue // drain so the job can end
			}
			done++
			if o.progress != nil {
				o.progress(done, len(inputs))
			}
			it := Item[Out]{Index: r.Index, Err: r.Err, Cached: r.Cached, Node: r.Node, Attempts: r.Attempts}
			if r.Err == nil {
				if err := msgpack.Unmarshal(r.Value, &it.Value); err != nil {
					it.Err = &rpc.DecodeError{Method: fn, Err: err}
				}
			}
			if !yield(it, nil) {
				stopped = true
				cancel()
			}
		}
		res := <-finished
		if o.stats != nil {
			*o.stats = res.stats
		}
		if res.err != nil && !stopped {
			yield(Item[Out]{}, res.err)
		}
	}
}

// encodeArgs encodes an input as the argument array of one call.
func encodeArgs(in any) ([]byte, error) {
	args, ok := in.(Args)
	if !ok {
		args = Args{in}
	}
	return msgpack.Marshal([]any(args))
}
