package rpc

import (
	"fmt"
	"sync/atomic"
)

// DefaultMaxInFlightBytes is a server's default budget of bytes in flight
// (ServerConfig.MaxInFlightBytes): room for the largest message the
// default MaxMessageSize lets in, a 64 MiB string say, held both as
// received and decoded, with its reply, and for smaller calls beside it.
const DefaultMaxInFlightBytes = 256 << 20

// Admission by bytes estimates what a call holds in memory from what its
// reader sees: the message as received, its decoded copy (about as many
// bytes again, since strings and binaries are copied out of the message)
// and decodedItemBytes for each msgpack value in it. Decoding a value into
// an interface costs at most about 40 bytes beyond its encoding, measured
// for msgpack/v5: 13 for a small integer in an []any, 25 for a one-element
// array in an []any, 27 for a short string, 36 for a map[string]any entry;
// typed destinations cost less.
const decodedItemBytes = 40

// uncountedBytes is how much a call may need without being counted: calls
// this small are never refused for bytes, so large calls cannot crowd them
// out, and cost no atomic operation. Their number is bounded instead, by
// MaxInFlight and by ServerConfig.Admit (a node's executor queue).
const uncountedBytes = 64 << 10

// budgetStep is how much more than it needs a large message takes from the
// budget at a time, so its reader does not touch the shared counter for
// every value it reads.
const budgetStep = 1 << 20

// byteBudget is a server's allowance of bytes held by calls in flight:
// messages being read, calls queued and running with their decoded
// arguments, replies until written.
type byteBudget struct {
	limit int64
	used  atomic.Int64
}

// take adds n to what is used if that stays within the limit.
func (b *byteBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// force adds n whatever the limit: for what is held already and cannot be
// refused, such as a computed reply.
func (b *byteBudget) force(n int64) { b.used.Add(n) }

// give returns n taken or forced before.
func (b *byteBudget) give(n int64) {
	if n != 0 {
		b.used.Add(-n)
	}
}

// overBudget is what a server's reader returns, with the head of the
// message, for a message it read to the end but did not keep because the
// budget had no room for it.
type overBudget struct {
	need  int64 // the estimate for the whole message
	used  int64 // what the budget held when it refused
	limit int64
}

func (e *overBudget) Error() string {
	if e.need > e.limit {
		return fmt.Sprintf("the call needs about %d bytes in flight, more than the server's whole budget of %d",
			e.need, e.limit)
	}
	return fmt.Sprintf("the call needs about %d bytes in flight and %d of the server's %d are in use; try again later",
		e.need, e.used, e.limit)
}
