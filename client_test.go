package shoal_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

func TestMapReportsItemErrorsAndKeepsTheRest(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()

	var st shoal.Stats
	out, err := shoal.Map[any, int](context.Background(), c, "square", []any{2, "x", 4}, shoal.WithStats(&st))
	var items shoal.ItemErrors
	if !errors.As(err, &items) || len(items) != 1 || !errors.Is(items[1], rpc.ErrBadArguments) {
		t.Fatalf("Map error: %v", err)
	}
	if out[0] != 4 || out[2] != 16 || st.OK != 2 || st.Failed != 1 {
		t.Fatalf("results %v, stats %+v", out, st)
	}
	if _, err := shoal.Map[int, int](context.Background(), c, "nope", []int{1}); !errors.Is(err, rpc.ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	if err := c.Call(context.Background(), "nope", nil); !errors.Is(err, rpc.ErrUnknownFunction) {
		t.Fatalf("Call of an unknown function: %v", err)
	}
}

func TestStreamStopsWhenTheLoopBreaks(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	inputs := make([]int, 5000)
	got := 0
	for _, err := range shoal.Stream[int, int](context.Background(), c, "square", inputs, shoal.WithChunkSize(1)) {
		if err != nil {
			t.Fatal(err)
		}
		got++
		if got == 10 {
			break
		}
	}
	if got != 10 {
		t.Fatalf("got %d", got)
	}
}

func TestDialFailsClearly(t *testing.T) {
	if _, err := shoal.Dial(context.Background(), shoal.Config{}); err == nil {
		t.Fatal("Dial without seeds succeeded")
	}
	if _, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{"127.0.0.1:1"}}); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

// TestWaitForMembersSeesANodeThatJoinsLater checks that WaitForMembers
// re-reads the member list itself: the client's own refresh is an hour off.
func TestWaitForMembersSeesANodeThatJoinsLater(t *testing.T) {
	testutil.CheckGoroutines(t)
	a, stop := startGrid()
	defer stop()
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{a.RPCAddr()}, Refresh: time.Hour,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	cfg := node.FastConfig()
	cfg.Name, cfg.HTTPAddr, cfg.Join = "b", "", []string{a.GossipAddr()}
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := node.New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitForMembers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.WaitForMembers(ctx, 3)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 of 3 members alive") {
		t.Fatalf("waiting for a third member: %v", err)
	}
}

