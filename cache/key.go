package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxNameInKey bounds the readable part of a key.
const maxNameInKey = 100

// Key returns the cache key for calling function at version with args:
// "shoal:<name>:<sha256>", where name is the function name reduced to
// letters, digits, '.', '_' and '-' (for people reading memcached dumps)
// and the hash covers the exact name, the version and the msgpack encoding
// of the arguments. It is at most 171 bytes with no spaces or control
// bytes, so valid for memcached whatever the function is called.
//
// Arguments are equal, and give equal keys, when their msgpack encodings
// are: integers of any Go type with the same value are equal (they encode
// compactly), maps with the same entries are equal whatever their order or
// depth (entries are sorted), and structs encode as maps of their field
// names, so a struct equals a map with the same fields. A float is never
// equal to an integer, a float32 never to a float64, nor a string to a
// []byte.
func Key(function, version string, args ...any) (string, error) {
	var buf bytes.Buffer
	enc := newKeyEncoder(&buf)
	if err := enc.EncodeString(function); err != nil {
		return "", err
	}
	if err := enc.EncodeString(version); err != nil {
		return "", err
	}
	if err := enc.EncodeArrayLen(len(args)); err != nil {
		return "", err
	}
	for i, a := range args {
		if err := encodeCanonical(enc, a); err != nil {
			return "", fmt.Errorf("cache: key for %s: argument %d: %w", function, i+1, err)
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	return "shoal:" + readable(function) + ":" + hex.EncodeToString(sum[:]), nil
}

// keyOf returns the key of function at version for args, the canonical
// msgpack encoding of the argument array: what Key hashes, written
// without an encoder.
func keyOf(function, version string, args []byte) string {
	var stack [512]byte
	b := appendStr(stack[:0], function)
	b = appendStr(b, version)
	b = append(b, args...)
	sum := sha256.Sum256(b)
	key := append(b[:0], "shoal:"...)
	key = appendReadable(key, function)
	key = append(key, ':')
	key = hex.AppendEncode(key, sum[:])
	return string(key)
}

// appendStr appends s's msgpack encoding, as msgpack's encoder writes it.
func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, msgpcode.FixedStrLow|byte(n))
	case n < 256:
		b = append(b, msgpcode.Str8, byte(n))
	case n <= math.MaxUint16:
		b = append(b, msgpcode.Str16, byte(n>>8), byte(n))
	default:
		b = append(b, msgpcode.Str32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

func isArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

// maxCanonicalDepth bounds how deep canonicalValue looks; deeper values
// take the slow path.
const maxCanonicalDepth = 32

// canonicalValue reports whether the msgpack value at b[off:] is encoded
// exactly as Key's encoder would encode it after decoding: integers in
// their shortest form, lengths in their shortest headers, and no maps
// (whose entries Key sorts) or extensions. It returns the offset just
// after the value.
func canonicalValue(b []byte, off, depth int) (int, bool) {
	if off >= len(b) || depth > maxCanonicalDepth {
		return 0, false
	}
	c := b[off]
	off++
	// length reads an n-byte big-endian length or number after the code.
	length := func(n int) (uint64, bool) {
		if off+n > len(b) {
			return 0, false
		}
		var v uint64
		for _, x := range b[off : off+n] {
			v = v<<8 | uint64(x)
		}
		off += n
		return v, true
	}
	// body skips a string or binary body of n bytes.
	body := func(n uint64) (int, bool) {
		if n > uint64(len(b)-off) {
			return 0, false
		}
		return off + int(n), true
	}
	switch {
	case msgpcode.IsFixedNum(c), c == msgpcode.Nil, c == msgpcode.True, c == msgpcode.False:
		return off, true
	case msgpcode.IsFixedString(c):
		return body(uint64(c & msgpcode.FixedStrMask))
	case msgpcode.IsFixedArray(c):
		return canonicalElems(b, off, int(c&msgpcode.FixedArrayMask), depth)
	}
	switch c {
	case msgpcode.Float, msgpcode.Double:
		// A NaN may come back from decoding with other bits.
		size := 4 << (c - msgpcode.Float) // the codes are 0xca and 0xcb
		v, ok := length(size)
		nan := size == 4 && math.IsNaN(float64(math.Float32frombits(uint32(v)))) || size == 8 && math.IsNaN(math.Float64frombits(v))
		return off, ok && !nan
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32, msgpcode.Uint64:
		size := 1 << (c - msgpcode.Uint8) // the codes run 0xcc to 0xcf
		v, ok := length(size)
		return off, ok && uintSize(v) == size
	case msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
		size := 1 << (c - msgpcode.Int8) // the codes run 0xd0 to 0xd3
		v, ok := length(size)
		n := int64(v<<(64-8*size)) >> (64 - 8*size) // sign-extended
		return off, ok && n < -32 && intSize(n) == size
	case msgpcode.Str8, msgpcode.Bin8:
		n, ok := length(1)
		if !ok || (c == msgpcode.Str8 && n < 32) {
			return 0, false
		}
		return body(n)
	case msgpcode.Str16, msgpcode.Bin16:
		n, ok := length(2)
		if !ok || n < 256 {
			return 0, false
		}
		return body(n)
	case msgpcode.Str32, msgpcode.Bin32:
		n, ok := length(4)
		if !ok || n <= math.MaxUint16 {
			return 0, false
		}
		return body(n)
	case msgpcode.Array16:
		n, ok := length(2)
		if !ok || n < 16 {
			return 0, false
		}
		return canonicalElems(b, off, int(n), depth)
	case msgpcode.Array32:
		n, ok := length(4)
		if !ok || n <= math.MaxUint16 {
			return 0, false
		}
		return canonicalElems(b, off, int(n), depth)
	}
	return 0, false // maps, extensions and the unused code
}

func canonicalElems(b []byte, off, n, depth int) (int, bool) {
	for ; n > 0; n-- {
		var ok bool
		if off, ok = canonicalValue(b, off, depth+1); !ok {
			return 0, false
		}
	}
	return off, true
}

// uintSize is the size of the number after the code in msgpack's shortest
// encoding of a non-negative integer beyond a positive fixnum.
func uintSize(v uint64) int {
	switch {
	case v <= math.MaxInt8:
		return 0 // a positive fixnum
	case v <= math.MaxUint8:
		return 1
	case v <= math.MaxUint16:
		return 2
	case v <= math.MaxUint32:
		return 4
	}
	return 8
}

// intSize is uintSize for a negative integer beyond a negative fixnum.
func intSize(n int64) int {
	switch {
	case n >= math.MinInt8:
		return 1
	case n >= math.MinInt16:
		return 2
	case n >= math.MinInt32:
		return 4
	}
	return 8
}

// KeyFromParams is Key for arguments given as the msgpack encoding of
// their array, as they travel in a request. It gives the key a node
// computes from the decoded arguments when their encodings agree: an
// integer sent to a float parameter, say, gives another key (a miss,
// never a wrong hit).
func KeyFromParams(function, version string, params []byte) (string, error) {
	if end, ok := canonicalValue(params, 0, 0); ok && end == len(params) && len(params) > 0 && isArray(params[0]) {
		// Already as Key would write the arguments: hash the bytes as
		// they are, without decoding and encoding them again.
		return keyOf(function, version, params), nil
	}
	return keyFromDecoded(function, version, params)
}

// keyFromDecoded is KeyFromParams by decoding the arguments and giving
// them to Key.
func keyFromDecoded(function, version string, params []byte) (string, error) {
	v, err := decodeGeneric(params)
	if err != nil {
		return "", err
	}
	args, ok := v.([]any)
	if !ok && v != nil {
		return "", fmt.Errorf("cache: params of %s are not an array", function)
	}
	return Key(function, version, args...)
}

func newKeyEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.UseCompactInts(true)
	return enc
}

// encodeCanonical encodes v so that equal values give equal bytes. Plain
// values are encoded as they are; anything that may hold a map (maps,
// slices, structs) is encoded, decoded into generic values and written
// again with every map's entries in the order of their encoded keys, at
// any depth.
func encodeCanonical(enc *msgpack.Encoder, v any) error {
	switch v.(type) {
	case nil, bool, string, []byte, int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64, float32, float64:
		return enc.Encode(v)
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return err
	}
	generic, err := decodeGeneric(b)
	if err != nil {
		return err
	}
	return writeSorted(enc, generic)
}

// decodeGeneric decodes into nil, scalars, []any and map[any]any.
func decodeGeneric(b []byte) (v any, err error) {
	defer func() {
		if p := recover(); p != nil { // a map key Go cannot hash
			err = fmt.Errorf("cannot make a key of this value: %v", p)
		}
	}()
	d := msgpack.NewDecoder(bytes.NewReader(b))
	d.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
	return d.DecodeInterface()
}

func writeSorted(enc *msgpack.Encoder, v any) error {
	switch x := v.(type) {
	case []any:
		if err := enc.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, e := range x {
			if err := writeSorted(enc, e); err != nil {
				return err
			}
		}
		return nil
	case map[any]any:
		type entry struct {
			key   []byte
			value any
		}
		entries := make([]entry, 0, len(x))
		for k, val := range x {
			var kb bytes.Buffer
			if err := writeSorted(newKeyEncoder(&kb), k); err != nil {
				return err
			}
			entries = append(entries, entry{kb.Bytes(), val})
		}
		sort.Slice(entries, func(i, j int) bool { return bytes.Compare(entries[i].key, entries[j].key) < 0 })
		if err := enc.EncodeMapLen(len(entries)); err != nil {
			return err
		}
		for _, e := range entries {
			if err := enc.Encode(msgpack.RawMessage(e.key)); err != nil {
				return err
			}
			if err := writeSorted(enc, e.value); err != nil {
				return err
			}
		}
		return nil
	}
	return enc.Encode(v)
}

func readable(name string) string { return string(appendReadable(nil, name)) }

// appendReadable appends name reduced to letters, digits, '.', '_' and
// '-', at most maxNameInKey bytes of it.
func appendReadable(b []byte, name string) []byte {
	n := 0
	for _, r := range name {
		if n >= maxNameInKey {
			break
		}
		n++
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b = append(b, byte(r))
		default:
			b = append(b, '_')
		}
	}
	return b
}
