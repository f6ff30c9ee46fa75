// Package breaker stops sending requests to a peer that keeps failing: a
// memcached server, a grid node. After Threshold failures in a row the
// breaker opens for Cooldown; then it lets one request through as a probe:
// success closes it, failure opens it again.
package breaker

import (
	"sync"
	"time"
)

// State is where a breaker stands.
type State string

// The states of a breaker.
const (
	Closed   State = "closed"    // requests flow
	Open     State = "open"      // requests are refused until the cooldown ends
	HalfOpen State = "half-open" // the cooldown ended: one probe may go, or is under way
)

// Breaker is one peer's circuit breaker. Make it with New; it is safe for
// concurrent use.
type Breaker struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	failures  int       // in a row
	openUntil time.Time // when an open breaker lets a probe through
	probing   bool      // a probe is under way
}

// New returns a closed breaker that opens after threshold failures in a row
// (at least 1) and stays open for cooldown.
func New(threshold int, cooldown time.Duration) *Breaker {
	return &Breaker{threshold: max(threshold, 1), cooldown: cooldown}
}

// Ready reports whether a request may go now, without taking the probe's
// place: the breaker is closed, or half-open with no probe under way.
func (b *Breaker) Ready(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures < b.threshold || (!b.probing && !now.Before(b.openUntil))
}

// Allow reports whether a request may go now. When the breaker is
// half-open it takes the one probe's place, and the caller must then report
// the probe's outcome with Success, Failure or Abandon.
func (b *Breaker) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.threshold:
		return true
	case b.probing || now.Before(b.openUntil):
		return false
	}
	b.probing = true
	return true
}

// Success records a request that worked: the breaker closes.
func (b *Breaker) Success() {
	b.mu.Lock()
	b.failures, b.probing = 0, false
	b.mu.Unlock()
}

// Failure records a failed request and reports whether the breaker opened
// (or opened again) because of it.
func (b *Breaker) Failure(now time.Time) (opened bool) {
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

// Abandon gives the probe's place back when the probe ended without telling
// whether the peer works (it was canceled, say).
func (b *Breaker) Abandon() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// State returns where the breaker stands at now.
func (b *Breaker) State(now time.Time) State {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.failures < b.threshold:
		return Closed
	case b.probing || !now.Before(b.openUntil):
		return HalfOpen
	}
	return Open
}

// OpenUntil returns when an open breaker next lets a probe through; the
// zero time when it is closed.
func (b *Breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
		return time.Time{}
	}
	return b.openUntil
}
