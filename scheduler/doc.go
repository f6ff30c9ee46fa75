// Package scheduler runs map jobs over a grid: it applies one registered
// function to a stream of inputs on the nodes that offer it, in chunks
// sent with one shoal.map call each, and hands the results back in
// batches, as they are answered or in input order.
//
// A job reaches the nodes through a grid.Caller and learns who they are
// from a Membership: *rpc.Pool and *grid.Views in a client, in-process
// fakes in tests. It takes its items from a Source, one at a time, only as
// its window has room: an item is taken only while it is fewer than
// Options.Window items past the earliest item not yet handed back, so a
// job of any length holds the same memory (the state of its window, the
// chunks in flight, and, in input order, the results held back behind a
// slow item), and a chunk's arguments are encoded into it as it is
// filled. Everything else is the job's own, on one goroutine:
//
//   - chunks are sized from the measured cost of an item, so fast items
//     travel thousands to a call (at most 1 MiB of arguments, and small
//     enough for two rounds of chunks on every slot to fit in the window)
//     and slow ones one by one;
//   - each node holds at most ChunksPerSlot chunks per slot, and the node
//     with the most free room per slot gets the next one;
//   - an item that failed for a retryable reason (a node lost, a broken
//     connection, a timeout, an overloaded node) is tried again after an
//     exponential backoff with jitter, on another node when there is one,
//     up to Attempts tries in all;
//   - a node that fails three chunks in a row gets none for BreakerCooldown;
//     then one chunk of one item probes it;
//   - when a newer View shows a node gone (dead, left, or no longer listed,
//     whether or not it was suspect first), its chunks in flight go
//     elsewhere at once and its late answers are ignored;
//   - when a View shows a node suspect, its chunks in flight are re-issued
//     to other nodes at once, as hedges: the node may yet answer, and the
//     first answer wins;
//   - a call unanswered for ten times its items' measured cost (at least
//     MinCallTimeout, 5s, and with ItemTimeout at least what the node may
//     spend on them; doubled on each retry) is given up as lost, since a
//     frozen node may never be declared dead in the job's view: its items
//     are retried as after a Timeout and its late answer is ignored;
//   - with Hedge, the slowest chunks at the tail are re-issued to idle
//     nodes and the first answer wins;
//   - every item is delivered exactly once.
package scheduler
