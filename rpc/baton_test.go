package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// The tests of this file are about who reads a client's connection: a
// caller alone reads its own reply; others are handed theirs.

// decodedOn is a result that notes the goroutine it was decoded on: the
// one that read the reply.
type decodedOn struct {
	value     int
	goroutine uint64
}

func (d *decodedOn) DecodeMsgpack(dec *msgpack.Decoder) error {
	d.goroutine = goroutineID()
	return dec.Decode(&d.value)
}

// patience bounds every wait of these tests: far beyond what anything
// should take, so that a broken client fails them instead of hanging.
const patience = 20 * time.Second

// await receives from ch, or fails the test (from any goroutine) and
// reports false when nothing comes within patience.
func await[T any](t testing.TB, ch <-chan T, what string) (T, bool) {
	select {
	case v := <-ch:
		return v, true
	case <-time.After(patience):
		t.Errorf("no %s within %v", what, patience)
		var zero T
		return zero, false
	}
}

// tlsPair returns a server and a client TLS configuration that trust each
// other.
func tlsPair(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	pki := testutil.NewPKI(t)
	server, err := LoadServerTLS(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	client, err = LoadClientTLS(pki.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// overPlainAndTLS runs test over plain TCP and over TLS.
func overPlainAndTLS(t *testing.T, test func(t *testing.T, serverTLS, clientTLS *tls.Config)) {
	t.Run("tcp", func(t *testing.T) { test(t, nil, nil) })
	t.Run("tls", func(t *testing.T) {
		serverTLS, clientTLS := tlsPair(t)
		test(t, serverTLS, clientTLS)
	})
}

// callWithin calls method with a context that ends after patience, so
// that a reply never delivered fails the call instead of hanging the test.
func callWithin(c *Client, method string, result any, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	return c.Call(ctx, method, result, args...)
}

// TestLoneCallerReadsItsOwnReply: one call after another on a connection,
// each alone on it, has its reply read (and decoded) by its caller, with
// no hand-off from another goroutine.
func TestLoneCallerReadsItsOwnReply(t *testing.T) {
	overPlainAndTLS(t, func(t *testing.T, serverTLS, clientTLS *tls.Config) {
		checkGoroutines(t)
		_, addr := startServer(t, ServerConfig{TLS: serverTLS})
		c := dial(t, addr, ClientConfig{TLS: clientTLS})
		me := goroutineID()
		const calls = 50
		own := 0
		for i := range calls {
			var got decodedOn
			if err := callWithin(c, "add", &got, i, 1); err != nil || got.value != i+1 {
				t.Fatalf("add(%d, 1) = %d, %v", i, got.value, err)
			}
			if got.goroutine == me {
				own++
			}
		}
		t.Logf("%d of %d replies read by their caller", own, calls)
		// The first reply may be read by the client's goroutine, which
		// watches a connection that has been quiet, and a caller held up
		// on a busy machine may find it watching again.
		if own < calls/5 {
			t.Fatalf("only %d of %d lone calls read their own reply", own, calls)
		}
	})
}

// TestCallersComeAndGoOnOneConnection has callers join and leave one
// connection in waves, from one alone to many at once, with calls made by
// Call and by Go, replies out of order, and some calls abandoned: each
// must get its own reply.
func TestCallersComeAndGoOnOneConnection(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	c := dial(t, addr, ClientConfig{})
	var wrong atomic.Int64
	fail := func(format string, args ...any) {
		if wrong.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	caller := func(g int, rng *rand.Rand) {
		for i := range 1 + rng.IntN(40) {
			ctx := context.Background()
			id := g*1000 + i
			switch rng.IntN(10) {
			case 0: // a call given up at once: its reply, if any, is someone else's to drop
				abandoned, cancel := context.WithCancel(ctx)
				call := c.Go(abandoned, "sleep", new(int), nil, rng.IntN(3))
				cancel()
				if _, ok := await(t, call.Done, "abandoned call's completion"); !ok {
					return
				}
				if call.Error != nil && !errors.Is(call.Error, context.Canceled) {
					fail("abandoned call: %v", call.Error)
				}
			case 1: // a slow reply that others overtake
				var got int
				if err := callWithin(c, "sleep", &got, 1+rng.IntN(3)); err != nil || got < 1 {
					fail("sleep: %d, %v", got, err)
				}
			case 4: // bounded, as callers' calls often are
				bounded, cancel := context.WithTimeout(ctx, patience)
				var got int
				err := c.Call(bounded, "echo", &got, id)
				cancel()
				if err != nil || got != id {
					fail("echo(%d) with a deadline = %d, %v", id, got, err)
				}
			case 2, 3: // through Go
				call := c.Go(ctx, "echo", new(int), nil, id)
				if _, ok := await(t, call.Done, "reply to Go"); !ok {
					return
				}
				if got := *call.Result.(*int); call.Error != nil || got != id {
					fail("Go echo(%d) = %d, %v", id, got, call.Error)
				}
			default:
				var got int
				if err := callWithin(c, "echo", &got, id); err != nil || got != id {
					fail("echo(%d) = %d, %v", id, got, err)
				}
			}
		}
	}
	g := 0
	var overlapping sync.WaitGroup
	for wave, size := range []int{1, 1, 4, 1, 32, 2, 64, 1, 8, 1} {
		var wg sync.WaitGroup
		for range size {
			g++
			rng, me := rand.New(rand.NewPCG(uint64(g), uint64(wave))), g
			if wave%2 == 1 {
				// This wave's callers overlap the next one's.
				overlapping.Go(func() { caller(me, rng) })
			} else {
				wg.Go(func() { caller(me, rng) })
			}
		}
		wg.Wait()
	}
	overlapping.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d calls got a wrong reply or error", n)
	}
	if s.Stats().Calls == 0 {
		t.Error("the server saw no calls")
	}
}

// TestLoneCallerCanceledWhileReading: a caller reading the connection for
// its own reply, whose context ends, returns at once with the context's
// error, the server is told to cancel, and the connection serves the next
// call.
func TestLoneCallerCanceledWhileReading(t *testing.T) {
	overPlainAndTLS(t, func(t *testing.T, serverTLS, clientTLS *tls.Config) {
		checkGoroutines(t)
		s, addr := startServer(t, ServerConfig{TLS: serverTLS})
		c := dial(t, addr, ClientConfig{TLS: clientTLS})
		// The canceled caller must be the one reading; the client's own
		// goroutine may be, if the connection sat quiet before the call,
		// so try a few times.
		readerCanceled := 0
		for round := 0; round < rounds && readerCanceled == 0; round++ {
			if err := callWithin(c, "add", nil, 1, 2); err != nil {
				t.Fatal(err)
			}
			// add's reply comes before the server counts it done.
			waitFor(t, "add to be counted out", func() bool { return s.Stats().InFlight == 0 })
			ctx, cancel := context.WithCancel(context.Background())
			returned := make(chan error, 1)
			go func() { returned <- c.Call(ctx, "sleep", nil, 60_000) }()
			waitFor(t, "the call to start", func() bool { return s.Stats().InFlight == 1 })
			if callerReads(c) {
				readerCanceled++
			}
			cancel()
			select {
			case err := <-returned:
				if !errors.Is(err, ErrCanceled) || !errors.Is(err, context.Canceled) {
					t.Fatalf("got %v, want Canceled", err)
				}
			case <-time.After(patience):
				t.Fatal("the canceled call did not return")
			}
			waitFor(t, "the server-side call to end", func() bool { return s.Stats().InFlight == 0 })
			for i := range 20 {
				var sum int
				if err := callWithin(c, "add", &sum, i, 1); err != nil || sum != i+1 {
					t.Fatalf("add after cancel = %d, %v", sum, err)
				}
			}
		}
		if readerCanceled == 0 {
			t.Fatal("no round canceled a caller while it read the connection")
		}
	})
}

// scriptedServer accepts one connection on 127.0.0.1 (over TLS when cfg
// is set) and runs script on it, to answer as a real server would not:
// out of order, or half a reply at a time. next returns the next message
// as an array, nil once the connection has ended.
func scriptedServer(t *testing.T, cfg *tls.Config, script func(conn net.Conn, next func() []any)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		l = tls.NewListener(l, cfg)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		mr := newMessageReader(bufio.NewReader(conn), 0, 0)
		next := func() []any {
			msg, err := mr.next()
			if err != nil {
				return nil
			}
			var v []any
			if err := msgpack.Unmarshal(msg, &v); err != nil {
				return nil
			}
			return v
		}
		script(conn, next)
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

// requestsOnly wraps a scripted server's next to skip notifications
// (cancels, from calls that gave up).
func requestsOnly(next func() []any) func() []any {
	return func() []any {
		for {
			msg := next()
			if msg == nil || len(msg) == 4 {
				return msg
			}
		}
	}
}

// reply encodes a msgpack-rpc response.
func reply(t *testing.T, id any, result any) []byte {
	b, err := msgpack.Marshal([]any{1, id, nil, result})
	if err != nil {
		t.Error(err)
	}
	return b
}

// rounds is how many times a test that needs a caller to be reading the
// connection tries: the client's goroutine reads instead if the
// connection sat quiet, as it may on a busy machine.
const rounds = 5

// callerReads reports whether a caller holds c's read baton.
func callerReads(c *Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.baton == batonCaller
}

// TestCanceledMidReplyResumesTheStream: a caller whose context ends while
// it reads half a reply returns at once; the rest of that reply, when it
// comes, is read by another and dropped, and the next call gets its own.
func TestCanceledMidReplyResumesTheStream(t *testing.T) {
	overPlainAndTLS(t, func(t *testing.T, serverTLS, clientTLS *tls.Config) {
		checkGoroutines(t)
		halfSent := make(chan struct{}, 1)
		canceled := make(chan []any, 1)
		addr := scriptedServer(t, serverTLS, func(conn net.Conn, next func() []any) {
			for {
				warm := next()
				if warm == nil {
					return
				}
				conn.Write(reply(t, warm[1], "warm"))
				slow := next() // the call to be canceled
				if slow == nil {
					return
				}
				long := reply(t, slow[1], string(bytes.Repeat([]byte{'x'}, 3000)))
				conn.Write(long[:len(long)/2])
				halfSent <- struct{}{}
				canceled <- next() // its shoal.cancel
				conn.Write(long[len(long)/2:])
				for range 5 {
					req := next()
					if req == nil {
						return
					}
					conn.Write(reply(t, req[1], fmt.Sprint("reply to ", req[3].([]any)[0])))
				}
			}
		})
		c := dial(t, addr, ClientConfig{TLS: clientTLS})
		exercised := false
		for round := 0; round < rounds && !exercised; round++ {
			if err := callWithin(c, "warm", nil); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			returned := make(chan error, 1)
			var got string
			go func() { returned <- c.Call(ctx, "slow", &got) }()
			if _, ok := await(t, halfSent, "half reply"); !ok {
				t.FailNow()
			}
			exercised = callerReads(c)
			cancel()
			select {
			case err := <-returned:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("got %v (%q), want Canceled", err, got)
				}
			case <-time.After(patience):
				t.Fatal("the call canceled in the middle of its reply did not return")
			}
			if msg, _ := await(t, canceled, "cancel notification"); len(msg) != 3 || msg[1] != MethodCancel {
				t.Fatalf("after the cancel the server got %v, want a %s notification", msg, MethodCancel)
			}
			for i := range 5 {
				var answer string
				if err := callWithin(c, "next", &answer, i); err != nil || answer != fmt.Sprint("reply to ", i) {
					t.Fatalf("call %d after the canceled one = %q, %v", i, answer, err)
				}
			}
		}
		if !exercised {
			t.Fatal("no round canceled a caller while it read the connection")
		}
	})
}

// TestLoneReaderRoutesOthersReplies: a caller reading for its own reply
// that meets replies to other calls first, the server answering out of
// order, delivers them to their callers and goes on reading for its own.
func TestLoneReaderRoutesOthersReplies(t *testing.T) {
	checkGoroutines(t)
	const others = 20
	addr := scriptedServer(t, nil, func(conn net.Conn, next func() []any) {
		next = requestsOnly(next)
		for {
			warm := next()
			if warm == nil {
				return
			}
			conn.Write(reply(t, warm[1], 0))
			// The lone call, then the others; answered in reverse.
			var reqs [][]any
			for range 1 + others {
				req := next()
				if req == nil {
					return
				}
				reqs = append(reqs, req)
			}
			for i := len(reqs) - 1; i >= 0; i-- {
				conn.Write(reply(t, reqs[i][1], reqs[i][3].([]any)[0]))
			}
		}
	})
	c := dial(t, addr, ClientConfig{})
	exercised := false
	for round := 0; round < rounds && !exercised; round++ {
		if err := callWithin(c, "warm", nil); err != nil {
			t.Fatal(err)
		}
		lone := make(chan error, 1)
		var loneGot int
		go func() { lone <- callWithin(c, "echo", &loneGot, -1) }()
		waitFor(t, "the lone call to be sent", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.pending) == 1 && c.baton != batonFree
		})
		exercised = callerReads(c)
		done := make(chan *Call, others)
		for i := range others {
			c.Go(context.Background(), "echo", new(int), done, i)
		}
		for range others {
			call, ok := await(t, done, "reply to an overtaking call")
			if !ok {
				t.FailNow()
			}
			if want := call.Args[0].(int); call.Error != nil || *call.Result.(*int) != want {
				t.Errorf("echo(%d) = %d, %v", want, *call.Result.(*int), call.Error)
			}
		}
		if err, _ := await(t, lone, "reply to the lone call"); err != nil || loneGot != -1 {
			t.Fatalf("lone echo(-1) = %d, %v", loneGot, err)
		}
	}
	if !exercised {
		t.Fatal("in no round did the lone caller read the connection")
	}
}

// TestRepliesInReverseToManyCallers: concurrent callers of Call on one
// connection whose server answers last first all get their own replies.
func TestRepliesInReverseToManyCallers(t *testing.T) {
	checkGoroutines(t)
	const callers = 32
	addr := scriptedServer(t, nil, func(conn net.Conn, next func() []any) {
		next = requestsOnly(next)
		for {
			var reqs [][]any
			for range callers {
				req := next()
				if req == nil {
					return
				}
				reqs = append(reqs, req)
			}
			for i := len(reqs) - 1; i >= 0; i-- {
				conn.Write(reply(t, reqs[i][1], reqs[i][3].([]any)[0]))
			}
		}
	})
	c := dial(t, addr, ClientConfig{})
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range 5 {
				id := g*100 + i
				var got int
				if err := callWithin(c, "echo", &got, id); err != nil || got != id {
					t.Errorf("echo(%d) = %d, %v", id, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDoneFiresWhenTheServerClosesAnIdleConnection: after calls that read
// their own replies, a connection left idle is still watched, so Done
// fires when the server closes it, by its idle timeout or by shutting
// down.
func TestDoneFiresWhenTheServerClosesAnIdleConnection(t *testing.T) {
	checkGoroutines(t)
	for _, how := range []string{"idle timeout", "server closed"} {
		t.Run(how, func(t *testing.T) {
			cfg := ServerConfig{}
			if how == "idle timeout" {
				cfg.IdleTimeout = 300 * time.Millisecond
			}
			s, addr := startServer(t, cfg)
			c := dial(t, addr, ClientConfig{})
			for i := range 20 {
				if err := callWithin(c, "add", nil, i, i); err != nil {
					t.Fatal(err)
				}
			}
			if how == "server closed" {
				s.Close()
			}
			select {
			case <-c.Done():
			case <-time.After(patience):
				t.Fatal("Done did not fire after the server closed the idle connection")
			}
			if err := c.Err(); !errors.As(err, new(*ConnError)) {
				t.Fatalf("Err() = %v, want a ConnError", err)
			}
		})
	}
}

// TestPooledClientsReadTheirOwnReplies: calls through a Pool, from one
// caller and from many, all get their replies, and the pool's Close stops
// every goroutine.
func TestPooledClientsReadTheirOwnReplies(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	p := NewPool(ClientConfig{Logger: quietLogger(t)})
	defer p.Close()
	for i := range 50 {
		var sum int
		if err := p.Call(context.Background(), addr, "add", &sum, i, 1); err != nil || sum != i+1 {
			t.Fatalf("add(%d, 1) = %d, %v", i, sum, err)
		}
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				var sum int
				if err := p.Call(context.Background(), addr, "add", &sum, g, i); err != nil || sum != g+i {
					t.Errorf("add(%d, %d) = %d, %v", g, i, sum, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
