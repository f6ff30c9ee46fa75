package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/builtins"
)

// The floors are the square job's work done with nothing of Shoal's: what
// this machine needs for it, measured in the same run so that Shoal's cost
// per item can be given as a multiple of each.
//
//   - the loop: square called on every item by a plain Go loop;
//   - msgpack: the items' argument arrays encoded and decoded, and their
//     results encoded and decoded, a chunk at a time, by typed calls of the
//     msgpack library (no reflection), as a node and a client at their
//     best would;
//   - TCP: the job's msgpack-rpc request and reply bytes, chunk by chunk,
//     over one loopback connection to a second process that reads each
//     request whole and writes its reply back, with no decoding at all.
//
// Each is a floor for one part of the work; none includes the others.

// FloorChunkItems is how many items the msgpack and TCP floors move in one
// piece, as one chunk of a job.
const FloorChunkItems = 1000

// squareLoop computes square over the items with a plain loop and
// returns the sum, so the compiler cannot drop the work.
func squareLoop(items []int) (int, error) {
	sum := 0
	for _, x := range items {
		y, err := builtins.Square(x)
		if err != nil {
			return 0, err
		}
		sum += y
	}
	return sum, nil
}

// squareSum is what squareLoop returns over items, computed once to check
// the floors against.
func squareSum(items []int) int {
	sum := 0
	for _, x := range items {
		sum += x * x
	}
	return sum
}

// msgpackFloor encodes and decodes the square job's items and results
// chunk by chunk, its buffers kept from one run to the next as a
// long-running node's and client's would be.
type msgpackFloor struct {
	items        []int
	want         int
	args, values bytes.Buffer
	encArgs      *msgpack.Encoder
	encValues    *msgpack.Encoder
	reader       bytes.Reader
	dec          *msgpack.Decoder
	decoded      []int
	results      []int
}

func newMsgpackFloor(items []int) *msgpackFloor {
	f := &msgpackFloor{items: items, want: squareSum(items), results: make([]int, len(items))}
	f.encArgs, f.encValues = msgpack.NewEncoder(&f.args), msgpack.NewEncoder(&f.values)
	f.dec = msgpack.NewDecoder(&f.reader)
	return f
}

// run is one job: for each chunk the client's encoding of the argument
// arrays, the node's decoding of them, square, the node's encoding of the
// results and the client's decoding of them into their places.
func (f *msgpackFloor) run() error {
	for start := 0; start < len(f.items); start += FloorChunkItems {
		chunk := f.items[start:min(len(f.items), start+FloorChunkItems)]
		if err := encodeArgChunk(f.encArgs, &f.args, chunk); err != nil {
			return err
		}
		f.reader.Reset(f.args.Bytes())
		f.dec.Reset(&f.reader)
		n, err := f.dec.DecodeArrayLen()
		if err != nil {
			return err
		}
		f.decoded = f.decoded[:0]
		for range n {
			if argc, err := f.dec.DecodeArrayLen(); err != nil || argc != 1 {
				return fmt.Errorf("bench: msgpack floor: argument array of %d: %v", argc, err)
			}
			x, err := f.dec.DecodeInt()
			if err != nil {
				return err
			}
			f.decoded = append(f.decoded, x)
		}
		f.values.Reset()
		if err := f.encValues.EncodeArrayLen(len(f.decoded)); err != nil {
			return err
		}
		for _, x := range f.decoded {
			y, err := builtins.Square(x)
			if err != nil {
				return err
			}
			if err := f.encValues.EncodeInt(int64(y)); err != nil {
				return err
			}
		}
		f.reader.Reset(f.values.Bytes())
		f.dec.Reset(&f.reader)
		if n, err = f.dec.DecodeArrayLen(); err != nil || n != len(chunk) {
			return fmt.Errorf("bench: msgpack floor: %d results for %d items: %v", n, len(chunk), err)
		}
		out := f.results[start : start+n]
		for i := range out {
			if out[i], err = f.dec.DecodeInt(); err != nil {
				return err
			}
		}
	}
	return checkSum(f.results, f.want)
}

func checkSum(results []int, want int) error {
	sum := 0
	for _, y := range results {
		sum += y
	}
	if sum != want {
		return fmt.Errorf("bench: floor results sum to %d, want %d", sum, want)
	}
	return nil
}

