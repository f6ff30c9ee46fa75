package rpc

import (
	"context"
	"errors"
	"net"
	"testing"

	nvimrpc "github.com/neovim/go-client/msgpack/rpc"
)

// TestNeovimClientInterop calls a Shoal server with Neovim's msgpack-rpc
// client, an independent implementation of the specification.
func TestNeovimClientInterop(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := nvimrpc.NewEndpoint(conn, conn, conn)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ep.Serve() }()
	defer func() {
		ep.Close()
		<-served
	}()

	var sum int
	if err := ep.Call("add", &sum, 19, 23); err != nil || sum != 42 {
		t.Fatalf("add via the Neovim client = %d, %v", sum, err)
	}
	var echoed map[string]any
	if err := ep.Call("echo", &echoed, map[string]any{"k": "v"}); err != nil || echoed["k"] != "v" {
		t.Fatalf("echo via the Neovim client = %v, %v", echoed, err)
	}

	err = ep.Call("fail", nil, "out of cheese")
	var nvErr nvimrpc.Error
	if !errors.As(err, &nvErr) {
		t.Fatalf("fail via the Neovim client: got %T %v", err, err)
	}
	if got := nvErr.Value; got != "FunctionError: out of cheese" {
		t.Fatalf("error value %q, want the \"<Kind>: <message>\" string", got)
	}
	// And that string parses back to the kind a Go caller would see.
	if e := ParseError(nvErr.Value); !errors.Is(e, ErrFunctionError) || e.Message != "out of cheese" {
		t.Fatalf("parsed %v", e)
	}

	if err := ep.Call("nope", nil); err == nil || err.Error() != `UnknownFunction: no function named "nope"` {
		t.Fatalf("unknown function via the Neovim client: %v", err)
	}
	if err := ep.Notify("nobody.listens", 1); err != nil {
		t.Fatal(err)
	}
	if err := ep.Call("add", &sum, 1, 1); err != nil || sum != 2 {
		t.Fatalf("after an unknown notification: %d, %v", sum, err)
	}
}

// TestClientAgainstNeovimServer calls a Neovim msgpack-rpc endpoint with the
// Shoal client: errors in a form other than "<Kind>: <message>" arrive as
// KindRemote.
func TestClientAgainstNeovimServer(t *testing.T) {
	checkGoroutines(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		ep, _ := nvimrpc.NewEndpoint(conn, conn, conn)
		ep.Register("mul", func(a, b int) (int, error) { return a * b, nil })
		ep.Register("refuse", func() (int, error) { return 0, errors.New("no thanks") })
		served <- ep.Serve()
	}()

	c := dial(t, l.Addr().String(), ClientConfig{})
	var product int
	if err := c.Call(context.Background(), "mul", &product, 6, 7); err != nil || product != 42 {
		t.Fatalf("mul on a Neovim server = %d, %v", product, err)
	}
	err = c.Call(context.Background(), "refuse", nil)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindRemote || e.Message != "no thanks" {
		t.Fatalf("error from a Neovim server: %#v", err)
	}
	c.Close()
	<-served
}
