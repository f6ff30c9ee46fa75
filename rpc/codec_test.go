package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reader(b []byte, maxSize, maxDepth int) *messageReader {
	return newMessageReader(bufio.NewReader(bytes.NewReader(b)), maxSize, maxDepth)
}

func TestMessageReaderSplitsConcatenatedValues(t *testing.T) {
	values := []any{
		nil, true, false, 0, -1, 127, -32, 128, -33, 1 << 15, -(1 << 15), 1 << 31, int64(-1) << 40,
		uint64(math.MaxUint64), float32(1.5), 2.25, "", "short", strings.Repeat("s", 40),
		strings.Repeat("m", 300), strings.Repeat("l", 70000), []byte{}, []byte("bin"),
		bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 70000),
		[]any{}, []any{1, "two", []any{3.0}}, make([]int, 20), make([]int, 70000),
		map[string]any{}, map[string]any{"a": 1, "b": []any{map[string]any{"c": nil}}},
		time.Unix(1700000000, 5).UTC(), // ext -1
	}
	var stream bytes.Buffer
	var want [][]byte
	for _, v := range values {
		b := marshal(t, v)
		want = append(want, b)
		stream.Write(b)
	}
	// Extensions of every fixed and variable size.
	for _, ext := range [][]byte{
		{0xd4, 1, 0}, {0xd5, 1, 0, 0}, {0xd6, 1, 0, 0, 0, 0},
		append([]byte{0xd7, 1}, make([]byte, 8)...), append([]byte{0xd8, 1}, make([]byte, 16)...),
		append([]byte{0xc7, 3, 1}, make([]byte, 3)...),
		append([]byte{0xc8, 1, 44, 1}, make([]byte, 300)...),
		append([]byte{0xc9, 0, 1, 17, 112, 1}, make([]byte, 70000)...),
	} {
		want = append(want, ext)
		stream.Write(ext)
	}

	mr := reader(stream.Bytes(), 0, 0)
	for i, w := range want {
		got, err := mr.next()
		if err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("value %d: read % x, want % x", i, head(got), head(w))
		}
	}
	if _, err := mr.next(); err != io.EOF {
		t.Fatalf("at end of stream got %v, want io.EOF", err)
	}
}

// stutterReader hands out its bytes one at a time, with a passed read
// deadline's error before every other one, as a connection does whose
// reader a client interrupts.
type stutterReader struct {
	b     []byte
	stall bool
}

