package main

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// Integers never wrap on the way from the command line to a result: a
// result that overflows is a FunctionError, an argument out of range is
// BadArguments, and neither is cached.
func TestCallIntegersOutOfRange(t *testing.T) {
	mc := testutil.StartMemcached(t)
	node := startGridNode(t, "a", "", "--memcached", mc.Addr)
	cases := []struct {
		args   []string
		stderr string
	}{
		{[]string{"add", "9223372036854775807", "1"}, "shoal: FunctionError: add: 9223372036854775807 + 1 overflows int"},
		{[]string{"add", "9223372036854775807", "1"}, "shoal: FunctionError: add: 9223372036854775807 + 1 overflows int"}, // and again: nothing was cached
		{[]string{"add", "-9223372036854775808", "-1"}, "shoal: FunctionError: add: -9223372036854775808 + -1 overflows int"},
		{[]string{"square", "4294967296"}, "shoal: FunctionError: square: 4294967296 * 4294967296 overflows int"},
		{[]string{"sleep", "10000000000000"}, "shoal: BadArguments: sleep: ms must be at most 9223372036854"},
		{[]string{"add", "9223372036854775808", "0"}, "shoal: BadArguments: add(a int, b int) int: argument 1: want int, got 9223372036854775808, which is out of range"},
		{[]string{"fib", "-18446744073709551615"}, "argument 1 (-18446744073709551615): integer out of the range of 64 bits"},
		{[]string{"echo", "99999999999999999999"}, "argument 1 (99999999999999999999): integer out of the range of 64 bits; write 99999999999999999999.0 to send a float"},
		{[]string{"add", "1e30", "0"}, "shoal: BadArguments: add(a int, b int) int: argument 1: want int, got float"},
	}
	for _, tc := range cases {
		stdout, stderr, code := runShoal(t, nil, append([]string{"call", "--seed", node.RPC}, tc.args...)...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("shoal call %s: exit %d, stdout %q, stderr %q; want exit 1 and %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.stderr)
		}
	}

	// A result that fits is cached as usual; once it is there, the failed
	// calls before it have had their chance to be cached too.
	if stdout, stderr, code := runShoal(t, nil, "call", "--seed", node.RPC, "add", "9223372036854775807", "0"); code != 0 || stdout != "9223372036854775807\n" {
		t.Fatalf("add max 0: exit %d, %q %q", code, stdout, stderr)
	}
	c, err := cache.NewMemcached(cache.MemcachedConfig{Servers: []string{mc.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := func(fn string, args ...any) string {
		k, err := cache.Key(fn, "1", args...)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	fits := key("add", math.MaxInt64, 0)
	testutil.WaitFor(t, processTimeout, "add(max, 0) in memcached", func() bool {
		return len(c.GetMulti(context.Background(), []string{fits})) == 1
	})
	wrong := []string{key("add", math.MaxInt64, 1), key("add", math.MinInt64, -1), key("square", 4294967296)}
	if got := c.GetMulti(context.Background(), wrong); len(got) != 0 {
		t.Fatalf("%d overflowed results were cached", len(got))
	}
}

func TestParseJSONArgRefusesWideIntegers(t *testing.T) {
	for _, raw := range []string{"18446744073709551616", "-9223372036854775809", "[1, 99999999999999999999]", `{"k": -99999999999999999999}`} {
		if v, err := parseJSONArg(raw); err == nil || !strings.Contains(err.Error(), "integer out of the range of 64 bits") {
			t.Errorf("parseJSONArg(%s) = %#v, %v; want it refused", raw, v, err)
		}
	}
	if v, err := parseJSONArg("1e400"); err == nil {
		t.Errorf("parseJSONArg(1e400) = %#v; want it refused", v)
	}
	// Written as floats, the same numbers are floats.
	for raw, want := range map[string]float64{"18446744073709551616.0": 1 << 64, "1e20": 1e20, "-9223372036854775809e0": -(1 << 63)} {
		if v, err := parseJSONArg(raw); err != nil || v != want {
			t.Errorf("parseJSONArg(%s) = %#v, %v; want %v", raw, v, err, want)
		}
	}
}
