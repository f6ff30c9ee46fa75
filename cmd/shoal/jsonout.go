package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/rpc"
)

// resultWriter prints a job's results as JSON lines, one value or one
// record per item, written straight from each result's msgpack when it is
// a plain value (nil, a boolean, a number, a plain string) and through
// encoding/json otherwise, with what it prints being the same either way.
type resultWriter struct {
	out     *bufio.Writer
	records bool
	line    []byte // the line being written, reused
}

// record is an item as --format records prints it.
type record struct {
	Index    int    `json:"index"`
	Result   any    `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	Cached   bool   `json:"cached"`
	Node     string `json:"node,omitempty"`
	Attempts int    `json:"attempts"`
}

func (w *resultWriter) write(it shoal.Item[msgpack.RawMessage]) error {
	b := w.line[:0]
	if w.records {
		b = appendRecord(b, it)
	} else if it.Err != nil {
		b = append(b, "null"...)
	} else {
		b = appendResult(b, it.Value)
	}
	w.line = append(b, '\n')
	_, err := w.out.Write(w.line)
	return err
}

// appendRecord appends it as a record, as encoding/json writes one.
func appendRecord(b []byte, it shoal.Item[msgpack.RawMessage]) []byte {
	b = append(b, `{"index":`...)
	b = strconv.AppendInt(b, int64(it.Index), 10)
	switch {
	case it.Err != nil:
		b = append(b, `,"error":`...)
		b = appendJSONString(b, rpc.ErrorOf(it.Err).Error())
	case len(it.Value) > 0 && it.Value[0] != msgpcode.Nil: // a nil result is left out
		b = append(b, `,"result":`...)
		b = appendResult(b, it.Value)
	}
	b = append(b, `,"cached":`...)
	b = strconv.AppendBool(b, it.Cached)
	if it.Node != "" {
		b = append(b, `,"node":`...)
		b = appendJSONString(b, it.Node)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(it.Attempts), 10)
	return append(b, '}')
}

// appendResult appends an encoded result as JSON.
func appendResult(b []byte, raw []byte) []byte {
	if out, ok := appendPlainJSON(b, raw); ok {
		return out
	}
	var v any
	if err := msgpack.Unmarshal(raw, &v); err != nil {
		return appendJSONString(b, fmt.Sprintf("unprintable result: %v", err))
	}
	js, err := json.Marshal(jsonValue(v))
	if err != nil {
		return appendJSONString(b, fmt.Sprintf("unprintable result: %v", err))
	}
	return append(b, js...)
}

// appendPlainJSON appends a plain msgpack value (nil, a boolean, an
// integer, a float, a string of printable ASCII) as encoding/json writes
// it once decoded; ok is false for anything else, or anything more than
// the one value.
func appendPlainJSON(b []byte, raw []byte) (out []byte, ok bool) {
	if len(raw) == 0 {
		return b, false
	}
	c, rest := raw[0], raw[1:]
	fixed := func(n int) ([]byte, bool) { return rest, len(rest) == n }
	switch {
	case msgpcode.IsFixedNum(c):
		return strconv.AppendInt(b, int64(int8(c)), 10), len(rest) == 0
	case msgpcode.IsFixedString(c):
		return appendPlainString(b, rest, int(c&msgpcode.FixedStrMask))
	}
	switch c {
	case msgpcode.Nil:
		return append(b, "null"...), len(rest) == 0
	case msgpcode.True:
		return append(b, "true"...), len(rest) == 0
	case msgpcode.False:
		return append(b, "false"...), len(rest) == 0
	case msgpcode.Uint8:
		if p, ok := fixed(1); ok {
			return strconv.AppendUint(b, uint64(p[0]), 10), true
		}
	case msgpcode.Uint16:
		if p, ok := fixed(2); ok {
			return strconv.AppendUint(b, uint64(binary.BigEndian.Uint16(p)), 10), true
		}
	case msgpcode.Uint32:
		if p, ok := fixed(4); ok {
			return strconv.AppendUint(b, uint64(binary.BigEndian.Uint32(p)), 10), true
		}
	case msgpcode.Uint64:
		if p, ok := fixed(8); ok {
			return strconv.AppendUint(b, binary.BigEndian.Uint64(p), 10), true
		}
	case msgpcode.Int8:
		if p, ok := fixed(1); ok {
			return strconv.AppendInt(b, int64(int8(p[0])), 10), true
		}
	case msgpcode.Int16:
		if p, ok := fixed(2); ok {
			return strconv.AppendInt(b, int64(int16(binary.BigEndian.Uint16(p))), 10), true
		}
	case msgpcode.Int32:
		if p, ok := fixed(4); ok {
			return strconv.AppendInt(b, int64(int32(binary.BigEndian.Uint32(p))), 10), true
		}
	case msgpcode.Int64:
		if p, ok := fixed(8); ok {
			return strconv.AppendInt(b, int64(binary.BigEndian.Uint64(p)), 10), true
		}
	case msgpcode.Float:
		if p, ok := fixed(4); ok {
			return appendJSONFloat(b, float64(math.Float32frombits(binary.BigEndian.Uint32(p)))), true
		}
	case msgpcode.Double:
		if p, ok := fixed(8); ok {
			return appendJSONFloat(b, math.Float64frombits(binary.BigEndian.Uint64(p))), true
		}
	case msgpcode.Str8:
		if len(rest) > 0 {
			return appendPlainString(b, rest[1:], int(rest[0]))
		}
	}
	return b, false
}

// appendPlainString appends the n bytes of s as a JSON string when they
// are printable ASCII that needs no escaping (encoding/json escapes <, >
// and & too).
func appendPlainString(b, s []byte, n int) ([]byte, bool) {
	if len(s) != n {
		return b, false
	}
	for _, c := range s {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// appendJSONString appends s as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	if out, ok := appendPlainString(b, []byte(s), len(s)); ok {
		return out
	}
	js, _ := json.Marshal(s)
	return append(b, js...)
}

// appendJSONFloat appends f as encoding/json writes a float64, and the
// floats JSON cannot hold as jsonValue makes them: strings.
func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.AppendQuote(b, strconv.FormatFloat(f, 'g', -1, 64))
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 to e-9, as encoding/json does
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