func (r *stutterReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.stall = !r.stall; r.stall {
		return 0, os.ErrDeadlineExceeded
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

// TestMessageReaderResumesAfterATimeout reads messages whose every byte
// comes after a timeout: each call that times out must lose nothing, and
// the next one carry on, so that a client can interrupt its reader
// anywhere in a message.
func TestMessageReaderResumesAfterATimeout(t *testing.T) {
	want := [][]byte{
		marshal(t, []any{1, 7, nil, "pong"}),
		marshal(t, []any{1, 8, nil, strings.Repeat("s", 300)}),
		marshal(t, []any{1, 9, map[string]any{"a": []any{1.5, true}}, nil}),
		marshal(t, []any{1, 10, nil, bytes.Repeat([]byte{7}, 3*readChunk+5)}),
		marshal(t, []any{1, 11, nil, make([]int, 70000)}),
		append([]byte{0x94, 1, 12, 0xc0}, append([]byte{0xc9, 0, 0, 1, 0, 1}, make([]byte, 256)...)...),
	}
	mr := newMessageReader(bufio.NewReaderSize(&stutterReader{b: bytes.Join(want, nil)}, 16), 0, 0)
	timeouts := 0
	for i, w := range want {
		var got []byte
		var err error
		for {
			got, err = mr.next()
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			timeouts++
		}
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("message %d: read % x (%d bytes), want % x (%d bytes)", i, head(got), len(got), head(w), len(w))
		}
	}
	if _, err := mr.next(); err != io.EOF {
		t.Fatalf("at end of stream got %v, want io.EOF", err)
	}
	if total := len(bytes.Join(want, nil)); timeouts < total/2 {
		t.Errorf("%d timeouts over %d bytes: the reader did not stall as meant", timeouts, total)
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func TestMessageReaderTruncated(t *testing.T) {
	full := marshal(t, []any{0, 1, "echo", []any{strings.Repeat("x", 100)}})
	for cut := 1; cut < len(full); cut += 7 {
		_, err := reader(full[:cut], 0, 0).next()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestMessageReaderBounds(t *testing.T) {
	var pe *ProtocolError
	cases := []struct {
		name    string
		input   []byte
		maxSize int
		depth   int
		reason  string
	}{
		{"string over the limit", marshal(t, strings.Repeat("x", 2000)), 1000, 0, "larger than the 1000-byte limit"},
		{"claim of 4 GiB", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}, 0, 0, "larger than"},
		{"array count over the limit", []byte{0xdd, 0x00, 0x10, 0x00, 0x00}, 1000, 0, "larger than"},
		{"map count over the limit", []byte{0xdf, 0x7f, 0xff, 0xff, 0xff}, 0, 0, "larger than"},
		{"too deep", bytes.Repeat([]byte{0x91}, 10), 0, 5, "nested deeper than 5"},
		{"unused code", []byte{0xc1}, 0, 0, "0xc1 is not a msgpack type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reader(tc.input, tc.maxSize, tc.depth).next()
			if !errors.As(err, &pe) || !strings.Contains(pe.Reason, tc.reason) {
				t.Fatalf("got %v, want a protocol error about %q", err, tc.reason)
			}
		})
	}
	// Exactly at the bounds is fine.
	exact := marshal(t, strings.Repeat("x", 995)) // 3-byte header + 995
	if _, err := reader(exact, len(exact), 0).next(); err != nil {
		t.Fatalf("message of exactly the limit: %v", err)
	}
	deep := append(bytes.Repeat([]byte{0x91}, 5), 0xc0)
	if _, err := reader(deep, 0, 5).next(); err != nil {
		t.Fatalf("nesting of exactly the limit: %v", err)
	}
}

func TestMessageReaderGrowsWithArrivingBytes(t *testing.T) {
	// A 60 MiB claim followed by only 10 bytes must not reserve 60 MiB.
	msg := append([]byte{0xdb, 0x03, 0xc0, 0x00, 0x00}, "0123456789"...)
	mr := reader(msg, 0, 0)
	_, err := mr.next()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v", err)
	}
	if cap(mr.buf) > 2*readChunk {
		t.Fatalf("buffer grew to %d bytes for 15 bytes received", cap(mr.buf))
	}
}

func TestEnvelope(t *testing.T) {
	d := newDecoder()
	d.reset(marshal(t, []any{0, uint32(math.MaxUint32), "add", []any{1, 2}}))
	env, err := d.envelope()
	if err != nil || env.typ != typeRequest || env.id != math.MaxUint32 || env.method != "add" {
		t.Fatalf("request envelope %+v, %v", env, err)
	}
	if n, ok := d.paramsLen(); !ok || n != 2 {
		t.Fatalf("params length %d, %v", n, ok)
	}

	d.reset(marshal(t, []any{2, []byte("note"), []any{}}))
	if env, err = d.envelope(); err != nil || env.typ != typeNotification || env.method != "note" {
		t.Fatalf("notification envelope %+v, %v", env, err)
	}

	var pe *ProtocolError
	for _, bad := range []any{
		[]any{0, 1, "add"},                      // request with 3 elements
		[]any{2, "x", []any{}, 4},               // notification with 4
		[]any{0, uint64(1) << 32, "x", []any{}}, // msgid over 32 bits
		[]any{5, 1, "x", []any{}},               // unknown type
		[]any{"0", 1, "x", []any{}},             // type not an integer
		map[string]any{"type": 0},               // not an array
	} {
		d.reset(marshal(t, bad))
		if _, err := d.envelope(); !errors.As(err, &pe) {
			t.Errorf("%v: got %v, want a protocol error", bad, err)
		}
	}
}

func TestResponseEncoding(t *testing.T) {
	e := getEncoder()
	defer e.free()
	e.response(7, nil, map[string]int{"a": 1})
	var got []any
	if err := msgpack.Unmarshal(e.buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] != int8(1) || got[1] != int8(7) || got[2] != nil {
		t.Fatalf("response %v", got)
	}

	e.buf.Reset()
	got = nil
	e.response(8, &Error{Kind: KindOverloaded, Message: "busy"}, nil)
	if err := msgpack.Unmarshal(e.buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got[2] != "Overloaded: busy" || got[3] != nil {
		t.Fatalf("error response %v", got)
	}

	// A result that cannot be encoded becomes an error reply.
	e.buf.Reset()
	got = nil
	e.response(9, nil, make(chan int))
	if err := msgpack.Unmarshal(e.buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if s, _ := got[2].(string); !strings.HasPrefix(s, "FunctionError: cannot encode result") {
		t.Fatalf("unencodable result gave %v", got)
	}
}

func TestParseWireError(t *testing.T) {
	cases := []struct {
		in   any
		kind Kind
		msg  string
	}{
		{"Overloaded: 12 calls in flight", KindOverloaded, "12 calls in flight"},
		{"FunctionError: a: b: c", KindFunctionError, "a: b: c"},
		{[]byte("Timeout: slow"), KindTimeout, "slow"},
		{"Canceled", KindCanceled, ""},
		{"something broke", KindRemote, "something broke"},
		{"not a kind: x", KindRemote, "not a kind: x"},
		{[]any{int8(0), "nvim style"}, KindRemote, "[0 nvim style]"},
		{"CustomKind: x", Kind("CustomKind"), "x"},
	}
	for _, tc := range cases {
		e := ParseError(tc.in)
		if e.Kind != tc.kind || e.Message != tc.msg {
			t.Errorf("parse %v = (%q, %q), want (%q, %q)", tc.in, e.Kind, e.Message, tc.kind, tc.msg)
		}
	}
	// What a server sends parses back to the same error.
	for kind := range knownKinds {
		orig := &Error{Kind: kind, Message: "m: n"}
		if back := ParseError(orig.Error()); *back != *orig {
			t.Errorf("round trip of %v gave %v", orig, back)
		}
	}
}

func TestToError(t *testing.T) {
	wrapped := errors.Join(errors.New("context"), Errorf(KindOverloaded, "queue full"))
	cases := []struct {
		in   error
		kind Kind
	}{
		{errors.New("plain"), KindFunctionError},
		{wrapped, KindOverloaded},
		{contextError("x", context.DeadlineExceeded), KindTimeout},
	}
	for _, tc := range cases {
		if got := ErrorOf(tc.in); got.Kind != tc.kind {
			t.Errorf("ErrorOf(%v) kind %q, want %q", tc.in, got.Kind, tc.kind)
		}
	}
}

// BenchmarkMessageReaderManyItems splits messages of thousands of small
// items, as a map chunk is, from a buffered stream: the reader's cost per
// item.
//
//	go test -run '^$' -bench MessageReaderManyItems ./rpc
func BenchmarkMessageReaderManyItems(b *testing.B) {
	items := make([]any, 4096)
	for i := range items {
		if i%2 == 0 {
			items[i] = i * 7919
		} else {
			items[i] = []any{i, "x"}
		}
	}
	msg := marshal(b, []any{0, 1, "shoal.map", []any{"square", items}})
	const messages = 16
	stream := bytes.Repeat(msg, messages)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		mr := newMessageReader(bufio.NewReaderSize(bytes.NewReader(stream), readChunk), 0, 0)
		for range messages {
			if _, err := mr.next(); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The envelope's 7 values, an int each even item, an array of two
	// each odd one.
	perMessage := 7 + len(items)/2*(1+3)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*messages*perMessage), "ns/item")
}
