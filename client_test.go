package shoal_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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
