package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/shoalgrid/shoal/rpc"
)

// Serve a function and call it over TCP on 127.0.0.1.
func Example() {
	srv := rpc.NewServer(rpc.ServerConfig{})
	srv.Register("add", func(ctx context.Context, a, b int) (int, error) {
		return a + b, nil
	}, rpc.WithArgNames("a", "b"), rpc.Cacheable())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, err := rpc.Dial(ctx, l.Addr().String(), rpc.ClientConfig{})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	var sum int
	if err := c.Call(ctx, "add", &sum, 2, 3); err != nil {
		panic(err)
	}
	fmt.Println(sum)

	err = c.Call(ctx, "add", &sum, 2, "three")
	fmt.Println(errors.Is(err, rpc.ErrBadArguments))
	fmt.Println(err)
	// Output:
	// 5
	// true
	// BadArguments: add(a int, b int) int: argument 2: want int, got string
}

// Calculator is an object whose methods become functions.
type Calculator struct{ calls int }

// Double returns twice x.
func (c *Calculator) Double(x int) int { c.calls++; return 2 * x }

// Expose the exported methods of a value, as Pyro exposes an object.
func ExampleServer_RegisterObject() {
	srv := rpc.NewServer(rpc.ServerConfig{})
	defer srv.Close()
	if err := srv.RegisterObject("calc", &Calculator{}); err != nil {
		panic(err)
	}
	for _, fn := range srv.Functions() {
		fmt.Println(fn.Signature)
	}
	// Output:
	// calc.Double(int) int
}
