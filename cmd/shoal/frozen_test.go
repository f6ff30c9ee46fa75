package main

import (
	"context"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// sleepJob is a running Map of the sleep function over the client's grid,
// counting each item's results as they come.
type sleepJob struct {
	ms    int
	done  chan struct{} // closed when the job has ended
	stats shoal.Stats

	mu         sync.Mutex
	seen       map[int]int // results per item
	bad        []shoal.Item[int]
	err        error     // the job's own error
	firstRetry time.Time // when the first item tried more than once was delivered
	end        time.Time
}

// startSleepJob maps sleep(ms) over n inputs on c.
func startSleepJob(ctx context.Context, c *shoal.Client, n, ms int) *sleepJob {
	j := &sleepJob{ms: ms, done: make(chan struct{}), seen: make(map[int]int)}
	inputs := make([]int, n)
	for i := range inputs {
		inputs[i] = ms
	}
	go func() {
		defer close(j.done)
		for it, err := range shoal.Stream[int, int](ctx, c, "sleep", inputs, shoal.WithStats(&j.stats)) {
			j.mu.Lock()
			switch {
			case err != nil:
				j.err = err
			case it.Err != nil || it.Value != ms:
				j.bad = append(j.bad, it)
			default:
				j.seen[it.Index]++
				if it.Attempts > 1 && j.firstRetry.IsZero() {
					j.firstRetry = time.Now()
				}
			}
			j.mu.Unlock()
		}
		j.end = time.Now()
	}()
	return j
}

// wait waits up to timeout for the job to end and checks that it delivered
// every one of its n items exactly once.
func (j *sleepJob) wait(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(timeout):
		t.Fatalf("the job is still running after %v", timeout)
	}
	j.checkOnce(t, n)
}

// checkOnce checks that each of the n items has been delivered once, with
// its value.
func (j *sleepJob) checkOnce(t *testing.T, n int) {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		t.Fatalf("job failed: %v", j.err)
	}
	if len(j.bad) > 0 {
		t.Fatalf("%d items failed or came back wrong, the first %+v", len(j.bad), j.bad[0])
	}
	for i := 0; i < n; i++ {
		if j.seen[i] != 1 {
			t.Fatalf("item %d delivered %d times", i, j.seen[i])
		}
	}
	if len(j.seen) != n {
		t.Fatalf("%d items delivered, want %d", len(j.seen), n)
	}
}

// freezeMidJob starts a job on c and stops node with SIGSTOP once the
// node runs items of it; the node gets SIGCONT when the test ends, before
// testutil kills it, so that no stopped process is left behind.
func freezeMidJob(t *testing.T, ctx context.Context, c *shoal.Client, node *gridNode, n, ms int) (*sleepJob, time.Time) {
	t.Helper()
	t.Cleanup(func() { node.Process.Signal(syscall.SIGCONT) })
	j := startSleepJob(ctx, c, n, ms)
	testutil.WaitFor(t, 30*time.Second, node.Name+" to be running items of the job", func() bool {
		return scrape(t, node.HTTP)["shoal_executor_running"] > 0
	})
	node.Signal(syscall.SIGSTOP)
	return j, time.Now()
}

// afterResume continues the stopped node, waits until the grid and c's
// view show it alive again, checks that the job's counts did not move, and runs another
// job that the resumed node takes part in: its late answers to the calls
// given up must neither reach the old job nor confuse the new one.
func afterResume(t *testing.T, ctx context.Context, c *shoal.Client, nodes []*gridNode, node *gridNode, j *sleepJob, n int) {
	t.Helper()
	node.Signal(syscall.SIGCONT)
	awaitState(t, nodes, node.Name, grid.StateAlive, 60*time.Second)
	testutil.WaitFor(t, 30*time.Second, "the client to see "+node.Name+" alive again", func() bool {
		m, ok := c.View().Member(node.Name)
		return ok && m.State == grid.StateAlive
	})
	j.checkOnce(t, n)
	const m = 60
	again := startSleepJob(ctx, c, m, 20)
	again.wait(t, m, 60*time.Second)
	if again.stats.PerNode[node.Name] == 0 {
		t.Fatalf("the resumed node computed nothing of a new job: %+v", again.stats)
	}
}

// TestFrozenNodeDoesNotHangTheJob stops one of three nodes with SIGSTOP
// while a job runs on it: the process is there, its sockets accept, it
// answers nothing. It is the node the client dialled and reads its view
// from, the worst one to lose. The job must finish, every item exactly
// once, a few seconds after the grid declares the node dead; its answers,
// once continued, must not reach the job twice.
func TestFrozenNodeDoesNotHangTheJob(t *testing.T) {
	nodes := threeNodes(t)
	frozen := nodes[0]
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{frozen.RPC}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.WaitForMembers(ctx, 3); err != nil {
		t.Fatal(err)
	}

	const n, ms = 240, 100 // 24 slot-seconds: 4s on 6 slots, 6s on 4
	j, stopped := freezeMidJob(t, ctx, c, frozen, n, ms)
	awaitState(t, nodes[1:], frozen.Name, grid.StateDead, 60*time.Second)
	detected := time.Since(stopped)
	t.Logf("the grid declared the stopped node dead %v after SIGSTOP", detected.Round(time.Millisecond))

	j.wait(t, n, detected+15*time.Second)
	t.Logf("job finished %v after SIGSTOP; first retried item delivered %v after SIGSTOP; stats %+v",
		j.end.Sub(stopped).Round(time.Millisecond), j.firstRetry.Sub(stopped).Round(time.Millisecond), j.stats)
	afterResume(t, ctx, c, nodes, frozen, j, n)
}

// TestFrozenNodeUnseenByTheClient stops a node with SIGSTOP while a job
// runs on it, for a client that never learns of it (its view is read once
// an hour, as if every read failed): the grid declares the node dead, but
// the job's view still shows it alive. Only the time a call gets before it
// is given up moves the node's items elsewhere; without one the job waits
// for ever.
func TestFrozenNodeUnseenByTheClient(t *testing.T) {
	nodes := threeNodes(t)
	frozen := nodes[2]
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{nodes[0].RPC}, Refresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.WaitForMembers(ctx, 3); err != nil {
		t.Fatal(err)
	}

	const n, ms = 120, 100
	j, stopped := freezeMidJob(t, ctx, c, frozen, n, ms)
	awaitState(t, nodes[:2], frozen.Name, grid.StateDead, 60*time.Second)
	t.Logf("the grid declared the stopped node dead %v after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
	if m, _ := c.View().Member(frozen.Name); m.State != grid.StateAlive {
		t.Fatalf("the client's view shows the stopped node %s; the test needs a client that does not know", m.State)
	}

	// A call gets at least 5s (scheduler.Options.MinCallTimeout); 60s is
	// ample on a loaded machine, and far less than for ever.
	j.wait(t, n, 60*time.Second)
	t.Logf("job finished %v after SIGSTOP; first retried item delivered %v after SIGSTOP; stats %+v",
		j.end.Sub(stopped).Round(time.Millisecond), j.firstRetry.Sub(stopped).Round(time.Millisecond), j.stats)
	if j.stats.Retries == 0 {
		t.Fatal("no item was retried, although the stopped node held some")
	}
	afterResume(t, ctx, c, nodes, frozen, j, n)
}
