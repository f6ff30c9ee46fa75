package portprobe

import (
	"bufio"
	"bytes"
	"compress/lzw"
	"encoding/binary"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// memberlist's stream message types (hashicorp/memberlist net.go). The
// values are part of its wire protocol, which memberlist promises only to
// append to, so copying them is safer than importing memberlist into the
// client binary.
const (
	pingMsg     = 0
	ackRespMsg  = 2
	compressMsg = 9
	encryptMsg  = 10
	errMsg      = 13
)

// ping is memberlist's ping as its stream handler decodes it. An empty Node
// is accepted from anyone, where a wrong one would be refused, and the probe
// cannot know the node's name.
type ping struct {
	SeqNo uint32
	Node  string
}

// Bounds of an encrypted stream message's length field: version, nonce and
// tag are always there (memberlist security.go), and memberlist itself
// refuses more than 20 MiB.
const (
	minEncrypted = 1 + 12 + 16
	maxEncrypted = 20 << 20
)

// isGossipReply reports whether r starts with a stream message memberlist
// sends in answer to a probe: an ack for the ping, or the error it returns
// when it wanted an encrypted stream. Which one arrives, and how it is
// wrapped, depends on the peer's configuration:
//
//	ackRespMsg   ack, compression off
//	errMsg       error, compression off, outgoing encryption off
//	compressMsg  either of those, compressed (memberlist's default)
//	encryptMsg   any of those, encrypted (a gossip key is set)
func isGossipReply(r *bufio.Reader) bool {
	t, err := r.ReadByte()
	if err != nil {
		return false
	}
	switch t {
	case encryptMsg:
		// The body cannot be read without the key, but its framing can: a
		// big-endian length, then an encryption version, 0 or 1.
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return false
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		return n >= minEncrypted && n <= maxEncrypted && hdr[4] <= 1
	case compressMsg:
		var c struct {
			Algo *uint8
			Buf  []byte
		}
		if err := msgpack.NewDecoder(r).Decode(&c); err != nil || c.Algo == nil || *c.Algo != 0 {
			return false
		}
		// Only the start of the payload is read: an LZW bomb stays unexploded.
		inner := bufio.NewReader(io.LimitReader(lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8), maxReply))
		b, err := inner.Peek(1)
		if err != nil || (b[0] != ackRespMsg && b[0] != errMsg) {
			return false
		}
		return isGossipReply(inner)
	case ackRespMsg:
		var ack struct{ SeqNo *uint32 }
		err := msgpack.NewDecoder(r).Decode(&ack)
		return err == nil && ack.SeqNo != nil
	case errMsg:
		var e struct{ Error *string }
		err := msgpack.NewDecoder(r).Decode(&e)
		return err == nil && e.Error != nil
	}
	return false
}
