package grid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Values is a sequence of msgpack values laid end to end: on the wire an
// array of Count values, in memory the array's items as one byte slice.
// A chunk's items and its results travel as Values, so that sending or
// receiving a chunk copies its bytes once instead of allocating a
// message per item.
type Values struct {
	Count int
	Raw   []byte // the Count values' encodings, one after another
}

// Append adds one encoded value.
func (v *Values) Append(encoded []byte) {
	v.Raw = append(v.Raw, encoded...)
	v.Count++
}

// Split returns the values one by one, as slices of Raw, appended to dst.
// It fails when Raw does not hold exactly Count well-formed values.
func (v Values) Split(dst [][]byte) ([][]byte, error) {
	rest := v.Raw
	for i := 0; i < v.Count; i++ {
		n, err := ValueLen(rest)
		if err != nil {
			return dst, fmt.Errorf("value %d of %d: %w", i+1, v.Count, err)
		}
		dst = append(dst, rest[:n])
		rest = rest[n:]
	}
	if len(rest) > 0 {
		return dst, fmt.Errorf("%d bytes after %d values", len(rest), v.Count)
	}
	return dst, nil
}

// EncodeMsgpack writes the values as one msgpack array.
func (v Values) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(v.Count); err != nil {
		return err
	}
	_, err := enc.Writer().Write(v.Raw)
	return err
}

// DecodeMsgpack reads an array of values, refusing more than
// MaxChunkItems before reading any of them. Nil decodes as no values.
func (v *Values) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 0 {
		*v = Values{}
		return nil
	}
	if n > MaxChunkItems {
		return chunkTooLarge(n)
	}
	raw, err := readValues(dec, n)
	if err != nil {
		return err
	}
	*v = Values{Count: n, Raw: raw}
	return nil
}

// readValues reads the encodings of the next n values. Decoders reading a
// message in memory (every decoder of package rpc) are read in one copy;
// others value by value.
func readValues(dec *msgpack.Decoder, n int) ([]byte, error) {
	if br, ok := dec.Buffered().(*bytes.Reader); ok {
		rest := make([]byte, br.Len())
		if _, err := br.ReadAt(rest, br.Size()-int64(br.Len())); err != nil && err != io.EOF {
			return nil, err
		}
		end := 0
		for i := 0; i < n; i++ {
			size, err := ValueLen(rest[end:])
			if err != nil {
				return nil, fmt.Errorf("value %d of %d: %w", i+1, n, err)
			}
			end += size
		}
		if _, err := br.Seek(int64(end), io.SeekCurrent); err != nil {
			return nil, err
		}
		return rest[:end:end], nil
	}
	var raw []byte
	for i := 0; i < n; i++ {
		m, err := dec.DecodeRaw()
		if err != nil {
			return nil, fmt.Errorf("value %d of %d: %w", i+1, n, err)
		}
		raw = append(raw, m...)
	}
	return raw, nil
}

var errTruncated = errors.New("msgpack: value cut short")

// ValueLen returns the length of the msgpack value at the start of b,
// nested arrays and maps included, without decoding or allocating.
func ValueLen(b []byte) (int, error) {
	off := 0
	for pending := 1; pending > 0; pending-- {
		if off >= len(b) {
			return 0, errTruncated
		}
		c := b[off]
		off++
		var size, children int // bytes of payload, values nested
		switch {
		case c <= msgpcode.PosFixedNumHigh || c >= msgpcode.NegFixedNumLow:
		case c >= msgpcode.FixedMapLow && c <= msgpcode.FixedMapHigh:
			children = 2 * int(c&0x0f)
		case c >= msgpcode.FixedArrayLow && c <= msgpcode.FixedArrayHigh:
			children = int(c & 0x0f)
		case c >= msgpcode.FixedStrLow && c <= msgpcode.FixedStrHigh:
			size = int(c & 0x1f)
		default:
			var err error
			if size, children, off, err = longValue(b, off, c); err != nil {
				return 0, err
			}
		}
		// Each nested value takes at least a byte: a count beyond what
		// is left is a lie, refused before it is believed.
		if size > len(b)-off || children > len(b)-off {
			return 0, errTruncated
		}
		off += size
		pending += children
	}
	return off, nil
}

// longValue reads the length fields that follow code c at b[off:]: it
// returns the payload's size, the number of nested values and the offset
// after the length fields.
func longValue(b []byte, off int, c byte) (size, children, next int, err error) {
	length := func(width int) (int, error) {
		if len(b)-off < width {
			return 0, errTruncated
		}
		var n uint64
		switch width {
		case 1:
			n = uint64(b[off])
		case 2:
			n = uint64(binary.BigEndian.Uint16(b[off:]))
		case 4:
			n = uint64(binary.BigEndian.Uint32(b[off:]))
		}
		off += width
		if n > uint64(len(b)) {
			return 0, errTruncated
		}
		return int(n), nil
	}
	switch c {
	case msgpcode.Nil, msgpcode.False, msgpcode.True:
	case msgpcode.Uint8, msgpcode.Int8:
		size = 1
	case msgpcode.Uint16, msgpcode.Int16:
		size = 2
	case msgpcode.Uint32, msgpcode.Int32, msgpcode.Float:
		size = 4
	case msgpcode.Uint64, msgpcode.Int64, msgpcode.Double:
		size = 8
	case msgpcode.FixExt1:
		size = 2
	case msgpcode.FixExt2:
		size = 3
	case msgpcode.FixExt4:
		size = 5
	case msgpcode.FixExt8:
		size = 9
	case msgpcode.FixExt16:
		size = 17
	case msgpcode.Str8, msgpcode.Bin8:
		size, err = length(1)
	case msgpcode.Str16, msgpcode.Bin16:
		size, err = length(2)
	case msgpcode.Str32, msgpcode.Bin32:
		size, err = length(4)
	case msgpcode.Ext8:
		size, err = length(1)
		size++ // the type byte
	case msgpcode.Ext16:
		size, err = length(2)
		size++
	case msgpcode.Ext32:
		size, err = length(4)
		size++
	case msgpcode.Array16:
		children, err = length(2)
	case msgpcode.Array32:
		children, err = length(4)
	case msgpcode.Map16:
		children, err = length(2)
		children *= 2
	case msgpcode.Map32:
		children, err = length(4)
		children *= 2
	default:
		err = fmt.Errorf("msgpack: invalid code %#x", c)
	}
	return size, children, off, err
}

func chunkTooLarge(n int) error {
	return badArguments("a shoal.map chunk holds at most %d items (grid.MaxChunkItems), this one %d", MaxChunkItems, n)
}
