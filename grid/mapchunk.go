package grid

import "github.com/vmihailenco/msgpack/v5"

// MapRequest asks a node to apply one function to a chunk of items
// (shoal.map). The node runs them one after another in one executor slot,
// so a chunk of fast items costs one RPC and one slot.
type MapRequest struct {
	Function  string               `msgpack:"f"`
	Items     []msgpack.RawMessage `msgpack:"i"` // each item's argument array, msgpack-encoded
	TimeoutMs int64                `msgpack:"t"` // per item; 0 for none
}

// MapResult is one item's outcome: Value on success, otherwise Error in
// the wire form "<Kind>: <message>".
type MapResult struct {
	Value msgpack.RawMessage `msgpack:"v"`
	Error string             `msgpack:"e"`
}
