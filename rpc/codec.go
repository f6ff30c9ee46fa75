package rpc

import (
	"bytes"
	"fmt"
	"math"
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
