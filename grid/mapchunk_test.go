package grid_test

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// TestMapRequestDecodesEveryForm checks the MapRequest decoder against
// what msgpack's struct encoder writes (a map), the array form, unknown
// keys, nil items and missing fields.
func TestMapRequestDecodesEveryForm(t *testing.T) {
	one, _ := msgpack.Marshal([]int{1})
	two, _ := msgpack.Marshal([]any{"x", map[string]any{"k": []int{2}}})
	want := grid.MapRequest{Function: "f", Items: valuesOf(one, two), TimeoutMs: 250, Cache: true}
	asMap, err := msgpack.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	asArray, _ := msgpack.Marshal([]any{"f", []msgpack.RawMessage{one, two}, 250, true})
	withExtra, _ := msgpack.Marshal(map[string]any{"x": []int{1, 2}, "f": "f", "t": 250, "c": true, "i": []msgpack.RawMessage{one, two}, "z": nil})
	for name, b := range map[string][]byte{"map": asMap, "array": asArray, "unknown keys": withExtra} {
		var got grid.MapRequest
		if err := msgpack.Unmarshal(b, &got); err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded %+v, want %+v", name, got, want)
		}
	}
	nilItems, _ := msgpack.Marshal(map[string]any{"f": "g", "i": nil})
	var got grid.MapRequest
	if err := msgpack.Unmarshal(nilItems, &got); err != nil || got.Function != "g" || got.Items.Count != 0 || got.TimeoutMs != 0 {
		t.Errorf("nil items: decoded %+v, %v", got, err)
	}
	for name, b := range map[string][]byte{"nil": {0xc0}, "empty array": {0x90}} {
		got := grid.MapRequest{Function: "x"}
		if err := msgpack.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, grid.MapRequest{}) {
			t.Errorf("%s: decoded %+v, %v", name, got, err)
		}
	}
	// What msgpack's struct decoder refuses is refused too.
	shortArray, _ := msgpack.Marshal([]any{"g"})
	badName, _ := msgpack.Marshal(map[string]any{"f": 7})
	for name, b := range map[string][]byte{"short array": shortArray, "a number for the name": badName} {
		var got grid.MapRequest
		if err := msgpack.Unmarshal(b, &got); err == nil {
			t.Errorf("%s: accepted as %+v", name, got)
		}
	}
}

// hugeChunkHead is the head of a MapRequest whose items array claims n
// items, none of which follow.
func hugeChunkHead(n uint32) []byte {
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.EncodeMapLen(3)
	enc.EncodeString("f")
	enc.EncodeString("echo")
	enc.EncodeString("i")
	enc.EncodeArrayLen(int(n))
	return b.Bytes()
}

// TestMapRequestRefusesTooManyItemsBeforeReadingThem decodes the head of
// a chunk claiming ten million items with none of them there: the refusal
// must come from the count alone, naming the limit, and cost next to no
// allocation.
func TestMapRequestRefusesTooManyItemsBeforeReadingThem(t *testing.T) {
	head := hugeChunkHead(10_000_000)
	var req grid.MapRequest
	err := msgpack.Unmarshal(head, &req)
	var e *rpc.Error
	if !errors.As(err, &e) || e.Kind != rpc.KindBadArguments || !strings.Contains(e.Message, strconv.Itoa(grid.MaxChunkItems)) {
		t.Fatalf("a chunk of ten million items: %v; want BadArguments naming %d", err, grid.MaxChunkItems)
	}
	allocs := testing.AllocsPerRun(10, func() {
		var req grid.MapRequest
		msgpack.Unmarshal(head, &req)
	})
	if allocs > 20 {
		t.Errorf("refusing the chunk took %.0f allocations", allocs)
	}
	// The largest chunk allowed decodes.
	full := append(hugeChunkHead(grid.MaxChunkItems), bytes.Repeat([]byte{0x90}, grid.MaxChunkItems)...)
	full = append(full, 0xa1, 't', 0x00)
	if err := msgpack.Unmarshal(full, &req); err != nil || req.Items.Count != grid.MaxChunkItems {
		t.Fatalf("a chunk of MaxChunkItems: %d items, %v", req.Items.Count, err)
	}
}

// TestMapOverRPCRefusesTooManyItems sends shoal.map one item too many
// through a real rpc server: the caller reads BadArguments naming the
// limit, and the function never runs.
func TestMapOverRPCRefusesTooManyItems(t *testing.T) {
	ran := make(chan int, 1)
	addr := serve(t, func(req grid.MapRequest) *grid.MapReply {
		ran <- req.Items.Count
		reply := &grid.MapReply{}
		for range req.Items.Count {
			reply.Values.Append([]byte{0xc0})
		}
		return reply
	})
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	items := grid.Values{Count: grid.MaxChunkItems + 1, Raw: bytes.Repeat([]byte{0x90}, grid.MaxChunkItems+1)}
	_, err := grid.Stub{Caller: pool}.Map(context.Background(), addr, grid.MapRequest{Function: "f", Items: items})
	if !errors.Is(err, rpc.ErrBadArguments) || !strings.Contains(err.Error(), "at most "+strconv.Itoa(grid.MaxChunkItems)+" items") {
		t.Fatalf("shoal.map of %d items: %v; want BadArguments naming the limit", items.Count, err)
	}
	select {
	case n := <-ran:
		t.Fatalf("the chunk of %d items ran", n)
	default:
	}
	items = grid.Values{Count: grid.MaxChunkItems, Raw: items.Raw[:grid.MaxChunkItems]}
	reply, err := grid.Stub{Caller: pool}.Map(context.Background(), addr, grid.MapRequest{Function: "f", Items: items})
	if err != nil || reply.Values.Count != grid.MaxChunkItems {
		t.Fatalf("shoal.map of MaxChunkItems: %d results, %v", reply.Values.Count, err)
	}
}

// TestMapRequestRefusesTimeoutsThatWrap: a per-item timeout that would
// wrap (a negative one means none to the node, one past what a Duration
// holds ends at once) is BadArguments, in both forms of the request.
func TestMapRequestRefusesTimeoutsThatWrap(t *testing.T) {
	const maxMs = int64(1<<63-1) / 1e6
	for _, tc := range []struct {
		t  any
		ok bool
	}{
		{int64(0), true}, {int64(250), true}, {maxMs, true},
		{int64(-1), false}, {maxMs + 1, false}, {uint64(1<<64 - 1), false}, {uint64(1 << 62), false},
	} {
		for form, v := range map[string]any{
			"map":   map[string]any{"f": "f", "t": tc.t},
			"array": []any{"f", nil, tc.t},
		} {
			b, _ := msgpack.Marshal(v)
			var got grid.MapRequest
			err := msgpack.Unmarshal(b, &got)
			switch {
			case tc.ok && err != nil:
				t.Errorf("%s form, t=%v: %v", form, tc.t, err)
			case !tc.ok && !errors.Is(err, rpc.ErrBadArguments):
				t.Errorf("%s form, t=%v: decoded %+v, %v; want BadArguments", form, tc.t, got, err)
			}
		}
	}
}

// valuesOf lays encoded values end to end.
func valuesOf(encoded ...[]byte) grid.Values {
	var v grid.Values
	for _, e := range encoded {
		v.Append(e)
	}
	return v
}
