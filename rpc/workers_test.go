package rpc

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"testing"
)

// goroutineID reads the running goroutine's id from its stack header,
// "goroutine 123 [running]:".
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(buf[:bytes.IndexByte(buf, ' ')]), 10, 64)
	return id
}

// TestCallsReuseWorkerGoroutines checks that one call after another runs
// on the same few worker goroutines rather than a new goroutine each (whose
// stack would grow anew on every call), and that Close stops the workers.
func TestCallsReuseWorkerGoroutines(t *testing.T) {
	checkGoroutines(t)
	s, addr := startServer(t, ServerConfig{})
	ran := make(map[uint64]bool)
	if err := s.Register("whoami", func() uint64 { return goroutineID() }); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	const calls = 200
	for range calls {
		var id uint64
		if err := c.Call(context.Background(), "whoami", &id); err != nil || id == 0 {
			t.Fatalf("whoami = %d, %v", id, err)
		}
		ran[id] = true
	}
	// The reply is written before the worker goes back to wait, so now and
	// then a call finds no worker idle yet and starts another.
	if len(ran) > calls/10 {
		t.Errorf("%d calls ran on %d goroutines, want a few reused workers", calls, len(ran))
	}
}
