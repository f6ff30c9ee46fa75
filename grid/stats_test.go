package grid

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/rpc"
)

func TestBucketIndexBoundsTheDuration(t *testing.T) {
	prev := -1
	for _, d := range []time.Duration{0, 1, 2, 3, 4, 5, 7, 8, 100, 999, time.Microsecond, 1234567, time.Second, time.Hour, 1 << 62} {
		i := BucketIndex(d)
		if i < prev {
			t.Errorf("BucketIndex(%v) = %d, below the index of a shorter duration (%d)", d, i, prev)
		}
		prev = i
		lo, hi := bucketBounds(i)
		if i < HistogramBuckets-1 && (float64(max(d, 1)) < lo || float64(max(d, 1)) >= hi) {
			t.Errorf("BucketIndex(%v) = %d, whose bounds [%v, %v) leave it out", d, i, lo, hi)
		}
	}
}

func TestQuantileIsWithinABucket(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var all []time.Duration
	for range 10000 {
		d := time.Duration(r.ExpFloat64() * float64(5*time.Millisecond))
		all = append(all, d)
		h.Add(BucketIndex(d), 1)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := all[int(q*float64(len(all)))]
		got := h.Quantile(q)
		if ratio := float64(got) / float64(exact); ratio < 0.85 || ratio > 1.15 {
			t.Errorf("quantile %v: %v, exact %v", q, got, exact)
		}
	}
	if (Histogram{}).Quantile(0.5) != 0 {
		t.Error("an empty histogram has a quantile")
	}
}

func TestHistogramSubAndMerge(t *testing.T) {
	var before, after Histogram
	before.Add(3, 2)
	after.Add(3, 5)
	after.Add(10, 1)
	d := after.Sub(before)
	if d.Total() != 4 || d.Counts[3] != 3 || d.Counts[10] != 1 {
		t.Errorf("Sub: %v", d.Counts)
	}
	// A counter that went back (its node restarted) counts whole.
	if got := before.Sub(after); got.Total() != before.Total() {
		t.Errorf("Sub of a restarted counter: %v", got.Counts)
	}
	d.Merge(before)
	if d.Total() != 6 {
		t.Errorf("Merge: %v", d.Counts)
	}
}

func TestJobInfoCount(t *testing.T) {
	var j JobInfo
	j.Count(0, "a", false, nil)
	j.Count(1, "", true, nil)
	for i := range MaxJobFailures + 5 {
		j.Count(int64(2+i), "b", false, rpc.Errorf(rpc.KindTimeout, "took too long"))
	}
	if j.Done != MaxJobFailures+7 || j.Cached != 1 || j.Failed != MaxJobFailures+5 || j.PerNode["a"] != 1 || j.PerNode["b"] != 0 {
		t.Errorf("counts: %+v", j)
	}
	if j.FailedKinds["Timeout"] != MaxJobFailures+5 || len(j.Failures) != MaxJobFailures || j.Failures[0].Index != 2 {
		t.Errorf("failures: kinds %v, %d listed, first %+v", j.FailedKinds, len(j.Failures), j.Failures[0])
	}
	s := j.Summary()
	s.FailedKinds["Timeout"] = 0
	if s.Failures != nil || j.FailedKinds["Timeout"] == 0 {
		t.Error("Summary keeps the failures, or shares its maps with the original")
	}
}

func TestJobInfoBoundTrimsAClientsReport(t *testing.T) {
	huge := strings.Repeat("x", 100_000)
	j := JobInfo{Function: huge, Owner: huge, Error: huge, State: huge, PerNode: map[string]int64{}, FailedKinds: map[string]int64{}}
	for i := range 5000 {
		j.PerNode[fmt.Sprint(huge[:300], i)] = int64(i)
		j.FailedKinds[fmt.Sprint("kind", i)] = int64(i)
		j.Failures = append(j.Failures, JobFailure{Index: int64(i), Kind: huge, Message: huge})
	}
	j.Bound()
	if len(j.Function) > 256 || len(j.Owner) > 256 || len(j.Error) > 1024 || len(j.State) > 64 {
		t.Errorf("names not trimmed: %d %d %d %d bytes", len(j.Function), len(j.Owner), len(j.Error), len(j.State))
	}
	if len(j.PerNode) > 1024 || len(j.FailedKinds) > 32 || len(j.Failures) != MaxJobFailures {
		t.Errorf("%d nodes, %d kinds, %d failures kept", len(j.PerNode), len(j.FailedKinds), len(j.Failures))
	}
	if j.FailedKinds["kind4999"] != 4999 {
		t.Errorf("the largest kinds were not the ones kept: %v", j.FailedKinds)
	}
	size := 0
	for k := range j.PerNode {
		size += len(k)
	}
	for _, f := range j.Failures {
		size += len(f.Kind) + len(f.Message)
	}
	if size > 300_000 {
		t.Errorf("the trimmed report still holds %d bytes of names and messages", size)
	}
}
