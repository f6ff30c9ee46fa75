package shoal

import (
	"encoding/binary"
	"math"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// argEncoder encodes inputs as the argument arrays of calls, appending
// them to a chunk's buffer. Plain values (integers, floats, strings,
// booleans, nil, and Args of those) are written directly, without
// allocating; anything else goes through one msgpack encoder, reused.
// Integers take their most compact form, as cache keys do.
type argEncoder struct {
	w   appendWriter
	enc *msgpack.Encoder
}

// appendWriter is an io.Writer that appends to a byte slice.
type appendWriter struct{ buf []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *appendWriter) WriteByte(c byte) error {
	w.buf = append(w.buf, c)
	return nil
}

// appendInput appends the argument array of one call on *in: the Args
// themselves, or an array of the one argument.
func appendInput[In any](e *argEncoder, buf []byte, in *In) ([]byte, error) {
	switch v := any(in).(type) {
	case *Args:
		return e.appendArgs(buf, *v)
	case *any:
		if args, ok := (*v).(Args); ok {
			return e.appendArgs(buf, args)
		}
		return e.appendValue(append(buf, msgpcode.FixedArrayLow|1), *v)
	case *int:
		return appendInt(append(buf, msgpcode.FixedArrayLow|1), int64(*v)), nil
	case *int64:
		return appendInt(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	case *int32:
		return appendInt(append(buf, msgpcode.FixedArrayLow|1), int64(*v)), nil
	case *uint:
		return appendUint(append(buf, msgpcode.FixedArrayLow|1), uint64(*v)), nil
	case *uint64:
		return appendUint(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	case *uint32:
		return appendUint(append(buf, msgpcode.FixedArrayLow|1), uint64(*v)), nil
	case *float64:
		return appendFloat64(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	case *float32:
		return appendFloat32(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	case *string:
		return appendString(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	case *bool:
		return appendBool(append(buf, msgpcode.FixedArrayLow|1), *v), nil
	}
	return e.appendSlow(append(buf, msgpcode.FixedArrayLow|1), *in)
}

// appendArgs appends args as an argument array.
func (e *argEncoder) appendArgs(buf []byte, args Args) ([]byte, error) {
	buf = appendArrayLen(buf, len(args))
	for _, a := range args {
		var err error
		if buf, err = e.appendValue(buf, a); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// appendValue appends one value.
func (e *argEncoder) appendValue(buf []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(buf, msgpcode.Nil), nil
	case bool:
		return appendBool(buf, v), nil
	case int:
		return appendInt(buf, int64(v)), nil
	case int64:
		return appendInt(buf, v), nil
	case int32:
		return appendInt(buf, int64(v)), nil
	case int16:
		return appendInt(buf, int64(v)), nil
	case int8:
		return appendInt(buf, int64(v)), nil
	case uint:
		return appendUint(buf, uint64(v)), nil
	case uint64:
		return appendUint(buf, v), nil
	case uint32:
		return appendUint(buf, uint64(v)), nil
	case uint16:
		return appendUint(buf, uint64(v)), nil
	case uint8:
		return appendUint(buf, uint64(v)), nil
	case float64:
		return appendFloat64(buf, v), nil
	case float32:
		return appendFloat32(buf, v), nil
	case string:
		return appendString(buf, v), nil
	}
	return e.appendSlow(buf, v)
}

// appendSlow appends v as msgpack's encoder writes it, compact integers
// included.
func (e *argEncoder) appendSlow(buf []byte, v any) ([]byte, error) {
	if e.enc == nil {
		e.enc = msgpack.NewEncoder(&e.w)
		e.enc.UseCompactInts(true)
	}
	e.w.buf = buf
	err := e.enc.Encode(v)
	buf, e.w.buf = e.w.buf, nil
	return buf, err
}

func appendArrayLen(buf []byte, n int) []byte {
	switch {
	case n < 16:
		return append(buf, msgpcode.FixedArrayLow|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(buf, msgpcode.Array16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(buf, msgpcode.Array32), uint32(n))
}

func appendBool(buf []byte, v bool) []byte {
	if v {
		return append(buf, msgpcode.True)
	}
	return append(buf, msgpcode.False)
}

// appendInt appends n in the fewest bytes, as msgpack's EncodeInt does.
func appendInt(buf []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(buf, uint64(n))
	case n >= -32:
		return append(buf, byte(n))
	case n >= math.MinInt8:
		return append(buf, msgpcode.Int8, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(buf, msgpcode.Int16), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(buf, msgpcode.Int32), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(buf, msgpcode.Int64), uint64(n))
}

// appendUint appends n in the fewest bytes, as msgpack's EncodeUint does.
func appendUint(buf []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(buf, byte(n))
	case n <= math.MaxUint8:
		return append(buf, msgpcode.Uint8, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(buf, msgpcode.Uint16), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(buf, msgpcode.Uint32), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(buf, msgpcode.Uint64), n)
}

func appendFloat64(buf []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(buf, msgpcode.Double), math.Float64bits(f))
}

func appendFloat32(buf []byte, f float32) []byte {
	return binary.BigEndian.AppendUint32(append(buf, msgpcode.Float), math.Float32bits(f))
}

// appendString appends s as msgpack's EncodeString does.
func appendString(buf []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		buf = append(buf, msgpcode.FixedStrLow|byte(n))
	case n <= math.MaxUint8:
		buf = append(buf, msgpcode.Str8, byte(n))
	case n <= math.MaxUint16:
		buf = binary.BigEndian.AppendUint16(append(buf, msgpcode.Str16), uint16(n))
	default:
		buf = binary.BigEndian.AppendUint32(append(buf, msgpcode.Str32), uint32(n))
	}
	return append(buf, s...)
}
