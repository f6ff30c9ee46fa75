//go:build !race

// The race detector's shadow memory multiplies a process's resident size,
// so the bound below means nothing for a binary built with it: this file is
// left out of -race runs.

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

// memoryMargin is what a node may hold beyond its in-flight budget. The
// node sets its soft memory limit to the budget plus its in-memory cache
// plus 32 MiB (see memoryLimit), and the collector lets the heap fill that
// limit with garbage before it works hard, so the margin is:
//   - the in-memory cache (64 MiB by default), which the limit leaves room
//     for whether or not it is full;
//   - the 32 MiB inside the limit for the rest of the process: the
//     runtime, gossip, metrics, calls too small to be counted;
//   - 128 MiB outside the limit or past it: the binary's code and data
//     and the runtime's own structures (most of the 20 MiB an idle node
//     holds), and the heap's overrun of a soft limit while a collection
//     runs, as 48 MiB buffers go on being allocated (seen up to 55 MiB).
//
// Measured: 364 to 407 MiB at the peak, against 4953 MiB before the
// budget, 1837 MiB with a budget too large to bite (8 GiB), and 434 to
// 515 MiB with the budget but no memory limit (GOMEMLIMIT=off).
var memoryMargin = int64(node.DefaultConfig().CacheSize) + 32<<20 + 128<<20

// TestNodeMemoryBoundedUnderHugeCalls sends a node one shoal.map chunk of
// ten million tiny items (a 19 MiB message) and sixteen concurrent 48 MiB
// echo calls, while another client makes small calls. The small calls must
// all succeed, the big ones must be answered (their own bytes, or
// Overloaded and then their bytes on a retry over the same connection), and
// the node's peak resident size must stay under its in-flight budget plus
// memoryMargin.
func TestNodeMemoryBoundedUnderHugeCalls(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to read the node's peak resident size")
	}
	n := testutil.StartNode(t, "mem", "")
	pid := n.Pid()
	t.Logf("node idle: VmRSS %d MiB", procStatusKiB(t, pid, "VmRSS")>>10)
	budget := int64(rpc.DefaultMaxInFlightBytes)
	deadline := time.Now().Add(3 * time.Minute)

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	small, err := rpc.Dial(ctx, n.RPC, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()

	// The small caller runs until the big calls have been answered.
	var smallOK atomic.Int64
	var smallErr atomic.Value
	bigDone := make(chan struct{})
	smallStopped := make(chan struct{})
	go func() {
		defer close(smallStopped)
		for i := 0; ; i++ {
			select {
			case <-bigDone:
				return
			default:
			}
			var sum int
			if err := small.Call(ctx, "add", &sum, i, 1); err != nil {
				smallErr.Store(fmt.Errorf("add(%d, 1): %w", i, err))
				return
			}
			if sum != i+1 {
				smallErr.Store(fmt.Errorf("add(%d, 1) = %d", i, sum))
				return
			}
			smallOK.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	payload := make([]byte, 48<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	var wg sync.WaitGroup
	var refused atomic.Int64
	errs := make(chan error, 17)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs <- hugeMapChunk(n.RPC, deadline)
	}()
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- bigEcho(n.RPC, payload, deadline, &refused)
		}()
	}
	wg.Wait()
	okDuringLoad := smallOK.Load()
	close(bigDone)
	<-smallStopped
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err, _ := smallErr.Load().(error); err != nil {
		t.Errorf("small call failed while the node was loaded: %v", err)
	}
	if okDuringLoad == 0 {
		t.Error("no small call completed while the big calls ran")
	}
	peak := procStatusKiB(t, pid, "VmHWM") << 10
	t.Logf("node peak VmHWM %d MiB; budget %d MiB + margin %d MiB; %d small calls during the load; %d echo attempts refused",
		peak>>20, budget>>20, memoryMargin>>20, okDuringLoad, refused.Load())
	if peak > budget+memoryMargin {
		t.Errorf("node peak resident size %d MiB exceeds its %d MiB in-flight budget plus %d MiB margin",
			peak>>20, budget>>20, memoryMargin>>20)
	}
}

