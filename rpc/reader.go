package rpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Default bounds of a message reader.
const (
	DefaultMaxMessageSize = 64 << 20
	DefaultMaxDepth       = 64
)

// readChunk bounds how much buffer is grown ahead of bytes that have
// actually arrived, so a header claiming a huge length costs nothing until
// the bytes come.
const readChunk = 64 << 10

// keepBuffer is the largest read buffer kept between messages; a larger one
// is released once its message has been handled.
const keepBuffer = 1 << 20

// messageReader splits a byte stream into whole msgpack values without
// trusting any length it reads: every value is walked item by item, the total
// size and nesting depth are checked before anything is allocated, and
// buffers grow only as bytes arrive. What it returns is one complete,
// well-formed msgpack value that a decoder can read without running past its
// end.
//
// A server's reader also admits each message by bytes: as headers announce
// payloads and items, it takes what the message will hold in memory from
// the server's budget, before reading them. When the budget has no room the
// message is refused: the reader gives its share back, keeps only the head
// of the message (the envelope, to answer it by), discards the rest as it
// streams in and returns an *overBudget.
type messageReader struct {
	r        *bufio.Reader
	maxSize  int
	maxDepth int
	buf      []byte
	pending  []uint64 // items still to read, one entry per open container

	budget   *byteBudget // nil on a client's reader: nothing is counted
	size     uint64      // bytes of the current message read so far
	items    uint64      // values of the current message read so far
	promised uint64      // values announced by container headers, not yet read
	charged  int64       // taken from budget for the current message
	refused  *overBudget // set once the current message is being discarded
	head     int         // the bytes of a refused message kept

	// partial is set while a message is half read: a read that timed
	// out (a client interrupting its reader, see Client) leaves every
	// byte it consumed accounted for here, and next carries on from there.
	partial     bool
	payloadLeft uint64 // payload bytes of the current item not yet read

	// win is what r holds buffered, looked at in place, and off how much
	// of it has been taken into the message: items are read from it with
	// no call into r each, and r is told once (sync) what was taken.
	win []byte
	off int
}

func newMessageReader(r *bufio.Reader, maxSize, maxDepth int) *messageReader {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	return &messageReader{r: r, maxSize: maxSize, maxDepth: maxDepth}
}

// release drops an oversized buffer after its message has been used. A
// server's reader keeps no more than a message too small to be counted
// needs, so an idle connection holds nothing the budget does not see.
func (m *messageReader) release() {
	keep := keepBuffer
	if m.budget != nil {
		keep = readChunk
	}
	if cap(m.buf) > keep {
		m.buf = nil
	}
}

// takeCharge hands what the last message took from the budget to its
// call, which gives it back when done.
func (m *messageReader) takeCharge() int64 {
	n := m.charged
	m.charged = 0
	return n
}

// abandon gives back the share of a message the stream broke off in.
func (m *messageReader) abandon() {
	if m.budget != nil {
		m.budget.give(m.takeCharge())
	}
}

// next returns the raw bytes of the next message. The slice is valid until
// the following call. io.EOF means the stream ended cleanly between
// messages; a *ProtocolError means the bytes broke a rule or a bound; an
// *overBudget comes with the head of a message refused for lack of room.
// After an error from the underlying reader that leaves the stream usable
// (a read deadline passing), the next call resumes the message where it
// stopped: nothing consumed is lost.
func (m *messageReader) next() ([]byte, error) {
	msg, err := m.read()
	m.sync()
	return msg, err
}

// read is next, with what it took from r still to be synced.
func (m *messageReader) read() ([]byte, error) {
	if !m.partial {
		m.buf = m.buf[:0]
		m.pending = append(m.pending[:0], 1)
		m.size, m.items, m.promised, m.refused = 0, 0, 1, nil
		m.partial = true
	}
	for m.payloadLeft > 0 || len(m.pending) > 0 {
		if m.payloadLeft > 0 {
			// The rest of a payload cut off by a read that failed.
			if err := m.copyPayload(); err != nil {
				return nil, err
			}
			continue
		}
		c, length, err := m.header()
		if err != nil {
			return nil, err
		}
		m.items++
		m.promised--

		payload, children, err := m.item(c, length)
		if err != nil {
			return nil, err
		}
		if err := m.grow(payload); err != nil {
			return nil, err
		}
		m.admit(payload)
		m.size += payload
		m.payloadLeft = payload
		m.pending[len(m.pending)-1]--
		if children > 0 {
			if len(m.pending) > m.maxDepth {
				return nil, &ProtocolError{Reason: fmt.Sprintf("message nested deeper than %d levels", m.maxDepth)}
			}
			// Every item takes at least one byte, so a count the size
			// limit cannot hold is refused before any is read.
			if err := m.grow(children); err != nil {
				return nil, err
			}
			m.pending = append(m.pending, children)
			m.promised += children
			m.admit(0)
		}
		if m.refused != nil {
			m.buf = m.buf[:m.head]
		}
		for len(m.pending) > 0 && m.pending[len(m.pending)-1] == 0 {
			m.pending = m.pending[:len(m.pending)-1]
		}
		if m.payloadLeft > 0 {
			if err := m.copyPayload(); err != nil {
				return nil, err
			}
		}
	}
	m.partial = false
	if m.refused != nil {
		m.refused.need = m.estimate(0)
		return m.buf, m.refused
	}
	return m.buf, nil
}

