// Package bench holds Shoal's benchmark scenarios: each one measures Shoal
// side by side with a reference in the same run, so a noisy machine slows
// both alike. `go test -bench . ./bench` runs them.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	netrpc "net/rpc"
	"sync"

	"github.com/shoalgrid/shoal/rpc"
)

// RPCTarget is one system in the rpc scenario: a server on 127.0.0.1 and
// one client connection to it, shared by every caller.
type RPCTarget struct {
	Name string // "shoal", "net/rpc" or "tcp-echo"
	// Call makes one round trip carrying payload and checks the reply.
	Call  func(payload []byte) error
	close []func() error
}

// Close stops the client and the server.
func (t *RPCTarget) Close() error {
	var errs []error
	for i := len(t.close) - 1; i >= 0; i-- {
		errs = append(errs, t.close[i]())
	}
	return errors.Join(errs...)
}

var errMismatch = errors.New("bench: reply differs from payload")

// StartShoal serves an echo function with the rpc package.
func StartShoal() (*RPCTarget, error) {
	srv := rpc.NewServer(rpc.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.Register("echo", func(b []byte) []byte { return b }); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t := &RPCTarget{Name: "shoal"}
	t.close = append(t.close, func() error {
		srv.Close()
		<-served
		return nil
	})
	c, err := rpc.Dial(context.Background(), l.Addr().String(), rpc.ClientConfig{})
	if err != nil {
		t.Close()
		return nil, err
	}
	t.close = append(t.close, c.Close)
	ctx := context.Background()
	t.Call = func(payload []byte) error {
		var reply []byte
		if err := c.Call(ctx, "echo", &reply, payload); err != nil {
			return err
		}
		if len(reply) != len(payload) {
			return errMismatch
		}
		return nil
	}
	return t, nil
}

// EchoService is the net/rpc counterpart of Shoal's echo function.
type EchoService struct{}

// Echo replies with its argument.
func (EchoService) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// StartNetRPC serves the same echo with Go's net/rpc (gob encoding).
func StartNetRPC() (*RPCTarget, error) {
	srv := netrpc.NewServer()
	if err := srv.Register(EchoService{}); err != nil {
		return nil, err
	}
	ts, err := serveTCP(func(conn net.Conn) { srv.ServeConn(conn) })
	if err != nil {
		return nil, err
	}
	t := &RPCTarget{Name: "net/rpc", close: []func() error{ts.Close}}
	c, err := netrpc.Dial("tcp", ts.addr())
	if err != nil {
		t.Close()
		return nil, err
	}
	t.close = append(t.close, c.Close)
	t.Call = func(payload []byte) error {
		var reply []byte
		if err := c.Call("EchoService.Echo", payload, &reply); err != nil {
			return err
		}
		if len(reply) != len(payload) {
			return errMismatch
		}
		return nil
	}
	return t, nil
}

// StartRawEcho runs a TCP echo server: the floor any request-reply protocol
// over one loopback connection pays. Concurrent callers take turns on the
// connection, since raw bytes carry no ids to match replies by.
func StartRawEcho() (*RPCTarget, error) {
	ts, err := serveTCP(func(conn net.Conn) { io.Copy(conn, conn) })
	if err != nil {
		return nil, err
	}
	t := &RPCTarget{Name: "tcp-echo", close: []func() error{ts.Close}}
	conn, err := net.Dial("tcp", ts.addr())
	if err != nil {
		t.Close()
		return nil, err
	}
	t.close = append(t.close, conn.Close)
	var mu sync.Mutex
	var buf []byte
	t.Call = func(payload []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if _, err := conn.Write(payload); err != nil {
			return err
		}
		if cap(buf) < len(payload) {
			buf = make([]byte, len(payload))
		}
		_, err := io.ReadFull(conn, buf[:len(payload)])
		return err
	}
	return t, nil
}

// StartRPCTargets starts Shoal, net/rpc and the raw TCP echo.
func StartRPCTargets() ([]*RPCTarget, error) {
	var targets []*RPCTarget
	for _, start := range []func() (*RPCTarget, error){StartShoal, StartNetRPC, StartRawEcho} {
		t, err := start()
		if err != nil {
			for _, t := range targets {
				t.Close()
			}
			return nil, fmt.Errorf("bench: start: %w", err)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// tcpServer runs a reference server on 127.0.0.1: one goroutine per
// connection, all of them stopped and waited for by Close.
type tcpServer struct {
	l  net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func serveTCP(handle func(net.Conn)) (*tcpServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &tcpServer{l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				handle(conn)
			}()
		}
	}()
	return s, nil
}

func (s *tcpServer) addr() string { return s.l.Addr().String() }

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *tcpServer) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
