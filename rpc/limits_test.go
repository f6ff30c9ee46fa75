package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// request encodes a request as a third party would.
func request(t *testing.T, id uint32, method string, params ...any) []byte {
	t.Helper()
	b, err := msgpack.Marshal([]any{0, id, method, params})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readResponse reads one response from a raw connection.
func readResponse(t *testing.T, conn net.Conn) (id uint32, errVal any, result any) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	d := msgpack.NewDecoder(conn)
	n, err := d.DecodeArrayLen()
	if err != nil || n != 4 {
		t.Fatalf("response is not a 4-element array: n=%d err=%v", n, err)
	}
	if typ, err := d.DecodeInt(); err != nil || typ != 1 {
		t.Fatalf("response type %d, %v", typ, err)
	}
	if id, err = d.DecodeUint32(); err != nil {
		t.Fatal(err)
	}
	if errVal, err = d.DecodeInterface(); err != nil {
		t.Fatal(err)
	}
	if result, err = d.DecodeInterface(); err != nil {
		t.Fatal(err)
	}
	return id, errVal, result
}

func TestOversizedMessageClosesOnlyThatConnection(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{MaxMessageSize: 1 << 20})
	conn := rawConn(t, addr)
	big := strings.Repeat("x", 2<<20)
	// Writing may fail once the server hangs up; that is the point.
	go conn.Write(request(t, 1, "echo", big))
	expectClosed(t, conn)
	assertServes(t, addr)
}

func TestHugeLengthClaimAllocatesNothing(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{}) // default 64 MiB limit

	// A str32 header claiming 4 GiB - 1 is refused from the header alone.
	over := rawConn(t, addr)
	over.Write([]byte{0x94, 0x00, 0x01, 0xa4, 'e', 'c', 'h', 'o', 0x91, 0xdb, 0xff, 0xff, 0xff, 0xff})
	expectClosed(t, over)

	// Claims within the limit cost only the bytes that arrive: twenty
	// connections each claim 60 MiB, send a few bytes and hang up.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	claim := []byte{0x94, 0x00, 0x01, 0xa4, 'e', 'c', 'h', 'o', 0x91, 0xdb, 0x03, 0xc0, 0x00, 0x00}
	accepted := s.Stats().Accepted
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(append(claim, "only a few bytes"...))
		conn.Close()
	}
	waitFor(t, "the server to read and drop the truncated messages", func() bool {
		st := s.Stats()
		return st.Accepted == accepted+20 && st.Connections == 0
	})
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Fatalf("20 connections claiming 60 MiB each made the server allocate %d MiB", grew>>20)
	}
	assertServes(t, addr)
}

func TestDeepNestingClosesOnlyThatConnection(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{MaxDepth: 16})
	conn := rawConn(t, addr)
	// [0, 1, "echo", [[[[...]]]]] nested 100,000 deep: would overflow a
	// recursive decoder's stack without the bound.
	var b bytes.Buffer
	b.Write([]byte{0x94, 0x00, 0x01, 0xa4, 'e', 'c', 'h', 'o'})
	b.Write(bytes.Repeat([]byte{0x91}, 100_000))
	b.WriteByte(0xc0)
	go conn.Write(b.Bytes())
	expectClosed(t, conn)
	assertServes(t, addr)

	// Nesting within the bound is served.
	c := dial(t, addr, ClientConfig{})
	var v any = 1
	for i := 0; i < 10; i++ {
		v = []any{v}
	}
	if err := c.Call(context.Background(), "echo", nil, v); err != nil {
		t.Fatalf("10 levels of nesting refused: %v", err)
	}
}

func TestGarbageBytesCloseOnlyThatConnection(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	for name, junk := range map[string][]byte{
		"http":               []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"never-used code":    {0xc1},
		"not an array":       {0xa3, 'a', 'b', 'c'},
		"bad message type":   {0x93, 0x07, 0xa1, 'x', 0x90},
		"response to server": {0x94, 0x01, 0x01, 0xc0, 0xc0},
		"method is an int":   {0x94, 0x00, 0x01, 0x05, 0x90},
		"negative msgid":     {0x94, 0x00, 0xff, 0xa3, 'a', 'd', 'd', 0x90},
	} {
		t.Run(name, func(t *testing.T) {
			conn := rawConn(t, addr)
			conn.Write(junk)
			expectClosed(t, conn)
			assertServes(t, addr)
		})
	}
}