// encodeArgChunk writes chunk into buf as a chunk's items travel: an array
// of one-element argument arrays.
func encodeArgChunk(enc *msgpack.Encoder, buf *bytes.Buffer, chunk []int) error {
	buf.Reset()
	if err := enc.EncodeArrayLen(len(chunk)); err != nil {
		return err
	}
	for _, x := range chunk {
		if err := enc.EncodeArrayLen(1); err != nil {
			return err
		}
		if err := enc.EncodeInt(int64(x)); err != nil {
			return err
		}
	}
	return nil
}

// floorRequest and floorReply are a chunk's request and reply in the
// README's wire form, their items and values encoded already.
type floorRequest struct {
	Function string             `msgpack:"f"`
	Items    msgpack.RawMessage `msgpack:"i"`
	Timeout  int                `msgpack:"t"`
	Cache    bool               `msgpack:"c"`
}

type floorReply struct {
	Values msgpack.RawMessage `msgpack:"v"`
	Errors []any              `msgpack:"e"`
}

// jobMessages returns the square job's msgpack-rpc messages, chunk by
// chunk: each request [0, msgid, "shoal.map", [{"f": "square",
// "i": [[x], ...], "t": 0, "c": false}]] and its reply
// [1, msgid, nil, {"v": [x*x, ...], "e": nil}].
func jobMessages(items []int) (requests, replies [][]byte, err error) {
	var args, values bytes.Buffer
	encArgs, encValues := msgpack.NewEncoder(&args), msgpack.NewEncoder(&values)
	for start, id := 0, uint64(1); start < len(items); start, id = start+FloorChunkItems, id+1 {
		chunk := items[start:min(len(items), start+FloorChunkItems)]
		if err := encodeArgChunk(encArgs, &args, chunk); err != nil {
			return nil, nil, err
		}
		request, err := msgpack.Marshal([]any{0, id, "shoal.map", []any{floorRequest{Function: "square", Items: args.Bytes()}}})
		if err != nil {
			return nil, nil, err
		}
		values.Reset()
		if err := encValues.EncodeArrayLen(len(chunk)); err != nil {
			return nil, nil, err
		}
		for _, x := range chunk {
			if err := encValues.EncodeInt(int64(x * x)); err != nil {
				return nil, nil, err
			}
		}
		reply, err := msgpack.Marshal([]any{1, id, nil, floorReply{Values: values.Bytes()}})
		if err != nil {
			return nil, nil, err
		}
		requests, replies = append(requests, request), append(replies, reply)
	}
	return requests, replies, nil
}

// FloorPeerCommand is the hidden command of the shoal binary that runs
// ServeFloorPeer, the far end of the TCP floor.
const FloorPeerCommand = "bench-floor-peer"

// tcpFloor moves the square job's request and reply bytes over loopback
// TCP to and from a peer process: the shoal binary run as
// FloorPeerCommand.
type tcpFloor struct {
	requests [][]byte
	reply    []byte // every chunk's reply, back to back, as it must come back
	received []byte
	conn     net.Conn
	peer     *exec.Cmd
	stdin    io.WriteCloser
	stderr   *outputBuffer
	checked  bool
}

// startTCPFloor starts the peer process from bin, connects to it and
// gives it, before anything is timed, the replies to send.
func startTCPFloor(ctx context.Context, bin string, items []int) (*tcpFloor, error) {
	requests, replies, err := jobMessages(items)
	if err != nil {
		return nil, err
	}
	f := &tcpFloor{requests: requests, reply: bytes.Join(replies, nil), stderr: &outputBuffer{}}
	f.received = make([]byte, len(f.reply))
	f.peer = exec.Command(bin, FloorPeerCommand)
	f.peer.Stderr = f.stderr
	if f.stdin, err = f.peer.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := f.peer.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := f.peer.Start(); err != nil {
		return nil, fmt.Errorf("bench: TCP floor peer: %w", err)
	}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		io.Copy(io.Discard, stdout)
	}()
	fail := func(err error) (*tcpFloor, error) {
		f.close()
		return nil, fmt.Errorf("bench: TCP floor peer: %w (%s)", err, f.stderr.tail())
	}
	var a string
	select {
	case a = <-addr:
	case <-time.After(startTimeout):
		return fail(errors.New("no address within " + startTimeout.String()))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	var d net.Dialer
	if f.conn, err = d.DialContext(ctx, "tcp", a); err != nil {
		return fail(err)
	}
	setup := binary.BigEndian.AppendUint32(nil, uint32(len(requests)))
	for i, r := range requests {
		setup = binary.BigEndian.AppendUint32(setup, uint32(len(r)))
		setup = binary.BigEndian.AppendUint32(setup, uint32(len(replies[i])))
		setup = append(setup, replies[i]...)
	}
	if _, err := f.conn.Write(setup); err != nil {
		return fail(err)
	}
	return f, nil
}

