package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"testing"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// startGrid starts a grid of n node processes for a benchmark.
func startGrid(b *testing.B, n int, args ...string) *Grid {
	b.Helper()
	g, err := StartGrid(context.Background(), testutil.ShoalBinary(b), fmt.Sprintf("b%d", n), n, args...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	return g
}

// BenchmarkMapTrivial runs jobs of 100,000 square items over three local
// node processes, through the Go API and through shoal submit, and a job of
// one item for the latency of a small job. `shoal bench map` measures the
// same over grids of 1, 2 and 3 nodes.
//
//	go test -run '^$' -bench MapTrivial -benchtime 5x ./bench
func BenchmarkMapTrivial(b *testing.B) {
	g := startGrid(b, 3)
	ctx := context.Background()
	const items = 100_000
	inputs := make([]int, items)
	for i := range inputs {
		inputs[i] = i
	}
	b.Run("go-api/items=100000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			out, err := shoal.Map[int, int](ctx, g.Client, "square", inputs, shoal.WithoutCache())
			if err != nil || out[items-1] != (items-1)*(items-1) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
	})
	bin := testutil.ShoalBinary(b)
	b.Run("submit/items=100000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			cmd := exec.Command(bin, "submit", "--seed", g.Nodes[0].RPC, "--range", fmt.Sprintf("0:%d", items), "--no-cache", "square")
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
			if _, err := shoal.Map[int, int](ctx, g.Client, "square", []int{i}, shoal.WithoutCache()); err != nil {
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
			g := startGrid(b, n, "--slots", "1")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := shoal.Map[shoal.Args, string](context.Background(), g.Client, "sha256", inputs, shoal.WithoutCache()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
