package rpc

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Message types of the msgpack-rpc specification.
const (
	typeRequest      = 0
	typeResponse     = 1
	typeNotification = 2
)

// encoder builds one message in a reusable buffer.
type encoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encoderPool = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true)
	return e
}}

// getEncoder returns an empty encoder; give it back with free.
func getEncoder() *encoder {
	e := encoderPool.Get().(*encoder)
	e.buf.Reset()
	return e
}

func (e *encoder) free() {
	if e.buf.Cap() > keepBuffer {
		return
	}
	encoderPool.Put(e)
}

func (e *encoder) encodeArgs(args []any) error {
	if err := e.enc.EncodeArrayLen(len(args)); err != nil {
		return err
	}
	for i, a := range args {
		if err := e.enc.Encode(a); err != nil {
			return fmt.Errorf("rpc: encoding argument %d: %w", i+1, err)
		}
	}
	return nil
}

// request encodes [0, id, method, args].
func (e *encoder) request(id uint32, method string, args []any) error {
	e.enc.EncodeArrayLen(4)
	e.enc.EncodeInt(typeRequest)
	e.enc.EncodeUint(uint64(id))
	e.enc.EncodeString(method)
	return e.encodeArgs(args)
}

// notification encodes [2, method, args].
func (e *encoder) notification(method string, args []any) error {
	e.enc.EncodeArrayLen(3)
	e.enc.EncodeInt(typeNotification)
	e.enc.EncodeString(method)
	return e.encodeArgs(args)
}

// response encodes [1, id, error, result]. A result that cannot be encoded
// turns into a FunctionError response, so the caller always hears back.
func (e *encoder) response(id uint32, callErr *Error, result any) {
	e.enc.EncodeArrayLen(4)
	e.enc.EncodeInt(typeResponse)
	e.enc.EncodeUint(uint64(id))
	if callErr != nil {
		e.enc.EncodeString(callErr.Error())
		e.enc.EncodeNil()
		return
	}
	mark := e.buf.Len()
	e.enc.EncodeNil()
	if err := e.enc.Encode(result); err != nil {
		e.buf.Truncate(mark)
		e.enc.EncodeString((&Error{Kind: KindFunctionError, Message: "cannot encode result: " + err.Error()}).Error())
		e.enc.EncodeNil()
	}
}

// decoder reads the envelope of one message held whole in memory.
type decoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

func newDecoder() *decoder {
	d := &decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	d.dec.SetMapDecoder(decodeMap)
	return d
}

// newMessageDecoder returns a decoder for the messages a messageReader
// returns. msgpack grows a string or a slice a megabyte at a time in case
// its length lies; the reader has already checked every length against
// bytes received, so this decoder allocates each at once, leaving no
// garbage of the growing behind. Bytes from elsewhere (Invoke's params)
// keep the limit.
func newMessageDecoder() *decoder {
	d := newDecoder()
	d.dec.DisableAllocLimit(true)
	return d
}

// decodeMap decodes a map into map[string]any when every key is a string,
// which is what Go and JSON users expect, and into map[any]any otherwise,
// rather than failing on the first non-string key. A key that Go cannot
// hash (an array or a map) is an error, where msgpack's own map decoder
// would panic.
func decodeMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, err
	}
	m := make(map[any]any, min(n, 1024))
	allStrings := true
	for i := 0; i < n; i++ {
		k, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		switch k.(type) {
		case []any, map[string]any, map[any]any:
			return nil, fmt.Errorf("msgpack: map key of type %T cannot be used in Go", k)
		case string:
		default:
			allStrings = false
		}
		if m[k], err = d.DecodeInterface(); err != nil {
			return nil, err
		}
	}
	if !allStrings {
		return m, nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k.(string)] = v
	}
	return out, nil
}

func (d *decoder) reset(msg []byte) { d.r.Reset(msg) }

// envelope is the head of a message; what follows it (params, or error and
// result) is still to be read from the decoder.
type envelope struct {
	typ    int
	id     uint32
	method string
}

func (d *decoder) envelope() (envelope, error) {
	var env envelope
	n, err := d.dec.DecodeArrayLen()
	if err != nil {
		return env, &ProtocolError{Reason: "message is not an array"}
	}
	typ, err := d.dec.DecodeInt()
	if err != nil {
		return env, &ProtocolError{Reason: "message type is not an integer"}
	}
	env.typ = typ
	switch typ {
	case typeRequest, typeResponse:
		if n != 4 {
			return env, &ProtocolError{Reason: fmt.Sprintf("message of type %d has %d elements, want 4", typ, n)}
		}
		id, err := d.dec.DecodeUint64()
		if err != nil || id > math.MaxUint32 {
			return env, &ProtocolError{Reason: "msgid is not a 32-bit unsigned integer"}
		}
		env.id = uint32(id)
	case typeNotification:
		if n != 3 {
			return env, &ProtocolError{Reason: fmt.Sprintf("notification has %d elements, want 3", n)}
		}
	default:
		return env, &ProtocolError{Reason: fmt.Sprintf("unknown message type %d", typ)}
	}
	if typ != typeResponse {
		if env.method, err = d.method(); err != nil {
			return env, err
		}
	}
	return env, nil
}

