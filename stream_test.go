package shoal_test

import (
	"context"
	"errors"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// upTo yields 0..n-1.
func upTo(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
}

// TestStreamSeqInOrderAndAsCompleted runs a job over a sequence: with
// InOrder the items come in input order, without it in any order, each
// once with its value; progress counts them against an unknown total.
func TestStreamSeqInOrderAndAsCompleted(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	const items = 30_000
	for _, ordered := range []bool{true, false} {
		opts := []shoal.Option{shoal.WithoutCache(), shoal.WithChunkSize(500)}
		if ordered {
			opts = append(opts, shoal.InOrder())
		}
		lastDone, total := 0, 0
		opts = append(opts, shoal.WithProgress(func(done, tot int) { lastDone, total = done, tot }))
		seen := make([]bool, items)
		k := 0
		outOfOrder := 0
		for it, err := range shoal.StreamSeq[int, int](context.Background(), c, "square", upTo(items), opts...) {
			if err != nil {
				t.Fatal(err)
			}
			if it.Err != nil || it.Value != it.Index*it.Index || seen[it.Index] {
				t.Fatalf("item %+v (seen before: %v)", it, seen[it.Index])
			}
			seen[it.Index] = true
			if it.Index != k {
				outOfOrder++
			}
			k++
		}
		if k != items || lastDone != items || total != -1 {
			t.Fatalf("%d items yielded; progress last said %d of %d", k, lastDone, total)
		}
		if ordered && outOfOrder > 0 {
			t.Fatalf("%d items out of input order with InOrder", outOfOrder)
		}
		t.Logf("ordered %v: %d items yielded out of input order", ordered, outOfOrder)
	}
	sq, err := shoal.MapSeq[int, int](context.Background(), c, "square", upTo(1000), shoal.WithoutCache())
	if err != nil || len(sq) != 1000 || sq[999] != 999*999 || sq[0] != 0 {
		t.Fatalf("MapSeq: %d results, %v", len(sq), err)
	}
}

// TestStreamSeqYieldsWhileInputsWait: a sequence that waits for its next
// input does not hold back the results of the inputs it gave; here it
// gives its third input only once the first two have come back.
func TestStreamSeqYieldsWhileInputsWait(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	firstTwo := make(chan struct{})
	inputs := func(yield func(int) bool) {
		if !yield(1) || !yield(2) {
			return
		}
		select {
		case <-firstTwo:
		case <-time.After(20 * time.Second):
			t.Error("the first two results did not come back while the inputs waited")
			return
		}
		yield(3)
	}
	var got []int
	for it, err := range shoal.StreamSeq[int, int](context.Background(), c, "square", inputs, shoal.InOrder()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, it.Value)
		if len(got) == 2 {
			close(firstTwo)
		}
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 4 || got[2] != 9 {
		t.Fatalf("got %v", got)
	}
}

// TestStreamSeqStopsTheInputs: breaking out of the loop, or ending the
// job by ctx, ends an endless sequence at its next yield, and StreamSeq
// returns with nothing left running.
func TestStreamSeqStopsTheInputs(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	ended := make(chan struct{}, 2)
	endless := func(yield func(int) bool) {
		defer func() { ended <- struct{}{} }()
		for i := 0; ; i++ {
			if !yield(i % 1000) {
				return
			}
		}
	}
	got := 0
	for _, err := range shoal.StreamSeq[int, int](context.Background(), c, "square", endless, shoal.WithoutCache()) {
		if err != nil {
			t.Fatal(err)
		}
		if got++; got == 50_000 {
			break
		}
	}
	select {
	case <-ended:
	default:
		t.Fatal("StreamSeq returned before the inputs did")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var jobErr error
	got = 0
	for _, err := range shoal.StreamSeq[int, int](ctx, c, "square", endless, shoal.WithoutCache()) {
		if err != nil {
			jobErr = err
			continue
		}
		if got++; got == 10_000 {
			cancel()
		}
	}
	if !errors.Is(jobErr, context.Canceled) {
		t.Fatalf("canceled job: %v", jobErr)
	}
	select {
	case <-ended:
	default:
		t.Fatal("StreamSeq returned before the inputs did")
	}
}

// TestUnencodableInputEndsTheJob: an input msgpack cannot encode ends the
// job with an error naming its index, from a slice or a sequence.
func TestUnencodableInputEndsTheJob(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	inputs := make([]any, 3000)
	for i := range inputs {
		inputs[i] = i
	}
	inputs[2500] = make(chan int)
	if _, err := shoal.Map[any, int](context.Background(), c, "square", inputs, shoal.WithoutCache()); err == nil || !strings.Contains(err.Error(), "input 2500") {
		t.Fatalf("Map: %v; want an error naming input 2500", err)
	}
	var jobErr error
	yielded := 0
	for it, err := range shoal.StreamSeq[any, int](context.Background(), c, "square", func(yield func(any) bool) {
		for _, in := range inputs {
			if !yield(in) {
				return
			}
		}
	}, shoal.WithoutCache(), shoal.InOrder()) {
		if err != nil {
			jobErr = err
			continue
		}
		if it.Index >= 2500 {
			t.Fatalf("item %d yielded", it.Index)
		}
		yielded++
	}
	if jobErr == nil || !strings.Contains(jobErr.Error(), "shoal: input 2500: ") {
		t.Fatalf("StreamSeq: %v; want an error naming input 2500", jobErr)
	}
	t.Logf("%d items before it yielded; the error: %v", yielded, jobErr)
}

// TestPanicInInputsReachesTheCaller: a panic in the sequence is raised
// again in the goroutine ranging over the results.
func TestPanicInInputsReachesTheCaller(t *testing.T) {
	testutil.CheckGoroutines(t)
	n, stop := startGrid()
	defer stop()
	c := dial(n.RPCAddr())
	defer c.Close()
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "input 3 is bad") {
			t.Fatalf("recovered %v; want the inputs' panic", p)
		}
	}()
	for range shoal.StreamSeq[int, int](context.Background(), c, "square", func(yield func(int) bool) {
		for i := range 3 {
			yield(i)
		}
		panic("input 3 is bad")
	}) {
	}
	t.Fatal("no panic")
}
