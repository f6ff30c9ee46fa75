package node

import (
	"bytes"
	"context"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// mapChunk serves shoal.map: it takes one executor slot for the whole
// chunk and runs the items in order, each with its own timeout, so the
// function's context ends on the node when an item's time is up or the
// caller cancels. The function is looked up once and every result is
// encoded by one encoder into the reply's values. Only a chunk that asks
// for it (Cache) costs cache keys and writes, one batch for the chunk.
func (n *Node) mapChunk(ctx context.Context, req grid.MapRequest) (*grid.MapReply, error) {
	fn, ok := n.srv.Prepare(req.Function)
	if !ok {
		return nil, rpc.Errorf(rpc.KindUnknownFunction, "no function named %q", req.Function)
	}
	items, err := req.Items.Split(make([][]byte, 0, req.Items.Count))
	if err != nil {
		return nil, rpc.Errorf(rpc.KindBadArguments, "shoal.map items: %v", err)
	}
	release, err := n.exec.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	info := fn.Info()
	caching := req.Cache && info.Cacheable && n.cache != nil
	var stored []cache.Item
	maxCached := n.maxCachedSize()

	reply := &grid.MapReply{Values: grid.Values{Count: len(items)}}
	var out bytes.Buffer
	out.Grow(len(req.Items.Raw))
	enc := msgpack.NewEncoder(&out)
	enc.UseCompactInts(true)
	var times chunkTimes
	defer n.funcs.add(info.Name, &times)
	// Items are timed on the monotonic clock alone (time.Since), which
	// costs half of time.Now: this loop runs millions of times a second.
	chunkStart := time.Now()
	var itemStart time.Duration
	for i, params := range items {
		start := out.Len()
		err := ctx.Err()
		if err == nil {
			itemCtx, cancel := ctx, context.CancelFunc(func() {})
			if req.TimeoutMs > 0 {
				itemCtx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
			}
			var result any
			result, err = fn.Call(itemCtx, params)
			cancel()
			if err == nil {
				err = enc.Encode(result)
			}
			now := time.Since(chunkStart)
			times.observe(err != nil, now-itemStart)
			itemStart = now
		}
		if err != nil {
			out.Truncate(start)
			out.WriteByte(msgpcode.Nil)
			reply.Errors = append(reply.Errors, grid.ItemError{Index: i, Error: rpc.ErrorOf(err).Error()})
			continue
		}
		if caching {
			value := out.Bytes()[start:]
			if maxCached > 0 && len(value) > maxCached {
				n.cacheTooLarge.Add(1) // the cache would refuse it
				continue
			}
			key, err := cache.KeyFromParams(info.Name, info.Version, params)
			if err != nil {
				n.log.Debug("result not cacheable", "function", info.Name, "err", err)
				continue
			}
			stored = append(stored, cache.Item{Key: key, Value: bytes.Clone(value)})
		}
	}
	reply.Values.Raw = out.Bytes()
	if len(stored) > 0 {
		n.storeResults(stored)
	}
	return reply, nil
}
