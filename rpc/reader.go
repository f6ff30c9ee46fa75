package rpc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
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
type messageReader struct {
	r        *bufio.Reader
	maxSize  int
	maxDepth int
	buf      []byte
	pending  []uint64 // items still to read, one entry per open container
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

// release drops an oversized buffer after its message has been used.
func (m *messageReader) release() {
	if cap(m.buf) > keepBuffer {
		m.buf = nil
	}
}

// next returns the raw bytes of the next message. The slice is valid until
// the following call. io.EOF means the stream ended cleanly between
// messages; a *ProtocolError means the bytes broke a rule or a bound.
func (m *messageReader) next() ([]byte, error) {
	m.buf = m.buf[:0]
	m.pending = append(m.pending[:0], 1)
	for len(m.pending) > 0 {
		c, err := m.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(m.buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if err := m.grow(1); err != nil {
			return nil, err
		}
		m.buf = append(m.buf, c)

		payload, children, err := m.item(c)
		if err != nil {
			return nil, err
		}
		if err := m.copyN(payload); err != nil {
			return nil, err
		}
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
		}
		for len(m.pending) > 0 && m.pending[len(m.pending)-1] == 0 {
			m.pending = m.pending[:len(m.pending)-1]
		}
	}
	return m.buf, nil
}

// item reads the rest of the header of the item that starts with code c and
// returns how many payload bytes follow it and how many child items it has.
func (m *messageReader) item(c byte) (payload uint64, children uint64, err error) {
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
	case 0xc4, 0xd9: // bin8, str8
		n, err := m.length(1)
		return n, 0, err
	case 0xc5, 0xda: // bin16, str16
		n, err := m.length(2)
		return n, 0, err
	case 0xc6, 0xdb: // bin32, str32
		n, err := m.length(4)
		return n, 0, err
	case 0xc7: // ext8: length, then type byte
		n, err := m.length(1)
		return n + 1, 0, err
	case 0xc8: // ext16
		n, err := m.length(2)
		return n + 1, 0, err
	case 0xc9: // ext32
		n, err := m.length(4)
		return n + 1, 0, err
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
	case 0xdc: // array16
		n, err := m.length(2)
		return 0, n, err
	case 0xdd: // array32
		n, err := m.length(4)
		return 0, n, err
	case 0xde: // map16
		n, err := m.length(2)
		return 0, 2 * n, err
	case 0xdf: // map32
		n, err := m.length(4)
		return 0, 2 * n, err
	}
	return 0, 0, &ProtocolError{Reason: fmt.Sprintf("byte 0x%02x is not a msgpack type", c)}
}

// length reads a big-endian length field of size bytes into the buffer.
func (m *messageReader) length(size int) (uint64, error) {
	if err := m.copyN(uint64(size)); err != nil {
		return 0, err
	}
	b := m.buf[len(m.buf)-size:]
	switch size {
	case 1:
		return uint64(b[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(b)), nil
	default:
		return uint64(binary.BigEndian.Uint32(b)), nil
	}
}

// grow checks that n more bytes fit within the size limit.
func (m *messageReader) grow(n uint64) error {
	if n > uint64(m.maxSize) || uint64(len(m.buf))+n > uint64(m.maxSize) {
		return &ProtocolError{Reason: fmt.Sprintf("message larger than the %d-byte limit", m.maxSize)}
	}
	return nil
}

// copyN appends n bytes from the stream, growing the buffer a chunk at a
// time so memory follows the bytes received, not the length claimed.
func (m *messageReader) copyN(n uint64) error {
	if n == 0 {
		return nil
	}
	if err := m.grow(n); err != nil {
		return err
	}
	for n > 0 {
		chunk := int(min(n, readChunk))
		m.buf = slices.Grow(m.buf, chunk)
		start := len(m.buf)
		m.buf = m.buf[:start+chunk]
		if _, err := io.ReadFull(m.r, m.buf[start:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= uint64(chunk)
	}
	return nil
}
