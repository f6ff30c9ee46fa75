package rpc

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestMaxConnsClosesConnectionsBeyondIt(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{MaxConns: 2})
	first := dial(t, addr, ClientConfig{})
	assertCalls(t, first)
	assertCalls(t, dial(t, addr, ClientConfig{}))
	if st := s.Stats(); st.Connections != 2 || st.Refused != 0 {
		t.Fatalf("two connections under a cap of two: %+v", st)
	}

	// The third is accepted and closed at once: its client hears so
	// promptly rather than waiting in the listen backlog.
	third := rawConn(t, addr)
	third.Write(request(t, 1, MethodPing))
	expectClosed(t, third)
	waitFor(t, "the refusal to be counted", func() bool { return s.Stats().Refused == 1 })
	if st := s.Stats(); st.Connections != 2 || !s.Accepting() {
		t.Fatalf("after a refusal: %+v, accepting %v", st, s.Accepting())
	}

	// Once one closes, a new connection is served again.
	first.Close()
	waitFor(t, "the closed connection to end", func() bool { return s.Stats().Connections == 1 })
	assertCalls(t, dial(t, addr, ClientConfig{}))
	if st := s.Stats(); st.Connections != 2 || st.Refused != 1 {
		t.Fatalf("after a slot freed: %+v", st)
	}
}

// shortListener is a real listener whose Accept fails, while short is
// set, with the error accept4 gives a process out of file descriptors,
// wrapped as the net package wraps it.
type shortListener struct {
	net.Listener
	short atomic.Bool
}

func (l *shortListener) Accept() (net.Conn, error) {
	if l.short.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestAcceptOutOfDescriptorsIsRetried(t *testing.T) {
	checkGoroutines(t)
	s := NewServer(ServerConfig{Logger: quietLogger(t)})
	testFunctions(t, s)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &shortListener{Listener: inner}
	l.short.Store(true)
	if s.Accepting() {
		t.Fatal("accepting before Serve")
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() { s.Close() })

	waitFor(t, "accept errors to be retried", func() bool { return s.Stats().AcceptErrors >= 3 })
	select {
	case err := <-served:
		t.Fatalf("Serve gave up on EMFILE: %v", err)
	default:
	}
	if s.Accepting() {
		t.Fatal("accepting while every accept fails")
	}

	// Descriptors come back: the next retry takes the waiting client.
	l.short.Store(false)
	assertCalls(t, dial(t, l.Addr().String(), ClientConfig{}))
	if !s.Accepting() {
		t.Fatal("not accepting after an accept succeeded")
	}

	// Close ends a loop that is backing off. The loop may already wait
	// in the inner Accept: a connection wakes it to meet the shortage.
	before := s.Stats().AcceptErrors
	l.short.Store(true)
	rawConn(t, l.Addr().String())
	waitFor(t, "accept to fail again", func() bool { return s.Stats().AcceptErrors > before && !s.Accepting() })
	s.Close()
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still backing off after Close")
	}
}

func TestRetryableAccept(t *testing.T) {
	wrap := func(errno error) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{wrap(syscall.EMFILE), true},
		{wrap(syscall.ENFILE), true},
		{wrap(syscall.ENOBUFS), true},
		{wrap(syscall.ENOMEM), true},
		{wrap(syscall.ECONNABORTED), true},
		{wrap(os.ErrDeadlineExceeded), true},
		{wrap(syscall.EINVAL), false},
		{net.ErrClosed, false},
		{errors.New("something else"), false},
	} {
		if got := retryableAccept(tc.err); got != tc.want {
			t.Errorf("retryableAccept(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// assertCalls proves c is served.
func assertCalls(t *testing.T, c *Client) {
	t.Helper()
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add(2, 3) = %d, %v", sum, err)
	}
}
