package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// startGrid starts n `shoal node` processes joined into one grid and a
// client seeded at the first.
func startGrid(b *testing.B, n int, args ...string) (*shoal.Client, []*testutil.Node) {
	b.Helper()
	var nodes []*testutil.Node
	for i := 0; i < n; i++ {
		join := ""
		if i > 0 {
			join = nodes[0].Gossip
		}
		nodes = append(nodes, testutil.StartNode(b, fmt.Sprintf("n%d", i), join, args...))
	}
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{nodes[0].RPC}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	testutil.WaitFor(b, 15*time.Second, "every node to be offered", func() bool {
		alive := 0
		for _, m := range c.Members() {
			if m.State == "alive" {
				alive++
			}
		}
		return alive == n
	})
	return c, nodes
}

// BenchmarkMapTrivial runs jobs of 100,000 square items over three local
// node processes, through the Go API and through shoal submit, and a job of
// one item for the latency of a small job.
//
//	go test -run '^$' -bench MapTrivial -benchtime 5x ./bench
func BenchmarkMapTrivial(b *testing.B) {
	c, nodes := startGrid(b, 3)
	ctx := context.Background()
	const items = 100_000
	inputs := make([]int, items)
	for i := range inputs {
		inputs[i] = i
	}
	b.Run("go-api/items=100000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			out, err := shoal.Map[int, int](ctx, c, "square", inputs, shoal.WithoutCache())
			if err != nil || out[items-1] != (items-1)*(items-1) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
	})
	bin := testutil.ShoalBinary(b)
	b.Run("submit/items=100000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cmd := exec.Command(bin, "submit", "--seed", nodes[0].RPC, "--range", fmt.Sprintf("0:%d", items), "--no-cache", "square")
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = io.Discard, &stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("%v\n%s", err, stderr.Bytes())
			}
		}
		b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
	})
	b.Run("go-api/items=1", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := shoal.Map[int, int](ctx, c, "square", []int{i}, shoal.WithoutCache()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMapCPU runs sha256 items (20,000 rounds each, CPU-bound) on a
// grid of one node and of two, each node with one slot, to show the
// speed-up a second node brings.
//
//	go test -run '^$' -bench MapCPU -benchtime 3x ./bench
func BenchmarkMapCPU(b *testing.B) {
	const items, rounds = 200, 20_000
	inputs := make([]shoal.Args, items)
	for i := range inputs {
		inputs[i] = shoal.Args{fmt.Sprint("text-", i), rounds}
	}
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			c, _ := startGrid(b, n, "--slots", "1")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := shoal.Map[shoal.Args, string](context.Background(), c, "sha256", inputs, shoal.WithoutCache()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
