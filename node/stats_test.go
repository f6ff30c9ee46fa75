package node

import (
	"context"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// TestStatsCountFunctionsCallsAndItems checks shoal.stats: plain calls
// and a map chunk's items are counted per function, errors apart, with
// their times; shoal.* methods and unknown names are not counted.
func TestStatsCountFunctionsCallsAndItems(t *testing.T) {
	n := startNode(t, "a", nil, nil)
	if err := n.Register("nap", func(ms int) (int, error) {
		if ms < 0 {
			return 0, rpc.Errorf(rpc.KindBadArguments, "negative")
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ms, nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl, err := rpc.Dial(ctx, n.RPCAddr(), rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, ms := range []int{2, 2, -1} {
		cl.Call(ctx, "nap", nil, ms)
	}
	cl.Call(ctx, "no-such-function", nil)
	var items grid.Values
	for _, ms := range []int{20, 20, 20, -1} {
		b, _ := msgpack.Marshal([]any{ms})
		items.Append(b)
	}
	var reply grid.MapReply
	if err := cl.Call(ctx, grid.MethodMap, &reply, grid.MapRequest{Function: "nap", Items: items}); err != nil {
		t.Fatal(err)
	}

	st, err := grid.Stub{Caller: n.pool}.Stats(ctx, n.RPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "a" || st.Slots != n.Executor().Slots() || st.StartedMs == 0 || st.NowMs < st.StartedMs {
		t.Errorf("stats header: %+v", st)
	}
	var nap *grid.FunctionStats
	for i, f := range st.Functions {
		if f.Name == "nap" {
			nap = &st.Functions[i]
		}
		if f.Name != "nap" {
			t.Errorf("counted %q, which is no registered function that was called", f.Name)
		}
	}
	if nap == nil {
		t.Fatalf("nap not counted: %+v", st.Functions)
	}
	if nap.Calls != 7 || nap.Errors != 2 {
		t.Errorf("nap: %d calls, %d errors; want 7 and 2", nap.Calls, nap.Errors)
	}
	if got := nap.Latency.Total(); got != 7 {
		t.Errorf("nap's histogram holds %d times, want 7", got)
	}
	// Three of the seven took 20ms or more: the 90th percentile is there,
	// the median below (2ms calls and the instant errors).
	if p90 := nap.Latency.Quantile(0.9); p90 < 15*time.Millisecond || p90 > time.Second {
		t.Errorf("p90 %v, want about 20ms", p90)
	}
	if p50 := nap.Latency.Quantile(0.5); p50 >= 15*time.Millisecond {
		t.Errorf("p50 %v, want under 15ms", p50)
	}
	if st.Cache.Kind != grid.CacheGrid || len(st.Cache.Breakers) != 1 || st.Cache.Breakers[0].State != "closed" {
		t.Errorf("cache: %+v", st.Cache)
	}
}
