package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// readAll reads a job's results from index 0 until the end, checking
// that they come in order, once each.
func readAll(t *testing.T, stub grid.Stub, addr, id string) []grid.JobResult {
	t.Helper()
	var all []grid.JobResult
	for from := int64(0); ; {
		page, err := stub.JobResults(context.Background(), addr, id, from, 1000, 5000)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range page.Results {
			if r.Index != from+int64(i) {
				t.Fatalf("result %d of a page from %d has index %d", i, from, r.Index)
			}
		}
		all = append(all, page.Results...)
		if page.Next != from+int64(len(page.Results)) {
			t.Fatalf("page from %d with %d results says next %d", from, len(page.Results), page.Next)
		}
		from = page.Next
		if page.End {
			return all
		}
	}
}

func TestNodeRunsJobsOfARangeAndOfAppendedInputs(t *testing.T) {
	a := startNode(t, "a", nil, func(c *Config) { c.DataDir = t.TempDir() })
	b := startNode(t, "b", []string{a.GossipAddr()}, nil)
	waitState(t, a, "b", "alive")
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	stub := grid.Stub{Caller: pool}
	ctx := context.Background()

	id, err := stub.SubmitJob(ctx, a.RPCAddr(), grid.JobSpec{Function: "square", Range: []int64{-5, 20000, 1}, Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	results := readAll(t, stub, a.RPCAddr(), id)
	if len(results) != 20005 {
		t.Fatalf("%d results for 20005 inputs", len(results))
	}
	for i, r := range results {
		var v int64
		if err := msgpack.Unmarshal(r.Value, &v); err != nil || r.Error != nil {
			t.Fatalf("result %d: %v, %+v", i, err, r.Error)
		}
		if x := int64(i - 5); v != x*x {
			t.Fatalf("result %d is %d, want %d", i, v, x*x)
		}
	}
	info, err := stub.JobStatus(ctx, a.RPCAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != grid.JobDone || info.Done != 20005 || info.Total != 20005 || info.Coordinator != "a" || info.Owner != "test" {
		t.Errorf("status %+v", info)
	}
	if info.PerNode["a"]+info.PerNode["b"] != 20005 {
		t.Errorf("per node %v does not add up to 20005", info.PerNode)
	}

	// Inputs appended in batches, some not arrays.
	id, err = stub.SubmitJob(ctx, b.RPCAddr(), grid.JobSpec{Function: "square"})
	if err != nil {
		t.Fatal(err)
	}
	var batch []msgpack.RawMessage
	one, _ := msgpack.Marshal([]any{1})
	for i := range 3000 {
		enc, _ := msgpack.Marshal([]any{i})
		batch = append(batch, enc)
		if len(batch) == 1000 {
			if _, err := stub.AppendJob(ctx, b.RPCAddr(), id, batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	notArray, _ := msgpack.Marshal(7)
	if _, err := stub.AppendJob(ctx, b.RPCAddr(), id, []msgpack.RawMessage{notArray}); !errors.Is(err, rpc.ErrBadArguments) {
		t.Errorf("appending a value that is not an argument array: %v", err)
	}
	if n, err := stub.CloseJob(ctx, b.RPCAddr(), id); err != nil || n != 3000 {
		t.Fatalf("close: %d, %v", n, err)
	}
	if _, err := stub.AppendJob(ctx, b.RPCAddr(), id, []msgpack.RawMessage{one}); err == nil {
		t.Error("appending after close worked")
	}
	results = readAll(t, stub, b.RPCAddr(), id)
	if len(results) != 3000 {
		t.Fatalf("%d results for 3000 inputs", len(results))
	}

	// a lists its own job first, then b's if gossip has brought it yet.
	// The page past the end is an empty array on the wire, as clients in
	// other languages iterate it, not nil.
	var raw struct {
		Results msgpack.RawMessage `msgpack:"results"`
		End     bool               `msgpack:"end"`
	}
	if err := pool.Call(ctx, b.RPCAddr(), grid.MethodJobResults, &raw, id, int64(3000), 10, int64(0)); err != nil {
		t.Fatal(err)
	}
	if len(raw.Results) != 1 || raw.Results[0] != 0x90 || !raw.End {
		t.Errorf("the page past the end: results % x, end %v; want an empty array and the end", raw.Results, raw.End)
	}
	jobs, err := stub.Jobs(ctx, a.RPCAddr())
	if err != nil || len(jobs) == 0 || jobs[0].Coordinator != "a" || jobs[0].Function != "square" {
		t.Errorf("a lists %+v, %v", jobs, err)
	}
	for _, j := range jobs[1:] {
		if j.Coordinator != "b" || j.ID != id {
			t.Errorf("a lists %+v beside its own job; only b's job %s could be there", j, id)
		}
	}
	for _, bad := range []grid.JobSpec{{Function: "nope"}, {Function: "square", Range: []int64{1}}, {Function: "square", Range: []int64{0, 9, 0}}} {
		if _, err := stub.SubmitJob(ctx, a.RPCAddr(), bad); err == nil {
			t.Errorf("submitting %+v worked", bad)
		}
	}
	if _, err := stub.JobStatus(ctx, a.RPCAddr(), "no-such-job"); !errors.Is(err, rpc.ErrBadArguments) {
		t.Errorf("status of an unknown job: %v", err)
	}
}

func TestCanceledJobStopsAndKeepsItsResults(t *testing.T) {
	a := startNode(t, "a", nil, func(c *Config) {
		c.Slots = 2
	})
	if err := a.Register("slow", func(ctx context.Context, x int) (int, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return x, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	stub := grid.Stub{Caller: pool}
	ctx := context.Background()
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		// The function registered after Start reaches the view with the
		// next load update.
		if id, err = stub.SubmitJob(ctx, a.RPCAddr(), grid.JobSpec{Function: "slow", Range: []int64{0, 100000}}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	page, err := stub.JobResults(ctx, a.RPCAddr(), id, 0, 10, 10_000)
	if err != nil || len(page.Results) == 0 {
		t.Fatalf("no result within 10s: %+v, %v", page, err)
	}
	info, err := stub.CancelJob(ctx, a.RPCAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != grid.JobCanceled || info.Done >= 100000 {
		t.Fatalf("after cancel: %+v", info)
	}
	testutil.WaitFor(t, 5*time.Second, "the canceled job's calls to stop", func() bool {
		running, queued := a.exec.Load()
		return running == 0 && queued == 0
	})
	results := readAll(t, stub, a.RPCAddr(), id)
	if int64(len(results)) != info.Done {
		t.Errorf("%d results readable, status says %d done", len(results), info.Done)
	}
}

// An ended job keeps no descriptor open and no inputs on disk; its results
// stay readable.
func TestEndedJobHoldsNoFiles(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, "a", nil, func(c *Config) { c.DataDir = dir })
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	stub := grid.Stub{Caller: pool}
	ctx := context.Background()
	id, err := stub.SubmitJob(ctx, a.RPCAddr(), grid.JobSpec{Function: "square"})
	if err != nil {
		t.Fatal(err)
	}
	one, _ := msgpack.Marshal([]any{7})
	if _, err := stub.AppendJob(ctx, a.RPCAddr(), id, []msgpack.RawMessage{one, one}); err != nil {
		t.Fatal(err)
	}
	if _, err := stub.CloseJob(ctx, a.RPCAddr(), id); err != nil {
		t.Fatal(err)
	}
	if results := readAll(t, stub, a.RPCAddr(), id); len(results) != 2 {
		t.Fatalf("%d results for 2 inputs", len(results))
	}
	testutil.WaitFor(t, 5*time.Second, "the job's end to be recorded", func() bool {
		info, err := stub.JobStatus(ctx, a.RPCAddr(), id)
		return err == nil && info.Ended()
	})
	jobDir := filepath.Join(dir, "jobs", id)
	if _, err := os.Stat(filepath.Join(jobDir, "inputs.bin")); !os.IsNotExist(err) {
		t.Errorf("the ended job's inputs are still on disk: %v", err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd here")
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, jobDir) {
			t.Errorf("descriptor %s still open on %s", fd.Name(), target)
		}
	}
	// Still readable, opened as read.
	if results := readAll(t, stub, a.RPCAddr(), id); len(results) != 2 {
		t.Fatalf("%d results read after the end", len(results))
	}
}

// A node lists at most maxEndedAttached ended attached jobs, dropping the
// oldest: a client running jobs in a loop cannot grow the list for ever.
func TestEndedAttachedJobsAreBounded(t *testing.T) {
	a := startNode(t, "a", nil, nil)
	ctx := context.Background()
	start := time.Now().Add(-time.Hour).UnixMilli()
	for i := range maxEndedAttached + 5 {
		info := grid.JobInfo{Function: "square", State: grid.JobDone, StartedMs: start, EndedMs: start + int64(i)}
		if _, err := a.attachJob(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	a.jobs.expire(time.Now())
	var ended []int64
	for _, j := range a.listJobs(ctx) {
		if j.Mode == grid.JobAttached {
			ended = append(ended, j.EndedMs-start)
		}
	}
	if len(ended) != maxEndedAttached {
		t.Fatalf("%d ended attached jobs listed, want %d", len(ended), maxEndedAttached)
	}
	for _, e := range ended {
		if e < 5 {
			t.Errorf("the job that ended %dms after the first is still listed; the oldest 5 should have gone", e)
		}
	}
}

// TestAttachedReportsAreChecked: a client's report of an attached job
// cannot claim a state its client cannot be in, and what it carries is
// trimmed before the node lists it to every dashboard.
func TestAttachedReportsAreChecked(t *testing.T) {
	a := startNode(t, "a", nil, nil)
	ctx := context.Background()
	stub := grid.Stub{Caller: a.pool}
	_, err := stub.AttachJob(ctx, a.RPCAddr(), grid.JobInfo{Function: "square", State: "<b>pwned</b>"})
	if !errors.Is(err, rpc.ErrBadArguments) {
		t.Fatalf("attach in a made-up state: %v, want BadArguments", err)
	}
	id, err := stub.AttachJob(ctx, a.RPCAddr(), grid.JobInfo{Function: "square", State: grid.JobRunning})
	if err != nil {
		t.Fatal(err)
	}
	report := grid.JobInfo{ID: id, Function: "square", State: grid.JobRunning, PerNode: map[string]int64{}}
	for i := range 5000 {
		report.PerNode[strings.Repeat("n", 200)+strconv.Itoa(i)] = 1
	}
	for i := range 300 {
		report.Failures = append(report.Failures, grid.JobFailure{Index: int64(i), Kind: "Timeout", Message: strings.Repeat("m", 10_000)})
	}
	if _, err := stub.JobProgress(ctx, a.RPCAddr(), report); err != nil {
		t.Fatal(err)
	}
	if _, err := stub.JobProgress(ctx, a.RPCAddr(), grid.JobInfo{ID: id, State: "exploded"}); !errors.Is(err, rpc.ErrBadArguments) {
		t.Errorf("a report in a made-up state: %v, want BadArguments", err)
	}
	info, err := stub.JobStatus(ctx, a.RPCAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.PerNode) > 1024 || len(info.Failures) != grid.MaxJobFailures || len(info.Failures[0].Message) > 300 || info.State != grid.JobRunning {
		t.Errorf("kept %d nodes, %d failures of %d bytes, state %s", len(info.PerNode), len(info.Failures), len(info.Failures[0].Message), info.State)
	}
}
