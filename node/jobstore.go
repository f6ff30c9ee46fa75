package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/scheduler"
)

// resultStore keeps a job's results on disk, in input order, so that a
// job of any size holds no more of them in memory than one page being
// read: results.bin holds each result's msgpack encoding (a
// grid.JobResult), index.bin each result's offset in it, 8 bytes each.
type resultStore struct {
	// mu is held for reading while a read uses the files, so that the
	// job's end cannot close them under it.
	mu      sync.RWMutex
	dir     string
	results *os.File // nil once the job has ended: reads open the files
	index   *os.File
	count   int64 // results stored
	size    int64 // bytes of results.bin
	enc     *msgpack.Encoder
	buf     []byte
	offsets []byte
}

func newResultStore(dir string) (*resultStore, error) {
	results, err := os.OpenFile(filepath.Join(dir, "results.bin"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	index, err := os.OpenFile(filepath.Join(dir, "index.bin"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		results.Close()
		return nil, err
	}
	return &resultStore{dir: dir, results: results, index: index}, nil
}

// bufferWriter lets the encoder append to the store's buffer.
type bufferWriter struct{ b *[]byte }

func (w bufferWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// append stores a batch of results, which must continue in input order
// where the last batch ended.
func (s *resultStore) append(batch []scheduler.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enc == nil {
		s.enc = msgpack.NewEncoder(bufferWriter{&s.buf})
	}
	s.buf, s.offsets = s.buf[:0], s.offsets[:0]
	for _, r := range batch {
		if int64(r.Index) != s.count+int64(len(s.offsets)/8) {
			return fmt.Errorf("node: result %d stored out of order, after %d", r.Index, s.count+int64(len(s.offsets)/8)-1)
		}
		s.offsets = binary.LittleEndian.AppendUint64(s.offsets, uint64(s.size+int64(len(s.buf))))
		jr := grid.JobResult{Index: int64(r.Index), Value: r.Value, Node: r.Node, Attempts: r.Attempts, Cached: r.Cached}
		if r.Err != nil {
			jr.Value = nil
			jr.Error = jobError(r.Err)
		}
		if err := s.enc.Encode(&jr); err != nil {
			return err
		}
	}
	if _, err := s.results.WriteAt(s.buf, s.size); err != nil {
		return err
	}
	if _, err := s.index.WriteAt(s.offsets, s.count*8); err != nil {
		return err
	}
	s.size += int64(len(s.buf))
	s.count += int64(len(batch))
	return nil
}

// stored returns how many results the store holds.
func (s *resultStore) stored() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.count
}

// read returns the encoded results from index from on, at most max of
// them and, beyond the first, at most maxBytes of them.
func (s *resultStore) read(from int64, max int, maxBytes int) ([]msgpack.RawMessage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	count, size, results, index := s.count, s.size, s.results, s.index
	if from < 0 || from >= count || max <= 0 {
		return nil, nil
	}
	if results == nil {
		// The job has ended, and its files are open only while read: a
		// node keeping many ended jobs holds no descriptors for them.
		var err error
		if results, err = os.Open(filepath.Join(s.dir, "results.bin")); err != nil {
			return nil, err
		}
		defer results.Close()
		if index, err = os.Open(filepath.Join(s.dir, "index.bin")); err != nil {
			return nil, err
		}
		defer index.Close()
	}
	n := min(int64(max), count-from)
	offsets := make([]byte, 8*(n+1))
	if _, err := index.ReadAt(offsets[:8*n], from*8); err != nil {
		return nil, err
	}
	end := size
	if from+n < count {
		if _, err := index.ReadAt(offsets[8*n:], (from+n)*8); err != nil {
			return nil, err
		}
		end = int64(binary.LittleEndian.Uint64(offsets[8*n:]))
	} else {
		binary.LittleEndian.PutUint64(offsets[8*n:], uint64(size))
	}
	start := int64(binary.LittleEndian.Uint64(offsets))
	// Cut at maxBytes, keeping at least one result.
	for n > 1 && end-start > int64(maxBytes) {
		n = max64(1, n/2)
		end = int64(binary.LittleEndian.Uint64(offsets[8*n:]))
	}
	data := make([]byte, end-start)
	if _, err := results.ReadAt(data, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	out := make([]msgpack.RawMessage, n)
	for i := range out {
		a := int64(binary.LittleEndian.Uint64(offsets[8*i:])) - start
		b := int64(binary.LittleEndian.Uint64(offsets[8*(i+1):])) - start
		out[i] = data[a:b]
	}
	return out, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// close closes the files the job wrote to; reads go on, opening them.
func (s *resultStore) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.results == nil {
		return nil
	}
	err := errors.Join(s.results.Close(), s.index.Close())
	s.results, s.index = nil, nil
	return err
}

// inputSpool keeps the inputs appended to a job on disk until the job
// takes them, so that a client may send them faster than the grid runs
// them without the coordinator holding them in memory. Each input is
// stored as its length (uvarint) and its encoded argument array.
type inputSpool struct {
	mu      sync.Mutex
	file    *os.File
	written int64 // bytes appended
	count   int64 // inputs appended
	closed  bool  // no more inputs will come
	lastAdd time.Time
	ready   chan struct{}

	// Read by the job's goroutine only.
	readOff int64
	buf     []byte // file bytes from bufOff on
	bufOff  int64
}

func newInputSpool(dir string) (*inputSpool, error) {
	f, err := os.OpenFile(filepath.Join(dir, "inputs.bin"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &inputSpool{file: f, ready: make(chan struct{}, 1), lastAdd: time.Now()}, nil
}

// add appends inputs, each an encoded argument array, and returns the
// number of inputs the spool has had in all.
func (s *inputSpool) add(inputs []msgpack.RawMessage) (int64, error) {
	var b []byte
	for _, in := range inputs {
		b = binary.AppendUvarint(b, uint64(len(in)))
		b = append(b, in...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.count, errors.New("the job's inputs are closed")
	}
	s.lastAdd = time.Now()
	if _, err := s.file.WriteAt(b, s.written); err != nil {
		return s.count, err
	}
	s.written += int64(len(b))
	s.count += int64(len(inputs))
	s.wake()
	return s.count, nil
}

// abandoned reports whether the inputs are still open and nothing was
// added for longer than timeout.
func (s *inputSpool) abandoned(now time.Time, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && now.Sub(s.lastAdd) > timeout
}

// close ends the inputs and returns their number.
func (s *inputSpool) close() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.wake()
	return s.count
}

func (s *inputSpool) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is the scheduler's signal that Next may have an item.
func (s *inputSpool) Ready() <-chan struct{} { return s.ready }

// Next appends the next input to buf.
func (s *inputSpool) Next(buf []byte) ([]byte, error) {
	s.mu.Lock()
	written, closed := s.written, s.closed
	s.mu.Unlock()
	if s.readOff >= written {
		if closed {
			return buf, io.EOF
		}
		return buf, scheduler.ErrNotReady
	}
	head, err := s.at(s.readOff, binary.MaxVarintLen64, written)
	if err != nil {
		return buf, err
	}
	n, k := binary.Uvarint(head)
	if k <= 0 {
		return buf, errors.New("node: corrupt input spool")
	}
	item, err := s.at(s.readOff+int64(k), int(n), written)
	if err != nil {
		return buf, err
	}
	if int64(len(item)) < int64(n) {
		return buf, errors.New("node: corrupt input spool")
	}
	s.readOff += int64(k) + int64(n)
	return append(buf, item...), nil
}

// at returns up to n bytes of the file from off, not past written,
// reading ahead in blocks.
func (s *inputSpool) at(off int64, n int, written int64) ([]byte, error) {
	if off < s.bufOff || off+int64(n) > s.bufOff+int64(len(s.buf)) {
		size := min(max(int64(n), 256<<10), written-off)
		if cap(s.buf) < int(size) {
			s.buf = make([]byte, size)
		}
		s.buf = s.buf[:size]
		if _, err := s.file.ReadAt(s.buf, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		s.bufOff = off
	}
	start := off - s.bufOff
	end := min(start+int64(n), int64(len(s.buf)))
	return s.buf[start:end], nil
}

// release closes the spool and removes its file: the job has taken every
// input it will.
func (s *inputSpool) release() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := errors.Join(s.file.Close(), os.Remove(s.file.Name()))
	s.file, s.closed = nil, true // a late append is told the inputs are closed
	return err
}