func TestTooManyInFlightIsOverloaded(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{MaxInFlight: 4})
	c := dial(t, addr, ClientConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 4; i++ {
		c.Go(ctx, "sleep", nil, nil, 60_000)
	}
	waitFor(t, "4 calls running", func() bool { return s.Stats().InFlight == 4 })
	err := c.Call(context.Background(), "add", nil, 1, 2)
	if !errors.Is(err, ErrOverloaded) || !Retryable(err) {
		t.Fatalf("fifth call got %v, want Overloaded", err)
	}
	// Built-ins still answer, and another connection has its own budget.
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatal(err)
	}
	assertServes(t, addr)
	cancel()
	waitFor(t, "calls to end", func() bool { return s.Stats().InFlight == 0 })
	if err := c.Call(context.Background(), "add", nil, 1, 2); err != nil {
		t.Fatalf("after the load went: %v", err)
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{IdleTimeout: 100 * time.Millisecond})
	idle := rawConn(t, addr)
	expectClosed(t, idle)

	// A connection waiting on a long call is not idle.
	c := dial(t, addr, ClientConfig{})
	var ms int
	if err := c.Call(context.Background(), "sleep", &ms, 400); err != nil || ms != 400 {
		t.Fatalf("call longer than the idle timeout: %d, %v", ms, err)
	}
	waitFor(t, "the idle client to be dropped", func() bool { return s.Stats().Connections == 0 })
}

func TestSlowLengthPrefixedPayloadStillWorks(t *testing.T) {
	// A message that arrives a byte at a time is read correctly.
	_, addr := startServer(t, ServerConfig{})
	conn := rawConn(t, addr)
	msg := request(t, 9, "add", 40, 2)
	for _, b := range msg {
		if _, err := conn.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	id, errVal, result := readResponse(t, conn)
	if id != 9 || errVal != nil || result != int8(42) {
		t.Fatalf("response id=%d err=%v result=%v", id, errVal, result)
	}
}

func TestMethodNameAsBin(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	conn := rawConn(t, addr)
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.EncodeArrayLen(4)
	enc.EncodeInt(0)
	enc.EncodeUint(7)
	enc.EncodeBytes([]byte("add"))
	enc.Encode([]int{1, 2})
	conn.Write(b.Bytes())
	id, errVal, result := readResponse(t, conn)
	if id != 7 || errVal != nil || result != int8(3) {
		t.Fatalf("bin method: id=%d err=%v result=%v", id, errVal, result)
	}
}

func TestParamsNotAnArrayIsBadArguments(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	conn := rawConn(t, addr)
	b, _ := msgpack.Marshal([]any{0, 3, "add", 5})
	conn.Write(b)
	_, errVal, _ := readResponse(t, conn)
	if s, _ := errVal.(string); !strings.HasPrefix(s, "BadArguments: ") {
		t.Fatalf("error %v, want BadArguments", errVal)
	}
	// The connection is still usable.
	conn.Write(request(t, 4, "add", 1, 1))
	if id, errVal, _ := readResponse(t, conn); id != 4 || errVal != nil {
		t.Fatalf("next call: id=%d err=%v", id, errVal)
	}
}

func TestManyConnectionsAtOnce(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(context.Background(), addr, ClientConfig{})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if err := c.Call(context.Background(), "add", nil, 1, 2); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "connections to close", func() bool {
		st := s.Stats()
		return st.Accepted == 50 && st.Connections == 0
	})
}

// A map keyed by an array is valid msgpack that Go cannot hold; msgpack's
// decoder panics on it. It must cost one call, not the server (found by
// FuzzMessageReader).
func TestUnhashableMapKeyIsBadArguments(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	conn := rawConn(t, addr)
	// [0, 5, "echo", [{[1]: 2}]]
	conn.Write([]byte{0x94, 0x00, 0x05, 0xa4, 'e', 'c', 'h', 'o', 0x91, 0x81, 0x91, 0x01, 0x02})
	id, errVal, _ := readResponse(t, conn)
	if s, _ := errVal.(string); id != 5 || !strings.HasPrefix(s, "BadArguments: echo(any) any: argument 1") {
		t.Fatalf("id %d, error %v; want BadArguments", id, errVal)
	}
	assertServes(t, addr)
}

