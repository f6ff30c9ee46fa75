// Package flight runs one fetch per key at a time: a caller asking for a
// key whose fetch is under way waits for that fetch's result instead of
// starting its own, as groupcache's singleflight does, but may stop
// waiting when its own context ends.
package flight

import (
	"context"
	"errors"
	"sync"
)

// Group de-duplicates concurrent fetches by key. The zero value is ready to
// use; it is safe for concurrent use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{} // closed when val and err are set
	val     V
	err     error
	waiters int // callers waiting for it, beside the one running it
}

// Do returns fn's result for key. If a fetch of key is under way it waits
// for that one instead (or returns ctx's error when ctx ends first);
// otherwise it runs fn itself, in the caller's goroutine. A fetch that
// ended because its own caller's context ended says nothing about the key,
// so a waiter whose context is still live then runs fn itself.
//
// Results are not kept: callers that cache them check their cache before
// Do, and again inside fn.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func() (V, error)) (V, error) {
	for {
		g.mu.Lock()
		if c, busy := g.calls[key]; busy {
			c.waiters++
			g.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				var zero V
				return zero, ctx.Err()
			}
			if isContextError(c.err) && ctx.Err() == nil {
				continue
			}
			return c.val, c.err
		}
		if g.calls == nil {
			g.calls = make(map[K]*call[V])
		}
		c := &call[V]{done: make(chan struct{})}
		g.calls[key] = c
		g.mu.Unlock()
		g.run(key, c, fn)
		return c.val, c.err
	}
}

// run runs fn for c and releases the waiters even if fn panics.
func (g *Group[K, V]) run(key K, c *call[V], fn func() (V, error)) {
	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.err = errPanicked // what waiters see if fn panics
	c.val, c.err = fn()
}

var errPanicked = errors.New("flight: the fetch panicked")

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
