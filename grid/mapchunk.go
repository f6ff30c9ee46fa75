package grid

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/shoalgrid/shoal/rpc"
)

// MaxChunkItems bounds the items of one shoal.map chunk. A node refuses a
// larger chunk with BadArguments before it decodes a single item, so a
// request of millions of tiny items costs the node about its size on the
// wire rather than an allocation per item; the scheduler never sends more.
const MaxChunkItems = 1 << 16

// MapRequest asks a node to apply one function to a chunk of items
// (shoal.map). The node runs them one after another in one executor slot,
// so a chunk of fast items costs one RPC and one slot.
type MapRequest struct {
	Function  string `msgpack:"f"`
	Items     Values `msgpack:"i"` // each item's argument array, msgpack-encoded; at most MaxChunkItems
	TimeoutMs int64  `msgpack:"t"` // per item; 0 for none
	// Cache asks the node to store each successful result of a cacheable
	// function in its result cache; without it the node computes no key.
	Cache bool `msgpack:"c"`
}

// DecodeMsgpack reads a MapRequest as msgpack's struct decoder would (a
// map of the field tags, unknown keys skipped, or an array of exactly the
// three fields in order) but reads the number of items first and refuses
// more than MaxChunkItems before allocating anything for them, and reads
// the items' bytes in one copy.
func (r *MapRequest) DecodeMsgpack(dec *msgpack.Decoder) error {
	c, err := dec.PeekCode()
	if err != nil {
		return err
	}
	if isArrayCode(c) {
		n, err := dec.DecodeArrayLen()
		switch {
		case err != nil:
			return err
		case n == 0:
			*r = MapRequest{}
			return nil
		case n != 3 && n != 4:
			return errArrayFields
		}
		for _, field := range []string{"f", "i", "t", "c"}[:n] {
			if err := r.decodeField(dec, field); err != nil {
				return err
			}
		}
		return nil
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		key, err := dec.DecodeString()
		if err != nil {
			return err
		}
		if err := r.decodeField(dec, key); err != nil {
			return err
		}
	}
	return nil
}

func (r *MapRequest) decodeField(dec *msgpack.Decoder, key string) error {
	var err error
	switch key {
	case "f":
		r.Function, err = dec.DecodeString()
	case "i":
		err = r.Items.DecodeMsgpack(dec)
	case "t":
		r.TimeoutMs, err = decodeTimeoutMs(dec)
	case "c":
		r.Cache, err = dec.DecodeBool()
	default:
		err = dec.Skip()
	}
	return err
}

// maxTimeoutMs is the longest per-item timeout a chunk may give: what a
// time.Duration holds.
const maxTimeoutMs = math.MaxInt64 / int64(time.Millisecond)

// decodeTimeoutMs decodes a chunk's per-item timeout, refusing what would
// wrap: a negative one would mean none, a huge one would end at once.
func decodeTimeoutMs(dec *msgpack.Decoder) (int64, error) {
	code, err := dec.PeekCode()
	if err != nil {
		return 0, err
	}
	if code == msgpcode.Uint64 {
		u, err := dec.DecodeUint64()
		if err == nil && u > uint64(maxTimeoutMs) {
			err = timeoutRangeError(fmt.Sprint(u))
		}
		return int64(u), err
	}
	ms, err := dec.DecodeInt64()
	if err == nil && (ms < 0 || ms > maxTimeoutMs) {
		err = timeoutRangeError(fmt.Sprint(ms))
	}
	return ms, err
}

func timeoutRangeError(got string) error {
	return rpc.Errorf(rpc.KindBadArguments, "a shoal.map chunk's per-item timeout is %s ms, out of the range 0 (none) to %d", got, maxTimeoutMs)
}

// errArrayFields is msgpack's own complaint about an array-encoded struct.
var errArrayFields = errors.New("msgpack: number of fields in array-encoded struct has changed")

func isArrayCode(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

func badArguments(format string, args ...any) error {
	return rpc.Errorf(rpc.KindBadArguments, format, args...)
}

// MapReply is a chunk's outcome (the result of shoal.map): one value per
// item, in item order, and the errors of the items that failed, whose
// values are nil.
type MapReply struct {
	Values Values      `msgpack:"v"`
	Errors []ItemError `msgpack:"e"`
}

// ItemError is the failure of one item of a chunk, by its position there,
// in the wire form "<Kind>: <message>"; it travels as [index, error].
type ItemError struct {
	_msgpack struct{} `msgpack:",as_array"`
	Index    int
	Error    string
}