// The client reads replies from servers it may not trust: an error value it
// cannot decode fails that call and leaves the connection working.
func TestClientSurvivesUndecodableErrorValue(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		d := msgpack.NewDecoder(conn)
		for {
			var req []any
			if d.Decode(&req) != nil {
				return
			}
			id := req[1]
			if req[2] == "bad" {
				// [1, id, {[1]: 2}, nil]
				b, _ := msgpack.Marshal(id)
				conn.Write(append(append([]byte{0x94, 0x01}, b...), 0x81, 0x91, 0x01, 0x02, 0xc0))
				continue
			}
			b, _ := msgpack.Marshal([]any{1, id, nil, "fine"})
			conn.Write(b)
		}
	}()
	c := dial(t, l.Addr().String(), ClientConfig{})
	errc := make(chan error, 1)
	go func() { errc <- c.Call(context.Background(), "bad", nil) }()
	select {
	case err := <-errc:
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("got %v, want a DecodeError", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call with an undecodable error value never returned")
	}
	var s string
	if err := c.Call(context.Background(), "good", &s); err != nil || s != "fine" {
		t.Fatalf("next call: %q, %v", s, err)
	}
}

// TestWireExample checks the bytes the README shows for add(2, 3).
func TestWireExample(t *testing.T) {
	_, addr := startServer(t, ServerConfig{})
	conn := rawConn(t, addr)
	conn.Write([]byte{0x94, 0x00, 0x01, 0xa3, 'a', 'd', 'd', 0x92, 0x02, 0x03})
	want := []byte{0x94, 0x01, 0x01, 0xc0, 0x05}
	got := make([]byte, len(want))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reply % x, %v; want % x", got, err, want)
	}
}

func TestClosedConnectionsAreLoggedWithReason(t *testing.T) {
	var logs testutil.LogBuffer
	// At debug level: after the first, such lines are sampled at warning
	// level, but every reason is still logged at debug.
	debug := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, addr := startServer(t, ServerConfig{MaxMessageSize: 1 << 10, Logger: debug})
	for _, tc := range []struct {
		send   []byte
		reason string
	}{
		{[]byte{0xc1}, `reason="byte 0xc1 is not a msgpack type"`},
		{request(t, 1, "echo", strings.Repeat("x", 2<<10)), `reason="message larger than the 1024-byte limit"`},
	} {
		conn := rawConn(t, addr)
		go conn.Write(tc.send)
		expectClosed(t, conn)
		waitFor(t, "the log line "+tc.reason, func() bool { return strings.Contains(logs.String(), tc.reason) })
	}
	if !strings.Contains(logs.String(), `msg="rpc: closing connection" remote=127.0.0.1:`) {
		t.Fatalf("log does not name the connection:\n%s", logs.String())
	}
}

// TestStrangersCannotFloodTheLog: many connections sending bytes that are
// not msgpack-rpc, and many failing notifications, write a line or two,
// not a line each, and the server goes on serving.
func TestStrangersCannotFloodTheLog(t *testing.T) {
	var logs testutil.LogBuffer
	_, addr := startServer(t, ServerConfig{Logger: logs.Logger()})
	for i := 0; i < 50; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte{0xc1})
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		conn.Read(make([]byte, 1)) // closed once the server has logged why
		conn.Close()
	}
	c := dial(t, addr, ClientConfig{})
	for i := 0; i < 50; i++ {
		c.Notify("add", "not a number")
	}
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add after the flood: %d, %v", sum, err)
	}
	out := logs.String()
	for _, msg := range []string{`msg="rpc: closing connection"`, `msg="rpc: notification dropped"`} {
		if n := strings.Count(out, msg); n < 1 || n > 2 {
			t.Errorf("%d lines of %s for 50 events; want one or two", n, msg)
		}
	}
}
