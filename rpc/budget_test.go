package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// startBudgetServer serves the test functions and "hold", which takes a
// []byte and returns its length once release has been called, with a
// budget of limit bytes.
func startBudgetServer(t *testing.T, limit int, cfg ServerConfig) (s *Server, addr string, release func()) {
	t.Helper()
	cfg.MaxInFlightBytes = limit
	s, addr = startServer(t, cfg)
	released := make(chan struct{})
	release = sync.OnceFunc(func() { close(released) })
	t.Cleanup(release)
	if err := s.Register("hold", func(ctx context.Context, b []byte) (int, error) {
		select {
		case <-released:
			return len(b), nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return s, addr, release
}

// waitForNoBytes waits until the server counts no bytes in flight: every
// call's share has been given back.
func waitForNoBytes(t *testing.T, s *Server) {
	t.Helper()
	waitFor(t, "the budget to be given back", func() bool { return s.InFlightBytes() == 0 })
}

// TestBudgetRefusesACallThatDoesNotFitAndServesOn fills most of an 8 MiB
// budget with a held call of 2 MiB (counted as about 4 MiB: received and
// decoded) and sends another: it is answered Overloaded, the connection
// that sent it goes on serving, and once the first call is done the second
// fits.
func TestBudgetRefusesACallThatDoesNotFitAndServesOn(t *testing.T) {
	checkGoroutines(t)
	s, addr, release := startBudgetServer(t, 8<<20, ServerConfig{})
	first := dial(t, addr, ClientConfig{})
	second := dial(t, addr, ClientConfig{})
	payload := bytes.Repeat([]byte{7}, 2<<20)

	held := first.Go(context.Background(), "hold", new(int), nil, payload)
	waitFor(t, "the held call to be counted", func() bool { return s.InFlightBytes() >= 4<<20 })

	var n int
	err := second.Call(context.Background(), "hold", &n, payload)
	if !errors.Is(err, ErrOverloaded) || !Retryable(err) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a call over the budget: %v; want a retryable Overloaded saying the budget is in use", err)
	}
	var sum int
	if err := second.Call(context.Background(), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("the refused call's connection no longer serves: add = %d, %v", sum, err)
	}

	release()
	<-held.Done
	if held.Error != nil || *held.Result.(*int) != len(payload) {
		t.Fatalf("held call: %v, %v", *held.Result.(*int), held.Error)
	}
	waitForNoBytes(t, s)
	if err := second.Call(context.Background(), "hold", &n, payload); err != nil || n != len(payload) {
		t.Fatalf("the call once the budget had room: %d, %v", n, err)
	}
	waitForNoBytes(t, s)
}

// TestMessageLargerThanTheWholeBudget sends a request and a notification
// that could never fit a 1 MiB budget: the request is answered Overloaded
// saying so, not left waiting, the notification is dropped, and the
// connection serves on.
func TestMessageLargerThanTheWholeBudget(t *testing.T) {
	checkGoroutines(t)
	s, addr, _ := startBudgetServer(t, 1<<20, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	payload := bytes.Repeat([]byte{1}, 1<<20)

	if err := c.Notify("echo", payload); err != nil {
		t.Fatal(err)
	}
	var out []byte
	err := c.Call(context.Background(), "echo", &out, payload)
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "more than the server's whole budget") {
		t.Fatalf("a call larger than the budget: %v; want Overloaded saying it can never fit", err)
	}
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 20, 22); err != nil || sum != 42 {
		t.Fatalf("the connection no longer serves: add = %d, %v", sum, err)
	}
	if err := c.Call(context.Background(), "echo", &out, payload[:100<<10]); err != nil || len(out) != 100<<10 {
		t.Fatalf("a call that fits: %d bytes, %v", len(out), err)
	}
	waitForNoBytes(t, s)
}

// TestBudgetCountsAMessageAsItArrives starts a 3 MiB message and stalls
// after its header: the budget must count it already (a read buffer is
// memory too), so a second large call is refused while the first is still
// arriving. Once the rest arrives the first is answered in full.
func TestBudgetCountsAMessageAsItArrives(t *testing.T) {
	checkGoroutines(t)
	s, addr, _ := startBudgetServer(t, 8<<20, ServerConfig{})
	payload := bytes.Repeat([]byte{3}, 3<<20)
	msg := request(t, 1, "echo", payload)

	slow := rawConn(t, addr)
	if _, err := slow.Write(msg[:1<<10]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the arriving message to be counted", func() bool { return s.InFlightBytes() >= 6<<20 })

	c := dial(t, addr, ClientConfig{})
	var out []byte
	if err := c.Call(context.Background(), "echo", &out, payload[:1<<20]); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a 1 MiB call beside a 3 MiB one arriving under an 8 MiB budget: %v; want Overloaded", err)
	}

	if _, err := slow.Write(msg[1<<10:]); err != nil {
		t.Fatal(err)
	}
	id, errVal, result := readResponse(t, slow)
	if got, _ := result.([]byte); id != 1 || errVal != nil || !bytes.Equal(got, payload) {
		t.Fatalf("the stalled call: id %d, error %v, %d bytes", id, errVal, len(got))
	}
	waitForNoBytes(t, s)
	if err := c.Call(context.Background(), "echo", &out, payload[:1<<20]); err != nil {
		t.Fatalf("the call once the budget had room: %v", err)
	}
}

// TestReplyCountedUntilWritten makes a 32 MiB reply to a caller that does
// not read it: the budget must count it while it waits for the socket
// (more than loopback's buffers hold), and let it go once read.
func TestReplyCountedUntilWritten(t *testing.T) {
	checkGoroutines(t)
	s, addr, _ := startBudgetServer(t, 256<<20, ServerConfig{})
	const size = 32 << 20
	if err := s.Register("blob", func() []byte { return make([]byte, size) }); err != nil {
		t.Fatal(err)
	}
	conn := rawConn(t, addr)
	if _, err := conn.Write(request(t, 1, "blob")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unread reply to be counted", func() bool { return s.InFlightBytes() >= size })
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	d := msgpack.NewDecoder(r)
	if n, err := d.DecodeArrayLen(); err != nil || n != 4 {
		t.Fatalf("reply: %d, %v", n, err)
	}
	d.DecodeInt()
	d.DecodeUint32()
	d.DecodeNil()
	n, err := d.DecodeBytesLen()
	if err != nil || n != size {
		t.Fatalf("reply of %d bytes, %v", n, err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		t.Fatal(err)
	}
	waitForNoBytes(t, s)
}

// TestCompletedSkipsRepliesOverMaxCompletedSize checks that a result
// larger than MaxCompletedSize is not handed to Completed, and a smaller
// one is.
func TestCompletedSkipsRepliesOverMaxCompletedSize(t *testing.T) {
	var mu sync.Mutex
	var completed []int
	s, addr := startServer(t, ServerConfig{MaxCompletedSize: 1 << 10, Completed: func(fn FunctionInfo, args []any, result any) {
		mu.Lock()
		defer mu.Unlock()
		completed = append(completed, len(result.(string)))
	}})
	if err := s.Register("text", func(n int) string { return strings.Repeat("x", n) }, Cacheable()); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	var out string
	for _, n := range []int{2 << 10, 100} {
		if err := c.Call(context.Background(), "text", &out, n); err != nil || len(out) != n {
			t.Fatalf("text(%d): %d bytes, %v", n, len(out), err)
		}
	}
	waitFor(t, "Completed to see the small result", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(completed) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(completed) != 1 || completed[0] != 100 {
		t.Fatalf("Completed saw results of %v bytes; want only the 100-byte one", completed)
	}
}

// TestLargeMessagesLeaveNoCountBehind sends large messages that end every
// way a call can (success, a function error, bad arguments, an unknown
// function, a refusal, a notification, a broken connection mid-message):
// each share of the budget must be given back.
func TestLargeMessagesLeaveNoCountBehind(t *testing.T) {
	checkGoroutines(t)
	s, addr, _ := startBudgetServer(t, 16<<20, ServerConfig{})
	big := strings.Repeat("y", 1<<20)
	c := dial(t, addr, ClientConfig{})
	for _, call := range []struct {
		method string
		args   []any
		kind   Kind
	}{
		{"echo", []any{big}, ""},
		{"fail", []any{big}, KindFunctionError},
		{"add", []any{big, 1}, KindBadArguments},
		{"nosuch", []any{big}, KindUnknownFunction},
		{"echo", []any{big + big + big + big + big + big + big + big}, KindOverloaded},
		{MethodPing, []any{big}, ""},
	} {
		var out any
		err := c.Call(context.Background(), call.method, &out, call.args...)
		var e *Error
		if call.kind == "" && err != nil || call.kind != "" && (!errors.As(err, &e) || e.Kind != call.kind) {
			t.Fatalf("%s: %v; want %q", call.method, err, call.kind)
		}
		waitForNoBytes(t, s)
	}
	if err := c.Notify("echo", big); err != nil {
		t.Fatal(err)
	}
	waitForNoBytes(t, s)

	conn := rawConn(t, addr)
	msg := request(t, 1, "echo", big)
	conn.Write(msg[:len(msg)/2])
	waitFor(t, "the half-sent message to be counted", func() bool { return s.InFlightBytes() > 0 })
	conn.Close()
	waitForNoBytes(t, s)
}

// TestBudgetedConnectionKeepsNoLargeBuffer checks that after a large
// message a connection's reader keeps no buffer the budget no longer
// counts.
func TestBudgetedConnectionKeepsNoLargeBuffer(t *testing.T) {
	mr := newMessageReader(bufio.NewReader(bytes.NewReader(nil)), 0, 0)
	mr.budget = &byteBudget{limit: 1 << 30}
	mr.buf = make([]byte, 0, 1<<20)
	mr.release()
	if mr.buf != nil {
		t.Fatalf("a budgeted reader kept a buffer of %d bytes", cap(mr.buf))
	}
	// A client's reader keeps up to keepBuffer, as before.
	client := newMessageReader(bufio.NewReader(bytes.NewReader(nil)), 0, 0)
	client.buf = make([]byte, 0, 1<<20)
	client.release()
	if client.buf == nil {
		t.Fatal("a client's reader dropped a buffer it may keep")
	}
}
