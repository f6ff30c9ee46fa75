package cache

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// keyArgs are argument lists whose keys the fast path of KeyFromParams
// must give exactly as Key does: integers at every boundary of msgpack's
// forms, strings and binaries at every length boundary, floats, nested
// arrays, and maps (which take the slow path).
func keyArgs() [][]any {
	ints := []any{0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64,
		uint64(math.MaxUint64), int8(-5), uint16(300), int32(-70000)}
	var out [][]any
	for _, n := range ints {
		out = append(out, []any{n}, []any{"x", n, []any{n, n}})
	}
	for _, l := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		out = append(out, []any{strings.Repeat("s", l)}, []any{bytes.Repeat([]byte{7}, l)})
	}
	long := make([]any, 70000)
	for i := range long {
		long[i] = i % 3
	}
	out = append(out,
		[]any{}, []any{nil, true, false}, []any{float32(1.5), 2.5, math.Inf(-1)},
		[]any{make([]any, 15), make([]any, 16)}, []any{long},
		[]any{map[string]any{"b": 1, "a": []any{1, 2}}}, []any{[]any{map[string]int{"z": 1, "y": 2}}},
	)
	return out
}

func TestKeyFromParamsAgreesWithKey(t *testing.T) {
	fast := 0
	for _, args := range keyArgs() {
		for _, compact := range []bool{true, false} {
			var buf bytes.Buffer
			enc := msgpack.NewEncoder(&buf)
			enc.UseCompactInts(compact)
			if err := enc.Encode(args); err != nil {
				t.Fatal(err)
			}
			params := buf.Bytes()
			want, err := Key("f.n", "v2", args...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := KeyFromParams("f.n", "v2", params)
			if err != nil || got != want {
				t.Fatalf("args %.60v (compact %v): KeyFromParams %q %v, Key %q", args, compact, got, err, want)
			}
			if end, ok := canonicalValue(params, 0, 0); ok && end == len(params) {
				fast++
			}
		}
	}
	if fast < 40 {
		t.Fatalf("only %d argument lists took the fast path", fast)
	}
}

// FuzzKeyFromParams checks that whatever bytes the fast path accepts, the
// slow path accepts and gives the same key.
func FuzzKeyFromParams(f *testing.F) {
	for _, args := range keyArgs()[:60] {
		b, _ := msgpack.Marshal(args)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, params []byte) {
		end, ok := canonicalValue(params, 0, 0)
		if !ok || end != len(params) || len(params) == 0 || !isArray(params[0]) {
			return
		}
		fast, err := KeyFromParams("f", "", params)
		if err != nil {
			t.Fatalf("fast path failed: %v", err)
		}
		slow, err := keyFromDecoded("f", "", params)
		if err != nil || slow != fast {
			t.Fatalf("params %x: fast %q, slow %q %v", params, fast, slow, err)
		}
	})
}

func BenchmarkKeyFromParams(b *testing.B) {
	for _, tc := range []struct {
		name string
		args []any
	}{{"int", []any{123456}}, {"two-strings", []any{"item-12345", "some longer text of fifty bytes or so, as inputs go"}}, {"map", []any{map[string]int{"a": 1}}}} {
		params, _ := msgpack.Marshal(tc.args)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := KeyFromParams("square", "", params); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
