package builtins

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/rpc"
)

func TestSHA256Rounds(t *testing.T) {
	// Vectors computed independently with Python's hashlib.
	cases := []struct {
		text   string
		rounds int
		want   string
	}{
		{"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abc", 2, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358"},
		{"shoal", 1000, "37da5312221302a4293b23799a9e75567e6d5f4e8e0e0c85738dc1e77d4bf98d"},
	}
	for _, tc := range cases {
		got, err := SHA256Rounds(context.Background(), tc.text, tc.rounds)
		if err != nil || got != tc.want {
			t.Errorf("sha256(%q, %d) = %s, %v; want %s", tc.text, tc.rounds, got, err, tc.want)
		}
	}
	if _, err := SHA256Rounds(context.Background(), "x", 0); !errors.Is(err, rpc.ErrBadArguments) {
		t.Errorf("0 rounds: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SHA256Rounds(ctx, "x", 1<<30); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled long hash: %v", err)
	}
}

func TestFib(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 1, 2: 1, 10: 55, 50: 12586269025, 92: 7540113804746346429} {
		if got, err := fib(n); err != nil || got != want {
			t.Errorf("fib(%d) = %d, %v; want %d", n, got, err, want)
		}
	}
	for _, n := range []int{-1, 93} {
		if _, err := fib(n); !errors.Is(err, rpc.ErrBadArguments) {
			t.Errorf("fib(%d): %v, want BadArguments", n, err)
		}
	}
}

func TestWordcount(t *testing.T) {
	got := wordcount("The cat, the HAT; the 2 cats!\n")
	want := map[string]int{"the": 3, "cat": 1, "hat": 1, "2": 1, "cats": 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wordcount = %v, want %v", got, want)
	}
	if got := wordcount("  "); len(got) != 0 {
		t.Errorf("wordcount of blanks = %v", got)
	}
}

func TestSleepHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := sleep(ctx, 60_000); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("sleep past deadline: %v", err)
	}
	if got, err := sleep(context.Background(), 1); err != nil || got != 1 {
		t.Errorf("sleep(1) = %d, %v", got, err)
	}
	if _, err := sleep(context.Background(), -1); !errors.Is(err, rpc.ErrBadArguments) {
		t.Errorf("sleep(-1): %v", err)
	}
}

func TestBuiltinsRegisterWithDocsAndCacheability(t *testing.T) {
	srv := rpc.NewServer(rpc.ServerConfig{})
	defer srv.Close()
	if err := Register(srv); err != nil {
		t.Fatal(err)
	}
	uncacheable := map[string]bool{"sleep": true, "fail": true}
	fns := srv.Functions()
	if len(fns) != 8 {
		t.Fatalf("%d built-ins registered, want 8", len(fns))
	}
	for _, fn := range fns {
		if fn.Cacheable == uncacheable[fn.Name] {
			t.Errorf("%s: cacheable = %v", fn.Name, fn.Cacheable)
		}
		if fn.Doc == "" || fn.Version == "" {
			t.Errorf("%s has no doc or version", fn.Name)
		}
	}
}

// invoke calls a built-in through an rpc.Server as a request would reach it.
func invoke(t *testing.T, srv *rpc.Server, name string, args ...any) (any, error) {
	t.Helper()
	params, err := msgpack.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return srv.Invoke(context.Background(), name, params)
}

// Results that do not fit an int are FunctionErrors, never wrapped
// numbers; arguments outside what a function can take are BadArguments.
// Errors are not reported as results, so nothing wrong reaches a cache.
func TestIntegersNeverWrap(t *testing.T) {
	var completed []string
	srv := rpc.NewServer(rpc.ServerConfig{Completed: func(fn rpc.FunctionInfo, args []any, result any) {
		completed = append(completed, fmt.Sprint(fn.Name, args, "=", result))
	}})
	defer srv.Close()
	if err := Register(srv); err != nil {
		t.Fatal(err)
	}
	overflows := []struct {
		fn   string
		args []any
	}{
		{"add", []any{math.MaxInt64, 1}},
		{"add", []any{math.MinInt64, -1}},
		{"add", []any{math.MaxInt64, math.MaxInt64}},
		{"square", []any{4294967296}},
		{"square", []any{-3037000500}},
		{"square", []any{math.MinInt64}},
	}
	for _, tc := range overflows {
		got, err := invoke(t, srv, tc.fn, tc.args...)
		if !errors.Is(err, rpc.ErrFunctionError) || !strings.Contains(err.Error(), "overflow") {
			t.Errorf("%s%v = %v, %v; want a FunctionError about overflow", tc.fn, tc.args, got, err)
		}
	}
	fits := []struct {
		fn   string
		args []any
		want int64
	}{
		{"add", []any{math.MaxInt64, 0}, math.MaxInt64},
		{"add", []any{math.MaxInt64, math.MinInt64}, -1},
		{"add", []any{math.MinInt64, 0}, math.MinInt64},
		{"add", []any{-2, 3}, 1},
		{"square", []any{3037000499}, 3037000499 * 3037000499},
		{"square", []any{-3037000499}, 3037000499 * 3037000499},
		{"square", []any{-12}, 144},
		{"square", []any{0}, 0},
	}
	for _, tc := range fits {
		got, err := invoke(t, srv, tc.fn, tc.args...)
		if err != nil || reflect.ValueOf(got).Int() != tc.want {
			t.Errorf("%s%v = %v, %v; want %d", tc.fn, tc.args, got, err, tc.want)
		}
	}
	if len(completed) != len(fits) {
		t.Errorf("results reported for caching: %q; want only the %d that fit", completed, len(fits))
	}

	start := time.Now()
	for _, ms := range []any{10_000_000_000_000, math.MaxInt64, math.MaxInt64/1_000_000 + 1} {
		if got, err := invoke(t, srv, "sleep", ms); !errors.Is(err, rpc.ErrBadArguments) || !strings.Contains(err.Error(), "ms must be at most") {
			t.Errorf("sleep(%v) = %v, %v; want BadArguments saying how long it may be", ms, got, err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusing the sleeps took %v", d)
	}
	if got, err := invoke(t, srv, "sleep", 1); err != nil || reflect.ValueOf(got).Int() != 1 {
		t.Errorf("sleep(1) = %v, %v", got, err)
	}
}
