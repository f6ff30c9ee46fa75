package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// An integer argument that does not fit its parameter's type is refused
// as BadArguments naming the function, the argument and the type, at any
// depth of slices, arrays, maps and pointers, where msgpack alone would
// wrap it silently.
func TestDecodeArgsRefusesIntegersOutOfRange(t *testing.T) {
	f, err := newFunction("f", func(a int8, b uint16, c int, d uint, xs []int32, m map[string]uint8, p *int16, arr [2]int64) {},
		[]FuncOption{WithArgNames("a", "b", "c", "d", "xs", "m", "p", "arr")})
	if err != nil {
		t.Fatal(err)
	}
	good := []any{int8(0), uint16(0), 0, uint(0), []int32{}, map[string]uint8{}, nil, [2]int64{}}
	with := func(i int, v any) []any {
		params := append([]any(nil), good...)
		params[i] = v
		return params
	}
	bad := []struct {
		params []any
		msg    string
	}{
		{with(0, 300), "argument 1: want int8, got 300, which is out of range"},
		{with(0, -129), "argument 1: want int8, got -129, which is out of range"},
		{with(1, -1), "argument 2: want uint16, got -1, which is out of range"},
		{with(1, 70000), "argument 2: want uint16, got 70000, which is out of range"},
		{with(2, uint64(math.MaxInt64)+1), "argument 3: want int, got 9223372036854775808, which is out of range"},
		{with(2, uint64(math.MaxUint64)), "argument 3: want int, got 18446744073709551615, which is out of range"},
		{with(3, -1), "argument 4: want uint, got -1, which is out of range"},
		{with(3, math.MinInt64), "argument 4: want uint, got -9223372036854775808, which is out of range"},
		{with(4, []int64{1, 1 << 40}), "argument 5: want []int32, got 1099511627776 at [1], which is out of range for int32"},
		{with(5, map[string]int{"k": 256}), "argument 6: want map[string]uint8, got 256 at [k], which is out of range for uint8"},
		{with(6, 40000), "argument 7: want *int16, got 40000, which is out of range for int16"},
		{with(7, []any{0, uint64(1 << 63)}), "argument 8: want [2]int64, got 9223372036854775808 at [1], which is out of range for int64"},
		{with(2, 1.5), "argument 3: want int, got float"},
		{with(2, 1e30), "argument 3: want int, got float"},
	}
	for _, tc := range bad {
		_, e := decodeParams(t, f, tc.params...)
		if e == nil || e.Kind != KindBadArguments || !strings.Contains(e.Message, "f(a int8, b uint16, c int") ||
			!strings.Contains(e.Message, tc.msg) {
			t.Errorf("params %v: got %v, want BadArguments containing %q", tc.params, e, tc.msg)
		}
	}

	// The extremes that fit arrive exactly.
	edge := []any{int8(math.MinInt8), uint16(math.MaxUint16), math.MinInt64, uint64(math.MaxUint64),
		[]int64{math.MinInt32, math.MaxInt32}, map[string]int{"k": 255}, math.MaxInt16, [2]any{math.MaxInt64, nil}}
	args, e := decodeParams(t, f, edge...)
	if e != nil {
		t.Fatal(e)
	}
	seven := int16(math.MaxInt16)
	want := []any{int8(math.MinInt8), uint16(math.MaxUint16), math.MinInt64, uint(math.MaxUint64),
		[]int32{math.MinInt32, math.MaxInt32}, map[string]uint8{"k": 255}, &seven, [2]int64{math.MaxInt64, 0}}
	for i, a := range args {
		if !reflect.DeepEqual(a.Interface(), want[i]) {
			t.Errorf("argument %d decoded as %#v, want %#v", i+1, a.Interface(), want[i])
		}
	}
}

