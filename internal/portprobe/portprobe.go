// Package portprobe tells what kind of endpoint listens at a TCP address, so
// that a misdirected address fails with "that is a node's HTTP port, not its
// RPC port" rather than with whatever error the wrong protocol happens to
// provoke.
//
// It is meant for the moment after a dial or a join has failed:
//
//	if err := c.Connect(ctx, seed); err != nil {
//		if k := portprobe.Identify(ctx, seed); k != portprobe.RPC && k != portprobe.Unknown {
//			return fmt.Errorf("%s is a %s endpoint, not msgpack-rpc: %w", seed, k, err)
//		}
//		return err
//	}
//
// Identify speaks first, since none of the three protocols greets a client.
// It sends one msgpack-rpc request, which an RPC server answers, an HTTP
// server rejects with a 400 response, and memberlist drops without a word
// (or, when the grid has a gossip key, answers with an encrypted error). Only
// on that silence does it open a second connection and send a memberlist
// stream ping. The probes are what a confused client would have sent anyway:
// an RPC server sees a shoal.ping, and a memberlist logs one failed stream.
//
// The package imports neither memberlist nor the rest of Shoal, so that the
// client binary stays free of both; the memberlist wire details it needs are
// in memberlist.go.
package portprobe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Kind is what answered at an address.
type Kind int

const (
	Unknown Kind = iota // nothing recognisable answered (nothing listens, a silent peer, TLS, ...)
	RPC                 // msgpack-rpc: a node's RPC port or any msgpack-rpc server
	HTTP                // an HTTP server: a node's HTTP port, say
	Gossip              // memberlist: a node's gossip port
)

// String names the kind as a user would recognise it in an error message.
func (k Kind) String() string {
	switch k {
	case Unknown:
		return "unknown"
	case RPC:
		return "msgpack-rpc"
	case HTTP:
		return "HTTP"
	case Gossip:
		return "gossip (memberlist)"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// defaultTimeout bounds each probe connection when the caller's context has
// no deadline: every peer worth recognising answers a local or LAN probe
// well within it, and a CLI must not hang on a silent one.
const defaultTimeout = time.Second

// maxReply bounds how much of a peer's reply is ever read. Every reply that
// is recognised is decided within its first few hundred bytes.
const maxReply = 64 << 10

// rpcMsgID is the msgid of the probe request. Its big-endian bytes are
// "\r\n\r\n": an HTTP server reads the request line up to the first "\n"
// and so rejects the request at once, where it would otherwise wait for the
// rest of a line that never comes. The msgpack encoding is unaffected.
const rpcMsgID uint32 = 0x0d0a0d0a

// gossipSeqNo is the SeqNo of the probe's memberlist ping. Any value will
// do; a distinctive one is easier to spot in a packet capture.
const gossipSeqNo uint32 = 0x5348 // "SH"

// Identify connects to addr (plain TCP) and returns what answered. It never
// fails: anything it cannot tell is Unknown, because its only use is to
// improve an error message that already exists. Each probe connection is
// bounded by ctx and, when ctx has no deadline, by one second.
func Identify(ctx context.Context, addr string) Kind {
	k, dropped := probe(ctx, addr, rpcRequest)
	if k != Unknown || !dropped {
		return k
	}
	// Closing on the first byte without a reply is what memberlist does with
	// a message type it does not know (0x94 here), so it is worth asking in
	// memberlist's own terms.
	k, _ = probe(ctx, addr, gossipPing)
	return k
}

var (
	rpcRequest = mustMarshal([]any{0, rpcMsgID, "shoal.ping", []any{}})
	gossipPing = append([]byte{pingMsg}, mustMarshal(ping{SeqNo: gossipSeqNo})...)
)

// mustMarshal encodes a value fixed at compile time, which cannot fail.
func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("portprobe: " + err.Error())
	}
	return b
}

// probe sends req on a new connection to addr and classifies the reply.
// dropped reports that the peer closed the connection without a byte, which
// is the only outcome that calls for a second probe.
func probe(ctx context.Context, addr string, req []byte) (k Kind, dropped bool) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Unknown, false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// The deadline covers expiry; cancellation must interrupt the read too.
	// The callback is waited for so that no goroutine outlives the call.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted
		}
	}()

	if _, err := conn.Write(req); err != nil {
		return Unknown, false
	}
	r := bufio.NewReader(io.LimitReader(conn, maxReply))
	if _, err := r.Peek(1); err != nil {
		return Unknown, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	}
	return classify(r), false
}

// classify decides from the start of a reply. The first byte is enough to
// choose which protocol to check for, since memberlist's message types, "H"
// and msgpack's array headers do not overlap; the rest confirms it, since a
// lone byte such as '\n' (memberlist's encryptMsg) proves nothing.
func classify(r *bufio.Reader) Kind {
	first, _ := r.Peek(1)
	switch first[0] {
	case 'H':
		if b, _ := r.Peek(5); bytes.Equal(b, []byte("HTTP/")) {
			return HTTP
		}
		return Unknown
	case ackRespMsg, compressMsg, encryptMsg, errMsg:
		if isGossipReply(r) {
			return Gossip
		}
		return Unknown
	}
	if isRPCResponse(r) {
		return RPC
	}
	return Unknown
}

// isRPCResponse reports whether r starts with a msgpack-rpc response
// [1, msgid, error, result]. An error reply counts as much as a result: a
// server that says Unauthorized or UnknownFunction speaks msgpack-rpc.
func isRPCResponse(r *bufio.Reader) bool {
	dec := msgpack.NewDecoder(r)
	if n, err := dec.DecodeArrayLen(); err != nil || n != 4 {
		return false
	}
	typ, err := dec.DecodeInt()
	return err == nil && typ == 1
}
