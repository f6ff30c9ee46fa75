package grid_test

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
)

// TestValueLenAgreesWithMsgpack measures values of every kind msgpack
// writes, alone and followed by other bytes, and refuses each one cut
// short.
func TestValueLenAgreesWithMsgpack(t *testing.T) {
	values := []any{
		nil, true, false, 0, 1, 127, 128, -1, -32, -33, 255, 256, 65535, 65536, math.MaxInt64, math.MinInt64,
		uint64(math.MaxUint64), float32(1.5), 2.5, "", "x", string(make([]byte, 31)), string(make([]byte, 32)),
		string(make([]byte, 300)), string(make([]byte, 70000)), []byte{}, []byte{1, 2}, make([]byte, 300), make([]byte, 70000),
		[]int{}, []int{1, 2, 3}, make([]int, 16), make([]int, 70000), map[string]int{}, map[string]int{"a": 1},
		map[string]any{"k": []any{map[string]any{"x": nil}, 1.5}}, time.Unix(1, 2), time.Unix(1<<40, 5),
		[]any{[]any{[]any{[]any{}}}},
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := grid.ValueLen(b); err != nil || n != len(b) {
			t.Errorf("%T %.20v: ValueLen %d, %v; want %d", v, v, n, err, len(b))
		}
		if n, err := grid.ValueLen(append(b, 0xc0, 0x01)); err != nil || n != len(b) {
			t.Errorf("%T %.20v followed by more: ValueLen %d, %v; want %d", v, v, n, err, len(b))
		}
		for cut := 0; cut < len(b); cut += 1 + len(b)/50 {
			if n, err := grid.ValueLen(b[:cut]); err == nil {
				t.Errorf("%T %.20v cut to %d of %d bytes: ValueLen %d, no error", v, v, cut, len(b), n)
			}
		}
	}
	// A count far beyond the bytes left is refused at once.
	if _, err := grid.ValueLen([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x90}); err == nil {
		t.Error("an array claiming 4 billion items in 6 bytes was measured")
	}
	if _, err := grid.ValueLen([]byte{0xc1}); err == nil {
		t.Error("the reserved code 0xc1 was measured")
	}
}

func FuzzValueLen(f *testing.F) {
	for _, v := range []any{nil, []any{1, "a", map[string]any{"b": 2.5}}, make([]byte, 40)} {
		b, _ := msgpack.Marshal(v)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := grid.ValueLen(b)
		dec := msgpack.NewDecoder(bytes.NewReader(b))
		raw, skipErr := dec.DecodeRaw()
		if err == nil && (skipErr != nil || len(raw) != n) {
			t.Fatalf("ValueLen %d, msgpack read %d bytes, %v", n, len(raw), skipErr)
		}
	})
}

// TestValuesRoundTrip sends values through msgpack and splits them again.
func TestValuesRoundTrip(t *testing.T) {
	var v grid.Values
	for i := range 1000 {
		b, _ := msgpack.Marshal([]any{i, "s"})
		v.Append(b)
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var got grid.Values
	if err := msgpack.Unmarshal(b, &got); err != nil || got.Count != 1000 || !bytes.Equal(got.Raw, v.Raw) {
		t.Fatalf("decoded %d values, %v", got.Count, err)
	}
	parts, err := got.Split(nil)
	if err != nil || len(parts) != 1000 {
		t.Fatalf("split %d, %v", len(parts), err)
	}
	if want, _ := msgpack.Marshal([]any{999, "s"}); !bytes.Equal(parts[999], want) {
		t.Fatalf("the last value split as % x, want % x", parts[999], want)
	}
	if _, err := (grid.Values{Count: 3, Raw: v.Raw[:10]}).Split(nil); err == nil {
		t.Error("a Values claiming more values than it holds was split")
	}
}
