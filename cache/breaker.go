package cache

import (
	"sync"
	"time"
)

// breaker stops asking a server that keeps failing. After threshold
// failures in a row it opens for cooldown; then one request is let through
// as a probe: success closes it, failure opens it again.
type breaker struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	failures  int
	openUntil time.Time
	probing   bool
}

// Breaker states, as Stats reports them.
const (
	breakerClosed   = "closed"
	breakerOpen     = "open"
	breakerHalfOpen = "half-open"
)

// allow reports whether a request may go to the server now.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.threshold:
		return true
	case now.Before(b.openUntil) || b.probing:
		return false
	}
	b.probing = true
	return true
}

func (b *breaker) success() {
	b.mu.Lock()
	b.failures, b.probing = 0, false
	b.mu.Unlock()
}

// failure records a failed request and reports whether it opened the
// breaker.
func (b *breaker) failure(now time.Time) (opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.probing = false
	if b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
		return true
	}
	return false
}

func (b *breaker) state(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.threshold:
		return breakerClosed
	case b.probing || !now.Before(b.openUntil):
		return breakerHalfOpen
	}
	return breakerOpen
}
