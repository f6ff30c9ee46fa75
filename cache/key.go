package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
// compactly), maps with the same entries are equal whatever their order
// (keys are sorted), structs encode as maps of their field names. A float
// is never equal to an integer, nor a string to a []byte.
func Key(function, version string, args ...any) (string, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
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
		if err := enc.Encode(a); err != nil {
			return "", fmt.Errorf("cache: key for %s: argument %d: %w", function, i+1, err)
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	return "shoal:" + readable(function) + ":" + hex.EncodeToString(sum[:]), nil
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