func TestVariadicIntegersOutOfRange(t *testing.T) {
	f, err := newFunction("sum", func(base int8, xs ...int8) int { return 0 }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, e := decodeParams(t, f, 1, 2, 200); e == nil || e.Kind != KindBadArguments ||
		!strings.Contains(e.Message, "sum(int8, ...int8) int: argument 3: want int8, got 200, which is out of range") {
		t.Errorf("got %v", e)
	}
	if args, e := decodeParams(t, f, 1, -128, 127); e != nil || args[1].Int() != -128 || args[2].Int() != 127 {
		t.Errorf("in range: %v, %v", args, e)
	}
}

// Over a real connection: the call is refused, the function never runs,
// and the connection keeps serving.
func TestOutOfRangeArgumentOverTheWire(t *testing.T) {
	s, addr := startServer(t, ServerConfig{})
	ran := 0
	if err := s.Register("half", func(x int32) int32 { ran++; return x / 2 }, WithArgNames("x")); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()
	var sum int
	err := c.Call(ctx, "add", &sum, uint64(math.MaxInt64)+1, 0)
	if !errors.Is(err, ErrBadArguments) || !strings.Contains(err.Error(), "add(a int, b int) int: argument 1: want int, got 9223372036854775808") {
		t.Fatalf("add(2^63, 0) = %d, %v; want BadArguments", sum, err)
	}
	var half int32
	err = c.Call(ctx, "half", &half, int64(math.MaxInt32)+1)
	if !errors.Is(err, ErrBadArguments) || !strings.Contains(err.Error(), "half(x int32) int32: argument 1: want int32, got 2147483648") {
		t.Fatalf("half(2^31) = %d, %v; want BadArguments", half, err)
	}
	if ran != 0 {
		t.Fatalf("the function ran %d times on a refused argument", ran)
	}
	if err := c.Call(ctx, "add", &sum, 20, 22); err != nil || sum != 42 {
		t.Fatalf("the connection no longer serves: add(20, 22) = %d, %v", sum, err)
	}
	if err := c.Call(ctx, "half", &half, math.MaxInt32); err != nil || half != math.MaxInt32/2 {
		t.Fatalf("half(MaxInt32) = %d, %v", half, err)
	}
}

// FuzzCheckedDecoding holds decodeChecked to msgpack's own decoding: on
// any input it decodes what msgpack decodes, to the same value, and fails
// only where msgpack fails or an integer is out of range.
func FuzzCheckedDecoding(f *testing.F) {
	types := []reflect.Type{
		reflect.TypeFor[int8](), reflect.TypeFor[uint16](), reflect.TypeFor[int](), reflect.TypeFor[uint64](),
		reflect.TypeFor[[]int32](), reflect.TypeFor[map[string]uint8](), reflect.TypeFor[*int16](),
		reflect.TypeFor[[2]int64](), reflect.TypeFor[map[int8][]uint](), reflect.TypeFor[[][]int8](),
	}
	for _, v := range []any{0, -1, 300, uint64(1 << 63), []any{1, -1, 1 << 40}, map[string]any{"k": 256, "j": 1},
		map[int]any{1: []int{1, 2}, -200: nil}, [][]int{{1}, {200}}, nil, "x", 1.5, []any{nil, "x"}} {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		// Only what the server's reader accepts reaches decodeArgs: one
		// value, within the bounds, no length claimed beyond its bytes
		// (msgpack would allocate what an array header claims).
		input, err := newMessageReader(bufio.NewReader(bytes.NewReader(input)), fuzzMaxSize, 8).next()
		if err != nil {
			return
		}
		for _, typ := range types {
			plain := reflect.New(typ).Elem()
			plainErr := decodeValue(msgpack.NewDecoder(bytes.NewReader(input)), plain, false)
			checked := reflect.New(typ).Elem()
			checkedErr := decodeChecked(msgpack.NewDecoder(bytes.NewReader(input)), checked)
			var re *rangeError
			switch {
			case checkedErr == nil && plainErr != nil:
				t.Fatalf("%s from % x: checked decoding accepted what msgpack refuses (%v)", typ, input, plainErr)
			case checkedErr == nil && !reflect.DeepEqual(plain.Interface(), checked.Interface()):
				t.Fatalf("%s from % x: checked %#v, msgpack %#v", typ, input, checked.Interface(), plain.Interface())
			case checkedErr != nil && plainErr == nil && !errors.As(checkedErr, &re):
				t.Fatalf("%s from % x: checked decoding failed (%v) where msgpack did not", typ, input, checkedErr)
			}
		}
	})
}

// BenchmarkDecodeArgs compares decoding with the range checks against
// msgpack's own decoding, for two ints and for a slice of 1000.
func BenchmarkDecodeArgs(b *testing.B) {
	cases := []struct {
		name   string
		fn     any
		params []any
	}{
		{"add", func(a, b int) int { return a + b }, []any{123456, -7}},
		{"slice", func(xs []int32) int { return len(xs) }, []any{make([]int32, 1000)}},
	}
	for _, tc := range cases {
		for _, checked := range []bool{false, true} {
			f, err := newFunction(tc.name, tc.fn, nil)
			if err != nil {
				b.Fatal(err)
			}
			f.checked = []bool{checked && f.checked[0]}
			if len(tc.params) > 1 {
				f.checked = append(f.checked, checked)
			}
			params, err := msgpack.Marshal(tc.params)
			if err != nil {
				b.Fatal(err)
			}
			name := tc.name + "/msgpack"
			if checked {
				name = tc.name + "/checked"
			}
			b.Run(name, func(b *testing.B) {
				d := newDecoder()
				for b.Loop() {
					d.reset(params)
					n, _ := d.paramsLen()
					if _, e := f.decodeArgs(d.dec, n); e != nil {
						b.Fatal(e)
					}
				}
			})
		}
	}
}
