package bench

import (
	"maps"
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentileByNearestRank(t *testing.T) {
	var ten []time.Duration
	for i := 1; i <= 10; i++ {
		ten = append(ten, time.Duration(i)*time.Microsecond)
	}
	cases := []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{nil, 50, 0},
		{[]time.Duration{7}, 1, 7},
		{[]time.Duration{7}, 100, 7},
		{ten, 10, 1 * time.Microsecond},
		{ten, 50, 5 * time.Microsecond},
		{ten, 51, 6 * time.Microsecond},
		{ten, 90, 9 * time.Microsecond},
		{ten, 99, 10 * time.Microsecond},
		{ten, 100, 10 * time.Microsecond},
		{ten, 0.001, 1 * time.Microsecond},
	}
	for _, tc := range cases {
		if got := Percentile(tc.samples, tc.p); got != tc.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tc.samples, tc.p, got, tc.want)
		}
	}
}

func TestPercentileOfThousandSamples(t *testing.T) {
	var s []time.Duration
	for i := 1000; i >= 1; i-- { // out of order: Summarize sorts
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	got := Summarize(s)
	want := Latency{P50: 500, P90: 900, P99: 990, Max: 1000}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if !slices.IsSorted(s) {
		t.Error("Summarize left the samples unsorted")
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range cases {
		in := slices.Clone(tc.xs)
		if got := Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		if !slices.Equal(in, tc.xs) {
			t.Errorf("Median changed its input to %v", tc.xs)
		}
	}
}

func TestRatioAndRate(t *testing.T) {
	if got := Ratio(259_500, 80_900); math.Abs(got-3.2076) > 1e-3 {
		t.Errorf("Ratio = %v", got)
	}
	for _, pair := range [][2]float64{{0, 5}, {5, 0}, {-1, 5}} {
		if got := Ratio(pair[0], pair[1]); got != 0 {
			t.Errorf("Ratio(%v, %v) = %v, want 0 for a missing figure", pair[0], pair[1], got)
		}
	}
	if got := PerSecond(300_000, 750*time.Millisecond); got != 400_000 {
		t.Errorf("PerSecond = %v", got)
	}
	if got := PerSecond(10, 0); got != 0 {
		t.Errorf("PerSecond over no time = %v", got)
	}
}

func TestFormatting(t *testing.T) {
	for x, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.8: "1,234,568", -45000: "-45,000"} {
		if got := thousands(x); got != want {
			t.Errorf("thousands(%v) = %q, want %q", x, got, want)
		}
	}
	for us, want := range map[float64]string{27.31: "27.3µs", 1160: "1.16ms", 2_500_000: "2.5s"} {
		if got := micro(us); got != want {
			t.Errorf("micro(%v) = %q, want %q", us, got, want)
		}
	}
	if got := times(0); got != "-" {
		t.Errorf("times(0) = %q", got)
	}
	if got := formatFigure(2.5, "x"); got != "2.50x" {
		t.Errorf("formatFigure = %q", got)
	}
}

func TestTargets(t *testing.T) {
	r := &Report{
		RPC: &RPCReport{SequentialVsEcho: 2.1, Results: []RPCResult{
			{System: "shoal", Callers: 64, CallsPerSecond: 260_000}, {System: "net/rpc", Callers: 64, CallsPerSecond: 100_000}}},
		Map:   &MapReport{Trivial: []MapResult{{Nodes: 1, ItemsPerSecond: 500_000}, {Nodes: 3, ItemsPerSecond: 299_999}}, IdleMiB: 15},
		Cache: &CacheReport{Backends: []CacheResult{{Name: "memory", WarmItemsPerSecond: 150_000}}},
	}
	met := make(map[string]bool)
	for _, tg := range r.targets() {
		met[tg.What] = tg.Met
	}
	want := map[string]bool{
		"one caller: Shoal call time / raw TCP echo time": false,
		"64 callers: Shoal calls/s / net/rpc calls/s":     true,
		"trivial map items/s over 3 nodes":                false,
		"idle node, resident memory":                      true,
		"warm (cached) items/s, memory":                   true,
	}
	if !maps.Equal(met, want) {
		t.Errorf("targets met: %v\nwant %v", met, want)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
	if err := QuickConfig().Validate(); err != nil {
		t.Errorf("quick: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.Map.Items = 0 },
		func(c *Config) { c.RPC.Callers = []int{1, 0} },
		func(c *Config) { c.Map.Nodes = []int{1, 2, 2} },
		func(c *Config) { c.RPC.Duration = time.Microsecond },
	}
	for i, spoil := range bad {
		c := DefaultConfig()
		spoil(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: no error for %+v", i, c)
		}
	}
}