// method reads a method name sent as msgpack str or bin.
func (d *decoder) method() (string, error) {
	c, err := d.dec.PeekCode()
	if err != nil {
		return "", &ProtocolError{Reason: "missing method name"}
	}
	if msgpcode.IsBin(c) {
		b, err := d.dec.DecodeBytes()
		return string(b), err
	}
	if msgpcode.IsString(c) {
		return d.dec.DecodeString()
	}
	return "", &ProtocolError{Reason: fmt.Sprintf("method name is %s, not str or bin", wireType(c))}
}

// paramsLen reads the header of the params array; nil counts as an empty
// array, as some clients send it for no arguments. ok is false when params
// is anything else.
func (d *decoder) paramsLen() (n int, ok bool) {
	c, err := d.dec.PeekCode()
	if err == nil && c == msgpcode.Nil {
		return 0, d.dec.DecodeNil() == nil
	}
	if err != nil || !(msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32) {
		return 0, false
	}
	n, err = d.dec.DecodeArrayLen()
	return n, err == nil
}

// wireType names the msgpack type that starts with code c, for error messages.
func wireType(c byte) string {
	switch {
	case msgpcode.IsFixedNum(c):
		return "int"
	case msgpcode.IsFixedMap(c):
		return "map"
	case msgpcode.IsFixedArray(c):
		return "array"
	case msgpcode.IsFixedString(c):
		return "string"
	}
	switch c {
	case msgpcode.Nil:
		return "nil"
	case msgpcode.False, msgpcode.True:
		return "bool"
	case msgpcode.Float, msgpcode.Double:
		return "float"
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32, msgpcode.Uint64,
		msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
		return "int"
	case msgpcode.Str8, msgpcode.Str16, msgpcode.Str32:
		return "string"
	case msgpcode.Bin8, msgpcode.Bin16, msgpcode.Bin32:
		return "binary"
	case msgpcode.Array16, msgpcode.Array32:
		return "array"
	case msgpcode.Map16, msgpcode.Map32:
		return "map"
	}
	if msgpcode.IsExt(c) {
		return "ext"
	}
	return fmt.Sprintf("code 0x%02x", c)
}

// msgpack decodes an integer into a narrower Go integer by converting it,
// so that 300 arrives in an int8 as 44 and 2^63 in an int as -2^63: the
// function runs on a number its caller never sent, and a cacheable one has
// the wrong answer cached. Arguments that can hold integers are therefore
// decoded by decodeChecked, which refuses an integer out of range.

// rangeError reports an integer that does not fit the Go type it was to be
// decoded into.
type rangeError struct {
	value string       // the integer as sent
	typ   reflect.Type // the integer type it does not fit
	at    string       // where inside the argument, as "[1][k]"; empty for the argument itself
}

func (e *rangeError) Error() string {
	return fmt.Sprintf("%s%s is out of range for %s", e.value, e.at, e.typ)
}

// describe completes "want <argType>, got ...".
func (e *rangeError) describe(argType reflect.Type) string {
	if e.at == "" && e.typ == argType {
		return e.value + ", which is out of range"
	}
	at := ""
	if e.at != "" {
		at = " at " + e.at
	}
	return fmt.Sprintf("%s%s, which is out of range for %s", e.value, at, typeName(e.typ))
}

var (
	customDecoderType     = reflect.TypeFor[msgpack.CustomDecoder]()
	unmarshalerType       = reflect.TypeFor[msgpack.Unmarshaler]()
	binaryUnmarshalerType = reflect.TypeFor[encoding.BinaryUnmarshaler]()
	textUnmarshalerType   = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodesItself reports whether msgpack decodes t with t's own method.
func decodesItself(t reflect.Type) bool {
	for _, typ := range []reflect.Type{t, reflect.PointerTo(t)} {
		if typ.Implements(customDecoderType) || typ.Implements(unmarshalerType) ||
			typ.Implements(binaryUnmarshalerType) || typ.Implements(textUnmarshalerType) {
			return true
		}
	}
	return false
}

// holdsIntegers reports whether decodeChecked has integers to check in a
// value of type t: t is an integer type, or a pointer, slice, array or map
// reaching one. Structs, interfaces and types that decode themselves are
// left to msgpack ([]byte too: msgpack reads it from bin, not integers).
func holdsIntegers(t reflect.Type) bool {
	return holdsIntegersSeen(t, map[reflect.Type]bool{})
}

func holdsIntegersSeen(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] || decodesItself(t) {
		return false // a type that contains itself is checked on its first level
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	case reflect.Pointer:
		return holdsIntegersSeen(t.Elem(), seen)
	case reflect.Slice, reflect.Array:
		return t.Elem().Kind() != reflect.Uint8 && holdsIntegersSeen(t.Elem(), seen)
	case reflect.Map:
		return holdsIntegersSeen(t.Key(), seen) || holdsIntegersSeen(t.Elem(), seen)
	}
	return false
}