// logLines is a slog handler's output, safe to read while it is written.
type logLines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// startNode starts an in-process node named name, joined to join if it is
// not empty, serving square and sleep.
func startNode(t *testing.T, name, join string) *node.Node {
	t.Helper()
	cfg := node.FastConfig()
	cfg.Name, cfg.HTTPAddr = name, ""
	cfg.Logger = slog.New(slog.DiscardHandler)
	if join != "" {
		cfg.Join = []string{join}
	}
	n, err := node.New(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	n.Register("square", func(x int) int { return x * x })
	n.Register("sleep", func(ctx context.Context, ms int) (int, error) {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return ms, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// twoNodes starts nodes a and b and a client that sees both offer square,
// logging at debug level into logs, whose view is refreshed only hourly:
// what happens to the nodes afterwards, it does not learn.
func twoNodes(t *testing.T) (a, b *node.Node, c *shoal.Client, logs *logLines) {
	t.Helper()
	a = startNode(t, "a", "")
	b = startNode(t, "b", a.GossipAddr())
	logs = &logLines{}
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{a.RPCAddr()}, Refresh: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	testutil.WaitFor(t, 10*time.Second, "the client to see b offer square", func() bool {
		c.WaitForMembers(context.Background(), 2)
		return len(c.View().Offering("square")) == 2
	})
	return a, b, c, logs
}

// TestCallRetriesOnTheNextNode takes one of two nodes away behind a
// client's back (its view is refreshed hourly, so it still lists the node
// as alive): calls that pick it must be tried once more on the other node
// and succeed, whether it is draining (Unavailable) or dead (refused).
func TestCallRetriesOnTheNextNode(t *testing.T) {
	for _, how := range []string{"draining", "dead"} {
		t.Run(how, func(t *testing.T) {
			_, b, c, logs := twoNodes(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// Equally loaded nodes are picked at random: within 40 calls
			// both have a connection in the client's pool.
			for i := 0; i < 40; i++ {
				var got int
				if err := c.Call(ctx, "square", &got, i); err != nil || got != i*i {
					t.Fatalf("square(%d) = %d, %v", i, got, err)
				}
			}
			if logs.count("node="+b.RPCAddr()) == 0 {
				t.Fatal("no call went to b")
			}

			switch how {
			case "draining":
				// A call in flight keeps b draining while the test runs.
				direct, err := rpc.Dial(ctx, b.RPCAddr(), rpc.ClientConfig{})
				if err != nil {
					t.Fatal(err)
				}
				defer direct.Close()
				slow := direct.Go(ctx, "sleep", nil, nil, 60_000)
				testutil.WaitFor(t, 10*time.Second, "the slow call to run on b", func() bool { return b.InFlight() == 1 })
				drained := make(chan error, 1)
				go func() { drained <- b.Shutdown(context.Background()) }()
				testutil.WaitFor(t, 10*time.Second, "b to refuse new calls", func() bool {
					return errors.Is(direct.Call(ctx, "square", nil, 1), rpc.ErrUnavailable)
				})
				defer func() {
					direct.Close()
					<-slow.Done
					<-drained
				}()
			case "dead":
				b.Close()
			}
			before := logs.count("call retried on the next node")
			for i := 0; i < 40; i++ {
				var got int
				if err := c.Call(ctx, "square", &got, i); err != nil || got != i*i {
					t.Fatalf("with b %s, square(%d) = %d, %v", how, i, got, err)
				}
			}
			if retried := logs.count("call retried on the next node") - before; retried == 0 {
				t.Fatalf("no call was retried: b was never picked first in 40 calls, or it answered while %s\n%s", how, logs.buf.String())
			}
		})
	}
}

// TestCallGivesUpAfterOneRetry: with both nodes gone the call fails, after
// two tries, with the second node's error.
func TestCallGivesUpAfterOneRetry(t *testing.T) {
	a, b, c, logs := twoNodes(t)
	a.Close()
	b.Close()
	err := c.Call(context.Background(), "square", nil, 3)
	var dial *rpc.DialError
	var conn *rpc.ConnError
	if !errors.As(err, &dial) && !errors.As(err, &conn) {
		t.Fatalf("with every node gone: %v", err)
	}
	if n := logs.count("call retried on the next node"); n != 1 {
		t.Fatalf("%d retries, want 1", n)
	}
}

// TestBadOptionsFailBeforeTheJob: options that cannot make a job, and a
// function nobody offers, are refused with an error naming them.
func TestBadOptionsFailBeforeTheJob(t *testing.T) {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	for _, tc := range []struct {
		opt  shoal.Option
		want string
	}{
		{shoal.WithAttempts(0), "WithAttempts(0): an item needs at least one attempt"},
		{shoal.WithChunkSize(-1), "WithChunkSize(-1)"},
		{shoal.WithTimeout(-time.Second), "WithTimeout(-1s)"},
	} {
		_, err := shoal.Map[int, int](context.Background(), c, "square", []int{1, 2}, tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error saying %q", err, tc.want)
		}
	}
	_, err := shoal.Map[int, int](context.Background(), c, "sqare", []int{1})
	if !errors.Is(err, rpc.ErrUnknownFunction) || !strings.Contains(err.Error(), `did you mean "square"?`) {
		t.Fatalf("misspelt function: %v", err)
	}
}

// TestNodesStoreResultsOnlyForCachingJobs runs the same job of a cacheable
// function with and without WithoutCache against a node with its own
// in-memory cache, which the client cannot read: the job that skips the
// cache must cost the node no cache write, the other must store every
// result there.
func TestNodesStoreResultsOnlyForCachingJobs(t *testing.T) {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	ctx := context.Background()
	inputs := make([]int, 3000)
	for i := range inputs {
		inputs[i] = i
	}
	if _, err := shoal.Map[int, int](ctx, c, "square", inputs, shoal.WithoutCache()); err != nil {
		t.Fatal(err)
	}
	if err := n.FlushCache(ctx); err != nil {
		t.Fatal(err)
	}
	if st := n.CacheStats(); st.Stored != 0 {
		t.Fatalf("a job WithoutCache stored %d results on the node", st.Stored)
	}
	if _, err := shoal.Map[int, int](ctx, c, "square", inputs); err != nil {
		t.Fatal(err)
	}
	if err := n.FlushCache(ctx); err != nil {
		t.Fatal(err)
	}
	if st := n.CacheStats(); st.Stored != uint64(len(inputs)) {
		t.Fatalf("a caching job of %d items stored %d results on the node", len(inputs), st.Stored)
	}
}
