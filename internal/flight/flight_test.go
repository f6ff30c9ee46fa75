package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	var g Group[string, int]
	var runs atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	results := make(chan int, 10)
	fetch := func() (int, error) {
		if runs.Add(1) == 1 {
			close(started)
		}
		<-release
		return 42, nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		v, _ := g.Do(context.Background(), "k", fetch)
		results <- v
	}()
	<-started
	for range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _ := g.Do(context.Background(), "k", fetch)
			results <- v
		}()
	}
	waitFor(t, func() bool { return g.waiting("k") == 9 })
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 42 {
			t.Fatalf("a caller got %d", v)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d fetches for ten concurrent callers, want 1", n)
	}
	if v, err := g.Do(context.Background(), "k", func() (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Fatalf("results are not kept: got %d, %v", v, err)
	}
}

func TestWaiterOnlyWaitsWhileWaiting(t *testing.T) {
	var g Group[string, int]
	release := make(chan struct{})
	var fetches atomic.Int32
	leader := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), "k", func() (int, error) { fetches.Add(1); <-release; return 1, nil })
		leader <- err
	}()
	waitFor(t, func() bool { return fetches.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := g.Do(ctx, "k", func() (int, error) { fetches.Add(1); return 2, nil })
	if !errors.Is(err, context.DeadlineExceeded) || fetches.Load() != 1 {
		t.Fatalf("waiter with an ended context: %v after %d fetches", err, fetches.Load())
	}
	close(release)
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
}

func TestWaiterRunsItselfWhenTheLeaderGaveUp(t *testing.T) {
	var g Group[string, int]
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	inFetch := make(chan struct{})
	leader := make(chan error, 1)
	go func() {
		_, err := g.Do(leaderCtx, "k", func() (int, error) {
			close(inFetch)
			<-leaderCtx.Done()
			return 0, leaderCtx.Err()
		})
		leader <- err
	}()
	<-inFetch
	waiter := make(chan int, 1)
	go func() {
		v, err := g.Do(context.Background(), "k", func() (int, error) { return 5, nil })
		if err != nil {
			v = -1
		}
		waiter <- v
	}()
	waitFor(t, func() bool { return g.waiting("k") == 1 })
	cancelLeader()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v", err)
	}
	if v := <-waiter; v != 5 {
		t.Fatalf("waiter got %d; it should have fetched itself after the leader gave up", v)
	}
}

func TestSharedErrorsReachWaiters(t *testing.T) {
	var g Group[int, string]
	boom := errors.New("boom")
	if _, err := g.Do(context.Background(), 1, func() (string, error) { return "", boom }); err != boom {
		t.Fatal(err)
	}
}

func TestPanicReleasesWaiters(t *testing.T) {
	var g Group[string, int]
	inFetch := make(chan struct{})
	release := make(chan struct{})
	go func() {
		defer func() { recover() }()
		g.Do(context.Background(), "k", func() (int, error) {
			close(inFetch)
			<-release
			panic("fetch failed badly")
		})
	}()
	<-inFetch
	got := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), "k", func() (int, error) { return 0, nil })
		got <- err
	}()
	close(release)
	select {
	case err := <-got:
		if err != nil && !errors.Is(err, errPanicked) {
			t.Fatalf("waiter after a panic: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a panicking fetch left its waiter hanging")
	}
}

// waiting returns how many callers wait for the fetch of key.
func (g *Group[K, V]) waiting(key K) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		return c.waiters
	}
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