// hugeMapChunk sends one shoal.map request of ten million items [1] over a
// raw connection (so this process never holds them decoded) and expects it
// refused: BadArguments for too many items, or Overloaded for more bytes
// than the node's budget. The connection must then still answer a ping.
func hugeMapChunk(addr string, deadline time.Time) error {
	const items = 10_000_000
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	go func() {
		w := bufio.NewWriterSize(conn, 64<<10)
		enc := msgpack.NewEncoder(w)
		enc.EncodeArrayLen(4)
		enc.EncodeInt(0)
		enc.EncodeUint(1)
		enc.EncodeString("shoal.map")
		enc.EncodeArrayLen(1)
		enc.EncodeMapLen(3)
		enc.EncodeString("f")
		enc.EncodeString("echo")
		enc.EncodeString("i")
		enc.EncodeArrayLen(items)
		chunk := bytes.Repeat([]byte{0x91, 0x01}, 32<<10)
		for left := items; left > 0; {
			k := min(left, len(chunk)/2)
			if _, err := w.Write(chunk[:2*k]); err != nil {
				return // the reader below reports what happened
			}
			left -= k
		}
		enc.EncodeString("t")
		enc.EncodeInt(0)
		w.Flush()
	}()
	r := bufio.NewReaderSize(conn, 64<<10)
	callErr, err := readReply(r, 1, nil)
	switch {
	case err != nil:
		return fmt.Errorf("shoal.map of %d items: %w", items, err)
	case callErr == nil:
		return fmt.Errorf("shoal.map of %d items succeeded; want it refused", items)
	case !errors.Is(callErr, rpc.ErrBadArguments) && !errors.Is(callErr, rpc.ErrOverloaded):
		return fmt.Errorf("shoal.map of %d items: %v; want BadArguments or Overloaded", items, callErr)
	}
	return ping(conn, r, 2)
}

// bigEcho calls echo with payload over its own raw connection until the
// node answers with the payload itself, retrying on the same connection
// after each Overloaded.
func bigEcho(addr string, payload []byte, deadline time.Time, refused *atomic.Int64) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	r := bufio.NewReaderSize(conn, 64<<10)
	for id := uint32(1); ; id++ {
		var head bytes.Buffer
		enc := msgpack.NewEncoder(&head)
		enc.EncodeArrayLen(4)
		enc.EncodeInt(0)
		enc.EncodeUint(uint64(id))
		enc.EncodeString("echo")
		enc.EncodeArrayLen(1)
		enc.EncodeBytesLen(len(payload))
		sent := make(chan error, 1)
		go func() {
			_, err := (&net.Buffers{head.Bytes(), payload}).WriteTo(conn)
			sent <- err
		}()
		callErr, err := readReply(r, id, payload)
		if err == nil {
			err = <-sent
		}
		switch {
		case err != nil:
			return fmt.Errorf("echo of %d MiB: %w", len(payload)>>20, err)
		case errors.Is(callErr, rpc.ErrOverloaded):
			refused.Add(1)
			if err := ping(conn, r, id+1_000_000); err != nil {
				return fmt.Errorf("after Overloaded: %w", err)
			}
			time.Sleep(20 * time.Millisecond)
		case callErr != nil:
			return fmt.Errorf("echo of %d MiB: %w", len(payload)>>20, callErr)
		default:
			return nil
		}
	}
}

// ping calls shoal.ping on a raw connection.
func ping(conn net.Conn, r *bufio.Reader, id uint32) error {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.EncodeArrayLen(4)
	enc.EncodeInt(0)
	enc.EncodeUint(uint64(id))
	enc.EncodeString(rpc.MethodPing)
	enc.EncodeArrayLen(0)
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return err
	}
	callErr, err := readReply(r, id, []byte("pong"))
	if err == nil && callErr != nil {
		err = callErr
	}
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// readReply reads the response to call id from r without holding its
// result: a result is compared, as it streams, with want (when want is not
// nil), or else skipped. It returns the call's error, if any, and a
// non-nil err for a broken connection or a wrong reply.
func readReply(r *bufio.Reader, id uint32, want []byte) (callErr, err error) {
	dec := msgpack.NewDecoder(r)
	if n, err := dec.DecodeArrayLen(); err != nil || n != 4 {
		return nil, fmt.Errorf("reading reply: not a 4-element array (%d, %v)", n, err)
	}
	if typ, err := dec.DecodeInt(); err != nil || typ != 1 {
		return nil, fmt.Errorf("reading reply: type %d, %v", typ, err)
	}
	if got, err := dec.DecodeUint32(); err != nil || got != id {
		return nil, fmt.Errorf("reading reply: msgid %d (%v), want %d", got, err, id)
	}
	e, err := dec.DecodeInterface()
	if err != nil {
		return nil, fmt.Errorf("reading reply: %w", err)
	}
	if e != nil {
		return rpc.ParseError(e), dec.Skip()
	}
	if want == nil {
		return nil, dec.Skip()
	}
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, fmt.Errorf("reading result: %w", err)
	}
	if n != len(want) {
		return nil, fmt.Errorf("result of %d bytes, want %d", n, len(want))
	}
	buf := make([]byte, 64<<10)
	for off := 0; off < n; {
		k, err := io.ReadFull(r, buf[:min(len(buf), n-off)])
		if err != nil {
			return nil, fmt.Errorf("reading result: %w", err)
		}
		if !bytes.Equal(buf[:k], want[off:off+k]) {
			return nil, fmt.Errorf("result differs from the argument after byte %d", off)
		}
		off += k
	}
	return nil, nil
}

// procStatusKiB reads a "Name: N kB" line of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			return kib
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return 0
}