// decodeChecked decodes into v, whose type holdsIntegers, as msgpack
// does, except that an integer out of the range of the integer type it
// lands in is a *rangeError. Only integers, and the arrays and maps holding
// them, are read here; anything else (nil, a value of the wrong type) goes
// to msgpack, which decodes it or reports the mismatch.
func decodeChecked(d *msgpack.Decoder, v reflect.Value) error {
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	if c == msgpcode.Nil {
		return d.DecodeValue(v)
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !isIntCode(c) {
			return d.DecodeValue(v)
		}
		n, u, signed, err := decodeInteger(d, c)
		if err != nil {
			return err
		}
		if !signed {
			if u > math.MaxInt64 {
				return &rangeError{value: strconv.FormatUint(u, 10), typ: v.Type()}
			}
			n = int64(u)
		}
		if v.OverflowInt(n) {
			return &rangeError{value: strconv.FormatInt(n, 10), typ: v.Type()}
		}
		v.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !isIntCode(c) {
			return d.DecodeValue(v)
		}
		n, u, signed, err := decodeInteger(d, c)
		if err != nil {
			return err
		}
		if signed {
			if n < 0 {
				return &rangeError{value: strconv.FormatInt(n, 10), typ: v.Type()}
			}
			u = uint64(n)
		}
		if v.OverflowUint(u) {
			return &rangeError{value: strconv.FormatUint(u, 10), typ: v.Type()}
		}
		v.SetUint(u)
		return nil
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeChecked(d, v.Elem())
	case reflect.Slice, reflect.Array:
		if isArrayCode(c) {
			return decodeCheckedList(d, v)
		}
	case reflect.Map:
		if isMapCode(c) {
			return decodeCheckedMap(d, v)
		}
	}
	return d.DecodeValue(v)
}

// decodeCheckedList decodes a msgpack array into a slice or array v.
func decodeCheckedList(d *msgpack.Decoder, v reflect.Value) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	list := v
	if v.Kind() == reflect.Array {
		if n > v.Len() {
			return fmt.Errorf("%s len is %d, but msgpack has %d elements", v.Type(), v.Len(), n)
		}
	} else {
		// The length is as sent, not yet backed by bytes: grow as
		// elements arrive.
		list = reflect.MakeSlice(v.Type(), min(n, 1024), min(n, 1024))
	}
	for i := 0; i < n; i++ {
		if i == list.Len() {
			list = reflect.AppendSlice(list, reflect.MakeSlice(v.Type(), min(n-i, i), min(n-i, i)))
		}
		if err := decodeChecked(d, list.Index(i)); err != nil {
			return inside(err, fmt.Sprintf("[%d]", i))
		}
	}
	if v.Kind() == reflect.Slice {
		v.Set(list)
	}
	return nil
}

// decodeCheckedMap decodes a msgpack map into a map v.
func decodeCheckedMap(d *msgpack.Decoder, v reflect.Value) error {
	n, err := d.DecodeMapLen()
	if err != nil {
		return err
	}
	t := v.Type()
	decodeKey, decodeElem := decoderFor(t.Key()), decoderFor(t.Elem())
	m := reflect.MakeMapWithSize(t, min(n, 1024))
	for i := 0; i < n; i++ {
		k := reflect.New(t.Key()).Elem()
		if err := decodeKey(d, k); err != nil {
			return inside(err, fmt.Sprintf("[key %d]", i))
		}
		if k.Kind() == reflect.Interface && !k.IsNil() && !k.Elem().Type().Comparable() {
			// msgpack's own map decoder would panic here.
			return fmt.Errorf("msgpack: map key of type %s cannot be used in Go", k.Elem().Type())
		}
		e := reflect.New(t.Elem()).Elem()
		if err := decodeElem(d, e); err != nil {
			return inside(err, fmt.Sprintf("[%v]", k.Interface()))
		}
		m.SetMapIndex(k, e)
	}
	v.Set(m)
	return nil
}

// decoderFor returns decodeChecked for a type that holds integers and
// msgpack's own decoding for any other.
func decoderFor(t reflect.Type) func(*msgpack.Decoder, reflect.Value) error {
	if holdsIntegers(t) {
		return decodeChecked
	}
	return (*msgpack.Decoder).DecodeValue
}

// inside prefixes the position of a range error with where it sits in its
// container.
func inside(err error, at string) error {
	var re *rangeError
	if errors.As(err, &re) {
		return &rangeError{value: re.value, typ: re.typ, at: at + re.at}
	}
	return err
}

// decodeInteger reads an integer exactly: a signed value in n, or, for a
// uint64 on the wire, an unsigned value in u.
func decodeInteger(d *msgpack.Decoder, c byte) (n int64, u uint64, signed bool, err error) {
	if c == msgpcode.Uint64 {
		u, err = d.DecodeUint64()
		return 0, u, false, err
	}
	n, err = d.DecodeInt64()
	return n, 0, true, err
}

func isIntCode(c byte) bool {
	switch c {
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32, msgpcode.Uint64,
		msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
		return true
	}
	return msgpcode.IsFixedNum(c)
}

func isArrayCode(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

func isMapCode(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}
