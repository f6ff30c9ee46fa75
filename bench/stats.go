package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarizes call latencies, in microseconds.
type Latency struct {
	P50 float64 `json:"p50_us"`
	P90 float64 `json:"p90_us"`
	P99 float64 `json:"p99_us"`
	Max float64 `json:"max_us"`
}

// Summarize sorts samples and returns their percentiles.
func Summarize(samples []time.Duration) Latency {
	slices.Sort(samples)
	return Latency{
		P50: micros(Percentile(samples, 50)),
		P90: micros(Percentile(samples, 90)),
		P99: micros(Percentile(samples, 99)),
		Max: micros(Percentile(samples, 100)),
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted samples
// by nearest rank: the smallest sample that at least p percent of samples
// are at or below. With no samples it returns 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Median returns the middle of xs, the mean of the two middle values when
// there is an even number, or 0 when there are none. xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ratio returns a/b, or 0 when either figure is missing (not positive), so
// a scenario that did not run never shows as an infinite speed-up.
func Ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// PerSecond returns how many of n happen per second over d, or 0 for no
// time.
func PerSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func seconds(xs []time.Duration) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x.Seconds()
	}
	return out
}