// header reads the header of the next item: its type byte and the length
// field that follows it in some types, returned as a number. Nothing is
// consumed until the whole header has arrived, so that a read that fails
// for now can be tried again.
func (m *messageReader) header() (c byte, length uint64, err error) {
	b, err := m.ahead(1)
	if err != nil {
		return 0, 0, m.readError(err)
	}
	c = b[0]
	n := 1 + lengthSize(c)
	if len(b) < n {
		if b, err = m.ahead(n); err != nil {
			return 0, 0, m.readError(err)
		}
	}
	if err := m.grow(uint64(n)); err != nil {
		return 0, 0, err
	}
	switch n {
	case 1:
		m.buf = append(m.buf, c)
	case 2:
		length = uint64(b[1])
		m.buf = append(m.buf, b[:2]...)
	case 3:
		length = uint64(binary.BigEndian.Uint16(b[1:]))
		m.buf = append(m.buf, b[:3]...)
	default:
		length = uint64(binary.BigEndian.Uint32(b[1:]))
		m.buf = append(m.buf, b[:5]...)
	}
	m.size += uint64(n)
	m.off += n
	return c, length, nil
}

// ahead returns the bytes buffered and not yet taken, at least n of them
// (n no more than r's buffer holds), reading more if need be.
func (m *messageReader) ahead(n int) ([]byte, error) {
	if len(m.win)-m.off >= n {
		return m.win[m.off:], nil
	}
	m.sync()
	if _, err := m.r.Peek(n); err != nil {
		return nil, err
	}
	m.win, _ = m.r.Peek(m.r.Buffered())
	return m.win, nil
}

// sync consumes from r what has been taken from the window, and drops the
// window, which reading from r makes stale.
func (m *messageReader) sync() {
	if m.off > 0 {
		m.r.Discard(m.off)
		m.off = 0
	}
	m.win = nil
}

