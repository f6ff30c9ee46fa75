package node

import (
	"context"
	"sync/atomic"

	"github.com/shoalgrid/shoal/rpc"
)

// Executor bounds how many calls run at once. A call beyond the slots waits
// in a queue of bounded length, first come first served; beyond that it is
// refused with an Overloaded error, which callers may retry elsewhere.
type Executor struct {
	slots    chan struct{}
	maxQueue int64
	queued   atomic.Int64
}

// NewExecutor returns an executor with slots running places and room for
// queue waiting calls.
func NewExecutor(slots, queue int) *Executor {
	return &Executor{slots: make(chan struct{}, slots), maxQueue: int64(queue)}
}

// Acquire waits for a slot, or until ctx ends, and returns the function
// that gives it back.
func (e *Executor) Acquire(ctx context.Context) (release func(), err error) {
	select {
	case e.slots <- struct{}{}:
		return e.release, nil
	default:
	}
	if e.queued.Add(1) > e.maxQueue {
		e.queued.Add(-1)
		return nil, rpc.Errorf(rpc.KindOverloaded, "all %d slots busy and %d calls queued", cap(e.slots), e.maxQueue)
	}
	defer e.queued.Add(-1)
	select {
	case e.slots <- struct{}{}:
		return e.release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (e *Executor) release() { <-e.slots }

// Slots returns how many calls may run at once.
func (e *Executor) Slots() int { return cap(e.slots) }

// Load returns how many calls run and how many wait now.
func (e *Executor) Load() (running, queued int) {
	return len(e.slots), int(e.queued.Load())
}
