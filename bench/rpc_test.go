package bench

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// payloadSize is the bytes each call carries each way.
const payloadSize = 64

// BenchmarkRPC compares, in one run on 127.0.0.1, a Shoal call, a net/rpc
// call and a raw TCP echo round trip of the same payload, first one caller
// at a time and then 64 concurrent callers sharing one connection: with
// the servers in this process, then (as process/...) in a child process
// of the shoal binary.
//
//	go test -run '^$' -bench RPC -benchtime 2s -count 3 ./bench
func BenchmarkRPC(b *testing.B) {
	targets, err := StartRPCTargets()
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, t := range targets {
			t.Close()
		}
	}()
	child, err := startEchoProcess(context.Background(), testutil.ShoalBinary(b))
	if err != nil {
		b.Fatal(err)
	}
	defer child.Close()
	remote, err := child.targets()
	if err != nil {
		b.Fatal(err)
	}
	targets = append(targets, remote...)
	payload := bytes.Repeat([]byte{'x'}, payloadSize)
	for _, callers := range []int{1, 64} {
		for _, target := range targets {
			name := target.Name + "/callers=" + strconv.Itoa(callers)
			if target.Server == ChildProcess {
				name = "process/" + name
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				runCallers(b, callers, func() error { return target.Call(payload) })
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
		}
	}
}

// runCallers makes b.N calls from n goroutines.
func runCallers(b *testing.B, n int, call func() error) {
	var wg sync.WaitGroup
	var next sync.Mutex
	remaining := b.N
	take := func() bool {
		next.Lock()
		defer next.Unlock()
		if remaining == 0 {
			return false
		}
		remaining--
		return true
	}
	b.ResetTimer()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for take() {
				if err := call(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestRPCTargetsEcho checks each benchmark target carries a payload and
// stops cleanly, so the benchmark measures working systems.
func TestRPCTargetsEcho(t *testing.T) {
	targets, err := StartRPCTargets()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range targets {
		if err := target.Call(bytes.Repeat([]byte{'y'}, payloadSize)); err != nil {
			t.Errorf("%s: %v", target.Name, err)
		}
		if err := target.Close(); err != nil {
			t.Errorf("%s: close: %v", target.Name, err)
		}
	}
}

// TestEchoProcessServesEverySystem starts the rpc scenario's separate
// process from the shoal binary, calls each of its servers, and checks it
// stops when its input ends.
func TestEchoProcessServesEverySystem(t *testing.T) {
	child, err := startEchoProcess(context.Background(), testutil.ShoalBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Close() })
	targets, err := child.targets()
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != len(rpcSystems) {
		t.Fatalf("%d targets, want %d", len(targets), len(rpcSystems))
	}
	for _, target := range targets {
		if target.Server != ChildProcess {
			t.Errorf("%s: server %q", target.Name, target.Server)
		}
		if err := target.Call(bytes.Repeat([]byte{'z'}, payloadSize)); err != nil {
			t.Errorf("%s: %v", target.Name, err)
		}
		if err := target.Close(); err != nil {
			t.Errorf("%s: close: %v", target.Name, err)
		}
	}
	if err := child.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if !child.cmd.ProcessState.Success() {
		t.Errorf("child exited %v", child.cmd.ProcessState)
	}
}
