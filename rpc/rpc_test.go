package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCallOverTCP(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()

	var sum int
	if err := c.Call(ctx, "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add(2, 3) = %d, %v", sum, err)
	}

	in := map[string]any{"name": "shoal", "list": []any{int8(1), "two", 3.5}, "bin": []byte{0, 1, 2}}
	var out map[string]any
	if err := c.Call(ctx, "echo", &out, in); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("echo returned %#v, want %#v", out, in)
	}

	var pong string
	if err := c.Call(ctx, "shoal.ping", &pong); err != nil || pong != "pong" {
		t.Fatalf("shoal.ping = %q, %v", pong, err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()

	cases := []struct {
		method   string
		args     []any
		sentinel error
		message  string
	}{
		{"nope", nil, ErrUnknownFunction, `no function named "nope"`},
		{"fail", []any{"disk on fire"}, ErrFunctionError, "disk on fire"},
		{"boom", nil, ErrFunctionError, "boom panicked: kaboom"},
		{"add", []any{1}, ErrBadArguments, "add(a int, b int) int takes 2 arguments, got 1"},
		{"add", []any{1, "two"}, ErrBadArguments, "add(a int, b int) int: argument 2: want int, got string"},
		{"shoal.nope", nil, ErrUnknownFunction, `no function named "shoal.nope"`},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.method, tc.args), func(t *testing.T) {
			err := c.Call(ctx, tc.method, nil, tc.args...)
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("got %v, want kind %v", err, tc.sentinel)
			}
			var e *Error
			if !errors.As(err, &e) || e.Message != tc.message {
				t.Fatalf("message %q, want %q", e.Message, tc.message)
			}
			if errors.Is(err, ErrTimeout) {
				t.Fatal("error matches a sentinel of another kind")
			}
		})
	}
	// The panic cost only that call.
	assertServes(t, addr)
}

func TestManyCallsInFlightAnswerOutOfOrder(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})

	// Longer sleeps are sent first, so replies come back in reverse.
	const n = 50
	calls := make([]*Call, n)
	done := make(chan *Call, n)
	for i := range calls {
		ms := (n - i) * 2
		calls[i] = c.Go(context.Background(), "sleep", new(int), done, ms)
	}
	var order []int
	for range calls {
		call := <-done
		if call.Error != nil {
			t.Fatal(call.Error)
		}
		order = append(order, *call.Result.(*int))
	}
	for i, call := range calls {
		if got, want := *call.Result.(*int), (n-i)*2; got != want {
			t.Fatalf("call %d got reply %d, want %d", i, got, want)
		}
	}
	if order[0] > order[len(order)-1] {
		t.Fatalf("replies came back in send order %v; expected the short sleeps first", order)
	}
}