// startTimeout bounds how long a helper process may take to start.
const startTimeout = 20 * time.Second

// run is one job: every request written while every reply is read, as a
// client with chunks in flight writes and reads at once.
func (f *tcpFloor) run() error {
	written := make(chan error, 1)
	go func() {
		for _, r := range f.requests {
			if _, err := f.conn.Write(r); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	_, err := io.ReadFull(f.conn, f.received)
	if werr := <-written; err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("bench: TCP floor: %w (%s)", err, f.stderr.tail())
	}
	// Comparing costs time of its own: once shows the bytes are right.
	if !f.checked {
		if !bytes.Equal(f.received, f.reply) {
			return errors.New("bench: TCP floor: the peer's replies differ from those it was given")
		}
		f.checked = true
	}
	return nil
}

// close ends the connection and the peer, which exits when its stdin
// closes.
func (f *tcpFloor) close() error {
	if f.conn != nil {
		f.conn.Close()
	}
	if f.stdin != nil {
		f.stdin.Close()
	}
	if f.peer == nil || f.peer.Process == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- f.peer.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		f.peer.Process.Kill()
		return <-done
	}
}

// ServeFloorPeer is the far end of the TCP floor, run as a process of its
// own: it listens on a free port of 127.0.0.1, writes "listening ADDR" to
// out, and serves one connection. On it come first the chunks' sizes and
// replies (4-byte big-endian request length, reply length, then the reply),
// then requests, which it reads whole, one after another, answering each
// with its reply, until the connection ends. It returns when the
// connection or in ends, so a parent that dies takes its peer with it.
func ServeFloorPeer(in io.Reader, out io.Writer) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := fmt.Fprintf(out, "listening %s\n", l.Addr()); err != nil {
		return err
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, _ := l.Accept()
		accepted <- conn
	}()
	parentGone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(parentGone)
	}()
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-parentGone:
		return nil
	case <-time.After(startTimeout):
		return errors.New("bench: TCP floor peer: no connection")
	}
	if conn == nil {
		return errors.New("bench: TCP floor peer: accept failed")
	}
	defer conn.Close()
	go func() {
		<-parentGone
		conn.Close()
	}()
	err = serveFloorConn(conn)
	select {
	case <-parentGone:
		return nil // the connection was closed under it: the parent is done
	default:
		return err
	}
}

func serveFloorConn(conn net.Conn) error {
	r := bufio.NewReaderSize(conn, 64<<10)
	var header [8]byte
	if _, err := io.ReadFull(r, header[:4]); err != nil {
		return err
	}
	chunks := binary.BigEndian.Uint32(header[:4])
	requestLens := make([]uint32, chunks)
	replies := make([][]byte, chunks)
	longest := uint32(0)
	for i := range chunks {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			return err
		}
		requestLens[i] = binary.BigEndian.Uint32(header[:4])
		longest = max(longest, requestLens[i])
		replies[i] = make([]byte, binary.BigEndian.Uint32(header[4:]))
		if _, err := io.ReadFull(r, replies[i]); err != nil {
			return err
		}
	}
	request := make([]byte, longest)
	for {
		for i, n := range requestLens {
			if _, err := io.ReadFull(r, request[:n]); err != nil {
				if i == 0 && errors.Is(err, io.EOF) {
					return nil // the parent is done
				}
				return err
			}
			if _, err := conn.Write(replies[i]); err != nil {
				return err
			}
		}
	}
}
