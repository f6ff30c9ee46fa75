package breaker

import (
	"sync"
	"testing"
	"time"
)

func TestOpensAfterThresholdAndProbesOnce(t *testing.T) {
	b := New(2, time.Second)
	now := time.Now()
	if !b.Allow(now) || b.Failure(now) || !b.Allow(now) || b.State(now) != Closed {
		t.Fatal("one failure must not open the breaker")
	}
	if !b.Failure(now) || b.Allow(now) || b.Ready(now) || b.State(now) != Open {
		t.Fatal("two failures in a row must open it")
	}
	if got := b.OpenUntil(); !got.Equal(now.Add(time.Second)) {
		t.Fatalf("OpenUntil = %v, want the end of the cooldown", got)
	}
	later := now.Add(2 * time.Second)
	if b.State(later) != HalfOpen || !b.Ready(later) || !b.Allow(later) {
		t.Fatal("after the cooldown a probe must go through")
	}
	if b.Ready(later) || b.Allow(later) || b.State(later) != HalfOpen {
		t.Fatal("a second request went through while the probe is under way")
	}
	if !b.Failure(later) || b.Allow(later) || b.State(later) != Open {
		t.Fatal("a failed probe must open it again")
	}
	evenLater := later.Add(2 * time.Second)
	if !b.Allow(evenLater) {
		t.Fatal("no probe after the second cooldown")
	}
	b.Success()
	if b.State(evenLater) != Closed || !b.Allow(evenLater) || !b.Allow(evenLater) || !b.OpenUntil().IsZero() {
		t.Fatal("a good probe must close it")
	}
}

func TestSuccessResetsTheCount(t *testing.T) {
	b := New(2, time.Second)
	now := time.Now()
	b.Failure(now)
	b.Success()
	if b.Failure(now) || b.State(now) != Closed {
		t.Fatal("failures must count only in a row")
	}
}

func TestAbandonedProbeGivesItsPlaceBack(t *testing.T) {
	b := New(1, time.Second)
	now := time.Now()
	b.Failure(now)
	later := now.Add(2 * time.Second)
	if !b.Allow(later) || b.Allow(later) {
		t.Fatal("want exactly one probe")
	}
	b.Abandon()
	if !b.Ready(later) || !b.Allow(later) {
		t.Fatal("an abandoned probe must let another probe go")
	}
}

func TestOneProbeAmongConcurrentCallers(t *testing.T) {
	b := New(1, time.Millisecond)
	now := time.Now()
	b.Failure(now)
	later := now.Add(time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.Allow(later) {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("%d of 16 concurrent callers went through a half-open breaker, want 1", allowed)
	}
}
