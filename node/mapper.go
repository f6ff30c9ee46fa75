package node

import (
	"bytes"
	"context"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// mapChunk serves shoal.map: it takes one executor slot for the whole
// chunk and runs the items in order, each with its own timeout, so the
// function's context ends on the node when an item's time is up or the
// caller cancels.
func (n *Node) mapChunk(ctx context.Context, req grid.MapRequest) (*grid.MapReply, error) {
	if _, ok := n.srv.Lookup(req.Function); !ok {
		return nil, rpc.Errorf(rpc.KindUnknownFunction, "no function named %q", req.Function)
	}
	items, err := req.Items.Split(nil)
	if err != nil {
		return nil, rpc.Errorf(rpc.KindBadArguments, "shoal.map items: %v", err)
	}
	release, err := n.exec.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	reply := &grid.MapReply{}
	for i, params := range items {
		var value []byte
		err := ctx.Err()
		if err == nil {
			itemCtx, cancel := ctx, context.CancelFunc(func() {})
			if req.TimeoutMs > 0 {
				itemCtx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
			}
			var result any
			result, err = n.srv.Invoke(itemCtx, req.Function, params)
			cancel()
			if err == nil {
				value, err = marshalCompact(result)
			}
		}
		if err != nil {
			reply.Errors = append(reply.Errors, grid.ItemError{Index: i, Error: rpc.ErrorOf(err).Error()})
			value = []byte{msgpcode.Nil}
		}
		reply.Values.Append(value)
	}
	return reply, nil
}

// marshalCompact encodes v as rpc replies and cached values are encoded:
// integers in their shortest form.
func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
