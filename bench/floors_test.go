package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/internal/testutil"
)

func intsUpTo(n int) []int {
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	return items
}

// TestFloorBytesAreAJobANodeAnswers sends the TCP floor's request bytes to
// a real `shoal node` and checks that it answers them with the values of
// the floor's reply: the floor moves a real job's bytes, not some other
// load of about the same size.
func TestFloorBytesAreAJobANodeAnswers(t *testing.T) {
	ctx := context.Background()
	nd, err := local.StartNode(ctx, testutil.ShoalBinary(t), "floor", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Stop(10 * time.Second) })
	requests, replies, err := jobMessages(intsUpTo(2500))
	if err != nil {
		t.Fatal(err)
	}
	if len(requests) != 3 || len(replies) != 3 {
		t.Fatalf("%d requests and %d replies for 2,500 items in chunks of %d", len(requests), len(replies), FloorChunkItems)
	}
	conn, err := net.Dial("tcp", nd.RPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	dec := msgpack.NewDecoder(conn)
	for i, request := range requests {
		if _, err := conn.Write(request); err != nil {
			t.Fatal(err)
		}
		got, err := dec.DecodeInterface()
		if err != nil {
			t.Fatal(err)
		}
		want, err := msgpack.NewDecoder(bytes.NewReader(replies[i])).DecodeInterface()
		if err != nil {
			t.Fatal(err)
		}
		// The node's reply may encode its error list differently; the
		// envelope and the values must be the same.
		g, w := got.([]any), want.([]any)
		if len(g) != 4 || fmt.Sprint(g[:3]) != fmt.Sprint(w[:3]) {
			t.Fatalf("chunk %d: the node answered %v, the floor's reply is %v", i, g, w)
		}
		gv, wv := g[3].(map[string]any)["v"], w[3].(map[string]any)["v"]
		if fmt.Sprint(gv) != fmt.Sprint(wv) || len(wv.([]any)) != min(FloorChunkItems, 2500-i*FloorChunkItems) {
			t.Errorf("chunk %d: the node's values differ from the floor's reply", i)
		}
	}
}

// TestFloorsComputeTheJob runs each floor twice, checking its results,
// and checks the TCP floor's peer process ends when the floor closes.
func TestFloorsComputeTheJob(t *testing.T) {
	items := intsUpTo(2500)
	if sum, err := squareLoop(items); err != nil || sum != squareSum(items) {
		t.Errorf("loop: %d, %v", sum, err)
	}
	if _, err := squareLoop([]int{1 << 40}); err == nil {
		t.Error("the loop did not fail on an overflow, as square does")
	}
	mp := newMsgpackFloor(items)
	for range 2 {
		if err := mp.run(); err != nil {
			t.Fatal(err)
		}
	}
	if mp.results[2499] != 2499*2499 {
		t.Errorf("msgpack floor: square(2499) = %d", mp.results[2499])
	}

	tcp, err := startTCPFloor(context.Background(), testutil.ShoalBinary(t), items)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.close() })
	for range 2 {
		if err := tcp.run(); err != nil {
			t.Fatal(err)
		}
	}
	if !tcp.checked {
		t.Error("the TCP floor never compared the replies")
	}
	if err := tcp.close(); err != nil {
		t.Errorf("the peer did not end cleanly: %v", err)
	}
	if !tcp.peer.ProcessState.Exited() {
		t.Errorf("peer: %v", tcp.peer.ProcessState)
	}
}

// TestFloorPeerEndsWithItsParent checks the peer process ends, rather than
// waits, when its parent goes away in the middle of a request.
func TestFloorPeerEndsWithItsParent(t *testing.T) {
	tcp, err := startTCPFloor(context.Background(), testutil.ShoalBinary(t), intsUpTo(10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.close() })
	// Half a request, then the parent goes: closing stdin alone must end
	// the peer, as when the bench is killed.
	if _, err := tcp.conn.Write(tcp.requests[0][:5]); err != nil {
		t.Fatal(err)
	}
	tcp.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- tcp.peer.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("peer: %v (%s)", err, tcp.stderr.tail())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the peer did not end when its stdin closed")
	}
	tcp.peer = nil // waited for
}

func TestLineCounterCountsLinesSplitAnywhere(t *testing.T) {
	out := "0\n1\n4\n9\n16\n25\n"
	for size := 1; size <= len(out); size++ {
		var c lineCounter
		for s := out; s != ""; {
			n := min(size, len(s))
			c.Write([]byte(s[:n]))
			s = s[n:]
		}
		if c.lines != 6 || string(c.last) != "25" || len(c.part) != 0 {
			t.Errorf("writes of %d bytes: %d lines, the last %q, %q pending", size, c.lines, c.last, c.part)
		}
	}
}

// TestDaskAbsentSaysHowToInstall: without a Python that imports
// distributed the report says so, and how to install it, and the run goes
// on.
func TestDaskAbsentSaysHowToInstall(t *testing.T) {
	python := t.TempDir() + "/no-python3"
	r, err := RunDask(context.Background(), DaskConfig{Binary: "unused", Python: python}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Skipped, python) || !strings.Contains(r.Skipped, "apt-get install -y python3-distributed") ||
		r.Dask.ItemsPerSecond != 0 || r.ShoalVsDask != 0 {
		t.Errorf("report: %+v", r)
	}
	var table bytes.Buffer
	if err := WriteTable(&table, &Report{Dask: r, Config: Config{Dask: DaskConfig{Workers: 2}}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "note: dask: not measured") || !strings.Contains(table.String(), "python3-distributed") {
		t.Errorf("table:\n%s", table.String())
	}
}

// TestMemorySkipsAJobOverTheBudget: a size whose client would pass the
// budget, growing with the job as it did, is not run, and the report says
// why.
func TestMemorySkipsAJobOverTheBudget(t *testing.T) {
	r, err := RunMemory(context.Background(), MemoryConfig{Binary: testutil.ShoalBinary(t), Sizes: []int{200, 2000, 20000}, Nodes: 1, BudgetMiB: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Results) > 0 && r.Results[0].ClientPeakMiB == 0 {
		t.Skip("this system does not give a child's peak resident memory")
	}
	if len(r.Results) != 1 || r.Results[0].Items != 200 || len(r.Skipped) != 1 ||
		!strings.Contains(r.Skipped[0], "2,000 items not run") || !strings.Contains(r.Skipped[0], "over the budget of 1 MiB (--memory-budget)") {
		t.Errorf("report: %+v", r)
	}
}
