package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
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

// KeyFromParams is Key for arguments given as the msgpack encoding of
// their array, as they travel in a request. It gives the key a node
// computes from the decoded arguments when their encodings agree: an
// integer sent to a float parameter, say, gives another key (a miss,
// never a wrong hit).
func KeyFromParams(function, version string, params []byte) (string, error) {
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

func readable(name string) string {
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= maxNameInKey {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
