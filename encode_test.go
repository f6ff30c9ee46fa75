package shoal

import (
	"bytes"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
)

// reference encodes an argument array as msgpack's own encoder does, with
// compact integers (as cache keys are written).
func reference(t *testing.T, args []any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.UseCompactInts(true)
	if err := enc.Encode(args); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestFastEncodingMatchesMsgpack pins down the encoder's fast paths: each
// plain value, alone or in Args, encodes byte for byte as msgpack's
// encoder writes it with compact integers, and gives the cache key that
// msgpack.Marshal's own encoding gives.
func TestFastEncodingMatchesMsgpack(t *testing.T) {
	values := []any{
		nil, true, false,
		0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64,
		int8(-5), int16(300), int32(-70000), int64(1 << 40), uint(7), uint8(200), uint16(60000), uint32(1 << 31), uint64(math.MaxUint64),
		0.0, 1.5, -2.25, math.Inf(1), float32(0.1), float32(-3),
		"", "x", strings.Repeat("a", 31), strings.Repeat("b", 32), strings.Repeat("c", 255), strings.Repeat("d", 256), strings.Repeat("e", 70000),
		"héllo",
	}
	var enc argEncoder
	for _, v := range values {
		want := reference(t, []any{v})
		var got []byte
		var err error
		switch x := v.(type) {
		case int:
			got, err = appendInput(&enc, nil, &x)
		case int64:
			got, err = appendInput(&enc, nil, &x)
		case float64:
			got, err = appendInput(&enc, nil, &x)
		case string:
			got, err = appendInput(&enc, nil, &x)
		default:
			got, err = appendInput(&enc, nil, &v)
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%T %v: got % x, %v; want % x", v, v, got, err, want)
		}
		args := Args{v, v}
		if got, err := appendInput(&enc, nil, &args); err != nil || !bytes.Equal(got, reference(t, []any{v, v})) {
			t.Errorf("Args{%T %v twice}: got % x, %v", v, v, got, err)
		}
		plain, err := msgpack.Marshal([]any{v})
		if err != nil {
			t.Fatal(err)
		}
		k1, err1 := cache.KeyFromParams("f", "1", got)
		k2, err2 := cache.KeyFromParams("f", "1", plain)
		if err1 != nil || err2 != nil || k1 != k2 {
			t.Errorf("%T %v: cache keys differ from msgpack.Marshal's (%v, %v)", v, v, err1, err2)
		}
	}
	// Anything else goes through msgpack's encoder, inside Args too.
	type point struct{ X, Y int }
	for _, v := range []any{[]int{1, 2}, map[string]int{"a": 1}, point{3, 4}, []byte("raw"), Args{1, "x"}} {
		var got []byte
		var err error
		if a, ok := v.(Args); ok {
			got, err = appendInput(&enc, nil, &a)
			if err != nil || !bytes.Equal(got, reference(t, []any(a))) {
				t.Errorf("%v: got % x, %v", v, got, err)
			}
			continue
		}
		got, err = appendInput(&enc, nil, &v)
		if err != nil || !bytes.Equal(got, reference(t, []any{v})) {
			t.Errorf("%T %v: got % x, %v", v, v, got, err)
		}
	}
	// An input msgpack cannot encode is an error.
	ch := make(chan int)
	if _, err := appendInput(&enc, nil, &ch); err == nil {
		t.Error("a channel encoded without an error")
	}
}

// TestTrivialInputsEncodeWithoutAllocating: a slice of plain inputs, or
// of Args of plain values, is encoded into a chunk's buffer without an
// allocation per item.
func TestTrivialInputsEncodeWithoutAllocating(t *testing.T) {
	buf := make([]byte, 0, 1<<20)
	check := func(name string, next func([]byte) ([]byte, error)) {
		t.Helper()
		allocs := testing.AllocsPerRun(1000, func() {
			out, err := next(buf[:0])
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			buf = out
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per item", name, allocs)
		}
	}
	ints := &sliceSource[int]{inputs: make([]int, 5000)}
	for i := range ints.inputs {
		ints.inputs[i] = i * 1000
	}
	check("int", ints.Next)
	strs := &sliceSource[string]{inputs: make([]string, 5000)}
	for i := range strs.inputs {
		strs.inputs[i] = "some text"
	}
	check("string", strs.Next)
	floats := &sliceSource[float64]{inputs: make([]float64, 5000)}
	check("float64", floats.Next)
	args := &sliceSource[Args]{inputs: make([]Args, 5000)}
	for i := range args.inputs {
		args.inputs[i] = Args{int64(i), "text", 2.5, true}
	}
	check("Args", args.Next)
}

// TestResultsDecodeWithoutAllocating: an int result decodes into its
// destination without allocating; a RawMessage takes the bytes as they
// are.
func TestResultsDecodeWithoutAllocating(t *testing.T) {
	value, _ := msgpack.Marshal(123456789)
	var dec resultDecoder
	var out int
	allocs := testing.AllocsPerRun(1000, func() {
		if err := decodeResult(&dec, value, &out); err != nil {
			t.Fatal(err)
		}
	})
	if out != 123456789 || allocs != 0 {
		t.Errorf("decoded %d with %.1f allocations", out, allocs)
	}
	var raw msgpack.RawMessage
	if err := decodeResult(&dec, value, &raw); err != nil || &raw[0] != &value[0] {
		t.Errorf("a RawMessage result was copied (%v)", err)
	}
}

// TestPlainIntsDecodeAsMsgpackDoes: the direct reading of integer results
// gives what msgpack's decoder gives, for every integer form, and leaves
// anything else to it.
func TestPlainIntsDecodeAsMsgpackDoes(t *testing.T) {
	var enc bytes.Buffer
	e := msgpack.NewEncoder(&enc)
	var values [][]byte
	for _, v := range []any{0, 5, -1, -32, -33, 127, 128, 255, 256, -128, -129, 65535, 65536, -32768, -32769,
		math.MaxUint32, math.MinInt32, math.MaxInt64, math.MinInt64, uint64(math.MaxUint64), int64(7), nil, 1.5, "x", true} {
		enc.Reset()
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		values = append(values, bytes.Clone(enc.Bytes()))
	}
	var dec resultDecoder
	for _, b := range values {
		var want int
		wantErr := msgpack.Unmarshal(b, &want)
		var got int
		err := decodeResult(&dec, b, &got)
		if got != want || (err == nil) != (wantErr == nil) {
			t.Errorf("% x: got %d, %v; msgpack gives %d, %v", b, got, err, want, wantErr)
		}
		var got64 int64
		err = decodeResult(&dec, b, &got64)
		if got64 != int64(want) || (err == nil) != (wantErr == nil) {
			t.Errorf("% x into int64: got %d, %v; msgpack gives %d, %v", b, got64, err, want, wantErr)
		}
	}
}