// readError is err from the underlying reader as next reports it: the
// stream ending inside a message is io.ErrUnexpectedEOF.
func (m *messageReader) readError(err error) error {
	if errors.Is(err, io.EOF) && (m.size > 0 || len(m.pending) != 1 || m.pending[0] != 1) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// estimate is what the current message will hold in memory once read and
// decoded, as far as its headers tell, with payload more bytes announced:
// each byte received and copied out by decoding, each value decoded, and at
// least that for every value announced and still to come.
func (m *messageReader) estimate(payload uint64) int64 {
	return int64(2*(m.size+payload) + decodedItemBytes*m.items + (2+decodedItemBytes)*m.promised)
}

// admit takes from the budget what the current message needs, with
// payload more bytes announced, beyond what it holds already; without room
// it refuses the message.
func (m *messageReader) admit(payload uint64) {
	if m.budget == nil || m.refused != nil {
		return
	}
	need := m.estimate(payload)
	if need <= uncountedBytes || need <= m.charged {
		return
	}
	more := need - m.charged
	if m.budget.take(more + budgetStep) {
		m.charged += more + budgetStep
		return
	}
	if m.budget.take(more) {
		m.charged += more
		return
	}
	m.refused = &overBudget{used: m.budget.used.Load() - m.charged, limit: m.budget.limit}
	m.budget.give(m.takeCharge())
	// Keep the head, where the envelope is, in a buffer of its own so a
	// large one can go.
	m.head = min(len(m.buf), readChunk)
	if cap(m.buf) > readChunk {
		m.buf = append(make([]byte, 0, readChunk), m.buf[:m.head]...)
	}
}

// lengthSize is how many bytes of length field follow type byte c.
func lengthSize(c byte) int {
	switch c {
	case 0xc4, 0xc7, 0xd9: // bin8, ext8, str8
		return 1
	case 0xc5, 0xc8, 0xda, 0xdc, 0xde: // bin16, ext16, str16, array16, map16
		return 2
	case 0xc6, 0xc9, 0xdb, 0xdd, 0xdf: // bin32, ext32, str32, array32, map32
		return 4
	}
	return 0
}

// item returns how many payload bytes follow the header of an item of type
// c with length field length (see lengthSize), and how many child items
// it has.
func (m *messageReader) item(c byte, length uint64) (payload uint64, children uint64, err error) {
	switch {
	case c <= 0x7f, c >= 0xe0: // positive and negative fixint
		return 0, 0, nil
	case c >= 0x80 && c <= 0x8f: // fixmap
		return 0, 2 * uint64(c&0x0f), nil
	case c >= 0x90 && c <= 0x9f: // fixarray
		return 0, uint64(c & 0x0f), nil
	case c >= 0xa0 && c <= 0xbf: // fixstr
		return uint64(c & 0x1f), 0, nil
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return 0, 0, nil
	case 0xc4, 0xd9, 0xc5, 0xda, 0xc6, 0xdb: // bin and str
		return length, 0, nil
	case 0xc7, 0xc8, 0xc9: // ext: length, then type byte
		return length + 1, 0, nil
	case 0xca: // float32
		return 4, 0, nil
	case 0xcb: // float64
		return 8, 0, nil
	case 0xcc, 0xd0: // uint8, int8
		return 1, 0, nil
	case 0xcd, 0xd1: // uint16, int16
		return 2, 0, nil
	case 0xce, 0xd2: // uint32, int32
		return 4, 0, nil
	case 0xcf, 0xd3: // uint64, int64
		return 8, 0, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 plus type byte
		return 1 + (1 << (c - 0xd4)), 0, nil
	case 0xdc, 0xdd: // array16, array32
		return 0, length, nil
	case 0xde, 0xdf: // map16, map32
		return 0, 2 * length, nil
	}
	return 0, 0, &ProtocolError{Reason: fmt.Sprintf("byte 0x%02x is not a msgpack type", c)}
}

// grow checks that n more bytes fit within the size limit.
func (m *messageReader) grow(n uint64) error {
	if n > uint64(m.maxSize) || m.size+n > uint64(m.maxSize) {
		return &ProtocolError{Reason: fmt.Sprintf("message larger than the %d-byte limit", m.maxSize)}
	}
	return nil
}

// copyPayload appends the current item's payload from the stream, growing
// the buffer a chunk at a time so memory follows the bytes received, not
// the length claimed; the payload of a refused message is discarded
// instead. What arrives before an error is kept, so the copy can resume.
// The length has been checked against the size limit.
func (m *messageReader) copyPayload() error {
	for m.payloadLeft > 0 {
		// What is buffered is taken in place; beyond it, r is read.
		here := uint64(len(m.win) - m.off)
		if m.refused != nil {
			if here > 0 {
				skip := min(here, m.payloadLeft)
				m.off += int(skip)
				m.payloadLeft -= skip
				continue
			}
			m.sync()
			n, err := m.r.Discard(int(m.payloadLeft))
			m.payloadLeft -= uint64(n)
			if err != nil {
				return m.readError(err)
			}
			continue
		}
		chunk := int(min(m.payloadLeft, readChunk))
		m.reserve(chunk)
		if here > 0 {
			take := int(min(here, uint64(chunk)))
			m.buf = append(m.buf, m.win[m.off:m.off+take]...)
			m.off += take
			m.payloadLeft -= uint64(take)
			continue
		}
		m.sync()
		start := len(m.buf)
		n, err := io.ReadFull(m.r, m.buf[start:start+chunk])
		m.buf = m.buf[:start+n]
		m.payloadLeft -= uint64(n)
		if err != nil {
			return m.readError(err)
		}
	}
	return nil
}

// reserve makes room in the buffer for chunk more bytes of the current
// payload. It grows the buffer geometrically, but never past what the
// payload still needs, so a large payload ends in a buffer of its size.
// Doubling leaves that much garbage behind (append's growth by a quarter
// left four times as much); a message the budget counts already grows
// fourfold, leaving a third of it.
func (m *messageReader) reserve(chunk int) {
	if cap(m.buf)-len(m.buf) >= chunk {
		return
	}
	grow := max(cap(m.buf), readChunk)
	if m.charged > 0 {
		grow = max(3*cap(m.buf), readChunk)
	}
	grown := make([]byte, len(m.buf), len(m.buf)+int(min(m.payloadLeft, uint64(grow))))
	copy(grown, m.buf)
	m.buf = grown
}