func TestConcurrentCallers(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				var sum int
				if err := c.Call(context.Background(), "add", &sum, g, i); err != nil || sum != g+i {
					errs <- fmt.Errorf("add(%d, %d) = %d, %v", g, i, sum, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestContextDeadlineCancelsOnServer(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Call(ctx, "sleep", nil, 60_000)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want Timeout matching context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("call returned after %v", elapsed)
	}
	// shoal.cancel reached the server: the sleep there ends too.
	waitFor(t, "the server-side call to end", func() bool { return s.Stats().InFlight == 0 })

	ctx, cancel = context.WithCancel(context.Background())
	call := c.Go(ctx, "sleep", nil, nil, 60_000)
	waitFor(t, "the call to start", func() bool { return s.Stats().InFlight == 1 })
	cancel()
	<-call.Done
	if !errors.Is(call.Error, ErrCanceled) || !errors.Is(call.Error, context.Canceled) {
		t.Fatalf("got %v, want Canceled", call.Error)
	}
	waitFor(t, "the server-side call to end", func() bool { return s.Stats().InFlight == 0 })

	// The connection is still good.
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 1, 1); err != nil || sum != 2 {
		t.Fatalf("add after cancel = %d, %v", sum, err)
	}
}

func TestNotificationRunsAndUnknownIsIgnored(t *testing.T) {
	s, addr := startServer(t, ServerConfig{})
	got := make(chan string, 1)
	if err := s.Register("record", func(v string) { got <- v }); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	if err := c.Notify("no.such.function", 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.Notify("record", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-got:
		if v != "hello" {
			t.Fatalf("notification delivered %q", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notification never ran")
	}
	assertServes(t, addr)
}

func TestBrokenConnectionFailsPendingCalls(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	done := make(chan *Call, 10)
	for i := 0; i < 10; i++ {
		c.Go(context.Background(), "sleep", nil, done, 60_000)
	}
	waitFor(t, "calls to start", func() bool { return s.Stats().InFlight == 10 })
	s.Close()
	for i := 0; i < 10; i++ {
		call := <-done
		var ce *ConnError
		if !errors.As(call.Error, &ce) || !Retryable(call.Error) {
			t.Fatalf("pending call got %v, want a ConnError", call.Error)
		}
	}
	<-c.Done()
	if err := c.Call(context.Background(), "add", nil, 1, 2); !errors.As(err, new(*ConnError)) {
		t.Fatalf("call on broken client: %v", err)
	}
}

func TestClientCloseFailsPendingCalls(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	call := c.Go(context.Background(), "sleep", nil, nil, 60_000)
	c.Close()
	<-call.Done
	if !errors.Is(call.Error, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", call.Error)
	}
	c.Close() // twice is fine
}

func TestDescribe(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	var fns []FunctionInfo
	if err := c.Call(context.Background(), "shoal.describe", &fns); err != nil {
		t.Fatal(err)
	}
	var add *FunctionInfo
	for i := range fns {
		if fns[i].Name == "add" {
			add = &fns[i]
		}
	}
	want := FunctionInfo{Name: "add", Signature: "add(a int, b int) int", Doc: "adds two integers", Version: "1", Cacheable: true}
	if add == nil || *add != want {
		t.Fatalf("describe gave add = %+v, want %+v", add, want)
	}
	if len(fns) != 5 {
		t.Fatalf("describe listed %d functions, want 5: %+v", len(fns), fns)
	}
}

type calc struct{ offset int }

func (c *calc) Add(a, b int) int { return a + b + c.offset }
func (c *calc) Neg(ctx context.Context, x int) (int, error) {
	return -x, nil
}

func TestRegisterObject(t *testing.T) {
	s, addr := startServer(t, ServerConfig{})
	if err := s.RegisterObject("calc", &calc{offset: 100}, WithVersion("2")); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	var got int
	if err := c.Call(context.Background(), "calc.Add", &got, 1, 2); err != nil || got != 103 {
		t.Fatalf("calc.Add(1, 2) = %d, %v", got, err)
	}
	if err := c.Call(context.Background(), "calc.Neg", &got, 5); err != nil || got != -5 {
		t.Fatalf("calc.Neg(5) = %d, %v", got, err)
	}
}

func TestResultOfWrongTypeIsDecodeError(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	var n int
	err := c.Call(context.Background(), "echo", &n, "not a number")
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("got %v, want a DecodeError", err)
	}
	assertServes(t, addr)
}

func TestPoolRedialsBrokenClient(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	p := NewPool(ClientConfig{Logger: quietLogger(t)})
	defer p.Close()
	ctx := context.Background()

	var wg sync.WaitGroup
	clients := make([]*Client, 8)
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := p.Get(ctx, addr)
			if err != nil {
				t.Error(err)
			}
			clients[i] = c
		}(i)
	}
	wg.Wait()
	for _, c := range clients[1:] {
		if c != clients[0] {
			t.Fatal("concurrent Gets returned different clients for one address")
		}
	}
	clients[0].conn.Close() // break it under the pool's feet
	<-clients[0].Done()
	var sum int
	if err := p.Call(ctx, addr, "add", &sum, 3, 4); err != nil || sum != 7 {
		t.Fatalf("call through pool after break = %d, %v", sum, err)
	}
	c, _ := p.Get(ctx, addr)
	if c == clients[0] {
		t.Fatal("pool kept the broken client")
	}
	p.Close()
	if _, err := p.Get(ctx, addr); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestPoolDialFailure(t *testing.T) {
	p := NewPool(ClientConfig{})
	defer p.Close()
	l := freeAddr(t)
	err := p.Call(context.Background(), l, "add", nil, 1, 2)
	if err == nil {
		t.Fatal("call to a closed port succeeded")
	}
}

func TestShutdownDrainsInFlightCalls(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	done := make(chan *Call, 5)
	for i := 0; i < 5; i++ {
		c.Go(context.Background(), "sleep", new(int), done, 200)
	}
	waitFor(t, "calls to start", func() bool { return s.Stats().InFlight == 5 })

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	// A call made during the drain is refused, not lost silently.
	waitFor(t, "drain to begin", func() bool {
		err := c.Call(context.Background(), "add", nil, 1, 2)
		return errors.Is(err, ErrUnavailable)
	})
	for i := 0; i < 5; i++ {
		call := <-done
		if call.Error != nil || *call.Result.(*int) != 200 {
			t.Fatalf("in-flight call lost in shutdown: %v", call.Error)
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownRefusesOnEveryConnectionAtOnce: while one connection's slow
// call drains, the others must already refuse new calls (found by a
// client test: connections were drained one after another, so a node
// draining a slow call went on taking work on every other connection).
func TestShutdownRefusesOnEveryConnectionAtOnce(t *testing.T) {
	s, addr := startServer(t, ServerConfig{})
	slow := dial(t, addr, ClientConfig{})
	others := []*Client{dial(t, addr, ClientConfig{}), dial(t, addr, ClientConfig{}), dial(t, addr, ClientConfig{})}
	for _, c := range others {
		if err := c.Call(context.Background(), "add", nil, 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	// A call's reply reaches its caller before the server counts it done:
	// until the warm-up calls are counted out, InFlight == 1 could be one
	// of them, and Shutdown would find the slow connection idle.
	waitFor(t, "the warm-up calls to end", func() bool { return s.Stats().InFlight == 0 })
	call := slow.Go(context.Background(), "sleep", nil, nil, 60_000)
	waitFor(t, "the slow call to start", func() bool { return s.Stats().InFlight == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	waitFor(t, "the slow call's connection to refuse calls", func() bool {
		return errors.Is(slow.Call(context.Background(), "add", nil, 1, 2), ErrUnavailable)
	})
	for i, c := range others {
		if err := c.Call(context.Background(), "add", nil, 1, 2); !errors.Is(err, ErrUnavailable) {
			t.Errorf("connection %d took a new call while the server drained: %v", i, err)
		}
	}
	cancel()
	<-shut
	<-call.Done
}

func TestShutdownDeadlineForcesClose(t *testing.T) {
	s, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	call := c.Go(context.Background(), "sleep", nil, nil, 60_000)
	waitFor(t, "call to start", func() bool { return s.Stats().InFlight == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	<-call.Done
	if call.Error == nil {
		t.Fatal("call survived a forced close")
	}
}

func TestDecodingIntoReusedSliceCostsOnlyTheCall(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	out := []any{int8(1), int8(2)}
	// msgpack panics decoding into a slice that holds non-pointer values;
	// the client must turn that into an error for this call alone.
	err := c.Call(context.Background(), "echo", &out, []any{1, 2})
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("got %v, want nil or a DecodeError", err)
		}
	}
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 1, 2); err != nil || sum != 3 {
		t.Fatalf("client unusable after a bad decode: %d, %v", sum, err)
	}
}

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func TestConcurrentCallsShareWrites(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := &countingConn{Conn: raw}
	c := NewClient(conn, ClientConfig{})
	defer c.Close()

	const callers, each = 64, 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				if err := c.Call(context.Background(), "add", nil, 1, 2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	calls, writes := int64(callers*each), conn.writes.Load()
	t.Logf("%d calls took %d writes", calls, writes)
	if writes >= calls/2 {
		t.Fatalf("%d concurrent calls took %d writes; expected them to share", calls, writes)
	}
}
