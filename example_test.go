package shoal_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

// startGrid starts a one-node grid in this process for the examples; a
// real grid runs `shoal node` on each machine.
func startGrid() (*node.Node, func()) {
	cfg := node.FastConfig()
	cfg.HTTPAddr = ""
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(cfg, "example")
	if err != nil {
		panic(err)
	}
	n.Register("square", func(x int) int { return x * x }, rpc.Cacheable(), rpc.WithVersion("1"))
	n.Register("upper", strings.ToUpper, rpc.Cacheable())
	n.Register("add", func(a, b int) int { return a + b }, rpc.Cacheable())
	if err := n.Start(context.Background()); err != nil {
		panic(err)
	}
	return n, func() { n.Shutdown(context.Background()) }
}

func dial(seed string) *shoal.Client {
	c, err := shoal.Dial(context.Background(), shoal.Config{
		Seeds:  []string{seed},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}
	return c
}

// Map a function over inputs across the grid; results come back in input
// order.
func Example() {
	n, stop := startGrid()
	defer stop()
	ctx := context.Background()

	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{n.RPCAddr()}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	squares, err := shoal.Map[int, int](ctx, c, "square", []int{1, 2, 3, 4, 5})
	if err != nil {
		panic(err)
	}
	fmt.Println(squares)
	// Output: [1 4 9 16 25]
}

// Functions of several arguments take shoal.Args inputs.
func ExampleMap_args() {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()

	sums, err := shoal.Map[shoal.Args, int](context.Background(), c, "add", []shoal.Args{{1, 2}, {30, 12}})
	fmt.Println(sums, err)
	// Output: [3 42] <nil>
}

// Stream yields results as they complete, with where they came from.
func ExampleStream() {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()

	var words []string
	for it, err := range shoal.Stream[string, string](context.Background(), c, "upper", []string{"gossip", "grid", "shoal"}) {
		if err != nil {
			panic(err)
		}
		words = append(words, fmt.Sprintf("%d:%s", it.Index, it.Value))
	}
	sort.Strings(words)
	fmt.Println(words)
	// Output: [0:GOSSIP 1:GRID 2:SHOAL]
}

// StreamSeq takes its inputs from a sequence of any length, read as the
// job goes, and with InOrder yields the results in input order.
func ExampleStreamSeq() {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()

	evens := func(yield func(int) bool) {
		for i := 0; i < 10; i += 2 {
			if !yield(i) {
				return
			}
		}
	}
	for it, err := range shoal.StreamSeq[int, int](context.Background(), c, "square", evens, shoal.InOrder()) {
		if err != nil {
			panic(err)
		}
		fmt.Print(it.Value, " ")
	}
	fmt.Println()
	// Output: 0 4 16 36 64
}

// Call routes one call to the least loaded node offering the function.
func ExampleClient_Call() {
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()

	var sum int
	err := c.Call(context.Background(), "add", &sum, 40, 2)
	fmt.Println(sum, err)
	// Output: 42 <nil>
}