// clientMemoryBound is what `shoal submit` may hold at its peak, whatever
// the job's size: its window of items, the chunks in flight, the runtime.
const clientMemoryBound = 64 << 20

// clientMemoryGrowth is how much more a job ten times larger may make the
// client hold at its peak: noise of the collector's timing, not growth.
const clientMemoryGrowth = 8 << 20

// TestSubmitMemoryIsFlat runs `shoal submit --range 0:N square --no-cache`
// for N of 200,000 and 2,000,000 against one node: every line of the
// output must be right, and the client's peak resident size (VmHWM)
// must stay under clientMemoryBound for both, the larger job holding at
// most clientMemoryGrowth more than the smaller. (Inputs and results were
// once all held: about 260 bytes an item, 730 MB for 3 million.)
func TestSubmitMemoryIsFlat(t *testing.T) {
	n := testutil.StartNode(t, "submit-mem", "")
	bin := testutil.ShoalBinary(t)
	peaks := make(map[int]int64)
	sizes := []int{200_000, 2_000_000}
	for _, size := range sizes {
		cmd := exec.Command(bin, "submit", "--seed", n.RPC, "--range", fmt.Sprintf("0:%d", size), "--no-cache", "square")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		stopWatch := local.WatchPeak(cmd.Process.Pid)
		// Every line is checked as it comes, so that this process holds
		// none of them.
		sc := bufio.NewScanner(stdout)
		lines, wrong := 0, ""
		for sc.Scan() {
			if want := strconv.Itoa(lines * lines); sc.Text() != want && wrong == "" {
				wrong = fmt.Sprintf("line %d is %q, want %s", lines, sc.Text(), want)
			}
			lines++
		}
		peak := stopWatch() // its output has ended: it is done but for exiting
		if err := cmd.Wait(); err != nil {
			t.Fatalf("submit of %d items: %v\n%s", size, err, stderr.String())
		}
		if wrong != "" || lines != size {
			t.Fatalf("submit of %d items printed %d lines; %s", size, lines, wrong)
		}
		peaks[size] = peak
		t.Logf("%d items: %v, client peak resident %.1f MiB; %s", size, time.Since(start).Round(time.Millisecond),
			float64(peak)/(1<<20), strings.TrimSpace(stderr.String()))
		if peak > clientMemoryBound {
			t.Errorf("the client held %.1f MiB at its peak for %d items; the bound is %d MiB", float64(peak)/(1<<20), size, clientMemoryBound>>20)
		}
	}
	if grew := peaks[sizes[1]] - peaks[sizes[0]]; grew > clientMemoryGrowth {
		t.Errorf("the client's peak grew by %.1f MiB from %d to %d items", float64(grew)/(1<<20), sizes[0], sizes[1])
	}
}

// TestDetachedJobMemoryIsFlat runs detached jobs of 100,000 and 1,000,000
// items on one node and reads their results back in order: the results go
// to the coordinator's disk, not its memory, so its peak resident size may
// grow by little more than a collector's slack between the two.
func TestDetachedJobMemoryIsFlat(t *testing.T) {
	n := testutil.StartNode(t, "detached-mem", "", "--data-dir", t.TempDir())
	bin := testutil.ShoalBinary(t)
	peaks := make(map[int]int64)
	sizes := []int{100_000, 1_000_000}
	for _, size := range sizes {
		start := time.Now()
		out, stderr, code := testutil.Run(t, time.Minute, nil, bin, "submit", "--detach", "--seed", n.RPC, "--range", fmt.Sprintf("0:%d", size), "--no-cache", "square")
		if code != 0 {
			t.Fatalf("submit --detach exited %d: %s", code, stderr)
		}
		id := strings.TrimSpace(out)
		cmd := exec.Command(bin, "jobs", "results", id, "--seed", n.RPC)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(stdout)
		lines, wrong := 0, ""
		for sc.Scan() {
			if want := strconv.Itoa(lines * lines); sc.Text() != want && wrong == "" {
				wrong = fmt.Sprintf("line %d is %q, want %s", lines, sc.Text(), want)
			}
			lines++
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("jobs results of %d items: %v\n%s", size, err, errOut.String())
		}
		if wrong != "" || lines != size {
			t.Fatalf("jobs results of %d items printed %d lines; %s", size, lines, wrong)
		}
		peaks[size] = procStatusKiB(t, n.Pid(), "VmHWM") << 10
		t.Logf("%d items submitted, run and read back in %v; coordinator peak resident %.1f MiB; %s", size,
			time.Since(start).Round(time.Millisecond), float64(peaks[size])/(1<<20), strings.TrimSpace(errOut.String()))
	}
	if grew := peaks[sizes[1]] - peaks[sizes[0]]; grew > 32<<20 {
		t.Errorf("the coordinator's peak grew by %.1f MiB from %d to %d items", float64(grew)/(1<<20), sizes[0], sizes[1])
	}
}
