package rpc

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
)

// goroutineID reads the running goroutine's id from its stack header,
// "goroutine 123 [running]:".
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(buf[:bytes.IndexByte(buf, ' ')]), 10, 64)
	return id
}

// TestCallsReuseWorkerGoroutines checks that one call after another runs
// on the same few worker goroutines rather than a new goroutine each (whose
// stack would grow anew on every call), and that Close stops the workers.
func TestCallsReuseWorkerGoroutines(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	ran := make(map[uint64]bool)
	if err := s.Register("whoami", func() uint64 { return goroutineID() }); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	const calls = 200
	for range calls {
		var id uint64
		if err := c.Call(context.Background(), "whoami", &id); err != nil || id == 0 {
			t.Fatalf("whoami = %d, %v", id, err)
		}
		ran[id] = true
	}
	// The reply is written before the worker goes back to wait, so now and
	// then a call finds no worker idle yet and starts another.
	if len(ran) > calls/10 {
		t.Errorf("%d calls ran on %d goroutines, want a few reused workers", calls, len(ran))
	}
}

// TestInlineFunctionsRunOnTheReader checks that a call of an Inline
// function runs on the connection's reader (one goroutine, apart from the
// workers that run other calls), and that inline and worker calls from
// many goroutines at once still get their own results.
func TestInlineFunctionsRunOnTheReader(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	if err := s.Register("whoami.inline", func() uint64 { return goroutineID() }, Inline()); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("whoami.worker", func() uint64 { return goroutineID() }); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("inc", func(x int) int { return x + 1 }, Inline()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()
	inline, worker := make(map[uint64]bool), make(map[uint64]bool)
	for range 50 {
		for method, seen := range map[string]map[uint64]bool{"whoami.inline": inline, "whoami.worker": worker} {
			var id uint64
			if err := c.Call(ctx, method, &id); err != nil {
				t.Fatal(err)
			}
			seen[id] = true
		}
	}
	if len(inline) != 1 {
		t.Errorf("inline calls ran on %d goroutines, want the one reader", len(inline))
	}
	for id := range inline {
		if worker[id] {
			t.Errorf("goroutine %d ran inline and worker calls: the inline ones went to a worker", id)
		}
	}

	errs := make(chan error, 32)
	for g := range 32 {
		go func() {
			for i := range 50 {
				var got int
				method := "inc"
				if i%5 == 0 {
					method = "add"
				}
				var err error
				if method == "inc" {
					err = c.Call(ctx, "inc", &got, g*1000+i)
				} else {
					err = c.Call(ctx, "add", &got, g*1000, i+1)
				}
				if err == nil && got != g*1000+i+1 {
					err = fmt.Errorf("%s for caller %d, call %d = %d", method, g, i, got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestInlineUnderAdmit checks that an Inline call runs on the reader only
// when Admit lets it run at once, and otherwise waits on a worker for
// Admit like any call, without blocking the connection meanwhile.
func TestInlineUnderAdmit(t *testing.T) {
	checkGoroutines(t)
	slot := make(chan struct{}, 1) // one slot, as an executor of one
	var asked atomic.Int32
	admit := func(ctx context.Context, fn FunctionInfo) (func(), error) {
		asked.Add(1)
		select {
		case slot <- struct{}{}:
			return func() { <-slot }, nil
		default:
		}
		select {
		case slot <- struct{}{}:
			return func() { <-slot }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s, addr := startServer(t, ServerConfig{Admit: admit})
	if err := s.Register("whoami", func() uint64 { return goroutineID() }, Inline()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()
	var first, second uint64
	if err := c.Call(ctx, "whoami", &first); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, "whoami", &second); err != nil || second != first || asked.Load() != 2 {
		t.Fatalf("free slot: ran on goroutines %d then %d (%v), Admit asked %d times; want the reader twice, asked once each",
			first, second, err, asked.Load())
	}

	slot <- struct{}{} // every slot busy
	busy := c.Go(ctx, "whoami", new(uint64), nil)
	// Admit is asked at once (refused) and again from a worker, which waits.
	waitFor(t, "the call to wait on a worker for a slot", func() bool { return asked.Load() == 4 })
	if err := c.Call(ctx, "shoal.ping", nil); err != nil {
		t.Fatalf("the connection is blocked while an inline call waits for a slot: %v", err)
	}
	<-slot
	<-busy.Done
	if id := *busy.Result.(*uint64); busy.Error != nil || id == first {
		t.Fatalf("call that waited for a slot ran on goroutine %d (the reader is %d): %v", id, first, busy.Error)
	}
}
