package rpc

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// maxPendingWrite is how many bytes may wait for the socket before writers
// block; it bounds memory when the peer reads slowly.
const maxPendingWrite = 4 << 20

// connWriter coalesces messages written by many goroutines. A writer that
// finds no flush under way becomes the flusher: it writes whatever has
// accumulated, in a loop, until nothing is left; writers that arrive
// meanwhile only append. So one caller at a time pays one syscall with no
// hand-off to another goroutine, and many callers share syscalls. A
// flusher that expects company (other calls in flight on the connection)
// first yields once, so that other ready writers can append before its
// syscall; one alone does not, as yielding wakes an idle thread for
// nothing.
type connWriter struct {
	conn          net.Conn
	timeout       time.Duration
	deadlineMoved time.Time // touched only by the flusher

	mu       sync.Mutex
	space    sync.Cond // signalled when pending shrinks or the writer fails
	pending  []byte
	spare    []byte
	flushing bool
	err      error
}

func newConnWriter(conn net.Conn, timeout time.Duration) *connWriter {
	w := &connWriter{conn: conn, timeout: timeout}
	w.space.L = &w.mu
	return w
}

// write queues msg and returns once it has been written or handed to the
// goroutine that is writing. company says other writers are likely to
// come soon (other calls are in flight), worth yielding for. The first
// write error is returned to every later caller; the owner should then
// close the connection.
func (w *connWriter) write(msg []byte, company bool) error {
	w.mu.Lock()
	// A message larger than the pending bound is written from the
	// caller's buffer, not copied: its writer waits to be the flusher.
	own := len(msg) > maxPendingWrite
	for w.err == nil && (own && w.flushing || len(w.pending) > 0 && len(w.pending)+len(msg) > maxPendingWrite) {
		w.space.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if !own {
		w.pending = append(w.pending, msg...)
		if w.flushing {
			w.mu.Unlock()
			return nil
		}
	}
	w.flushing = true
	if company {
		// Let goroutines that are ready to write (callers woken by
		// replies, handlers that just finished) append before the
		// syscall: under load it puts many messages in one write. Alone
		// it would cost a thread woken for nothing: runtime.Gosched
		// wakes an idle one to run whatever is ready.
		w.mu.Unlock()
		runtime.Gosched()
		w.mu.Lock()
	}
	for (len(w.pending) > 0 || own) && w.err == nil {
		// What others queued first, then the caller's own message.
		buf, pending := w.pending, len(w.pending) > 0
		if pending {
			w.pending = w.spare[:0]
		} else {
			buf, own = msg, false
		}
		w.mu.Unlock()
		err := w.writeOut(buf)
		w.mu.Lock()
		if pending {
			if cap(buf) <= keepBuffer {
				w.spare = buf[:0]
			} else {
				w.spare = nil
			}
		}
		if err != nil {
			w.err = err
		}
		w.space.Broadcast()
	}
	w.flushing = false
	w.space.Broadcast()
	err := w.err
	w.mu.Unlock()
	return err
}

// writeOut writes buf with the deadline at least seven eighths of the
// timeout away; moving it costs a timer update, so it is moved only when an
// eighth of the timeout has passed. Only the flusher calls it.
func (w *connWriter) writeOut(buf []byte) error {
	if w.timeout > 0 {
		if now := time.Now(); now.Sub(w.deadlineMoved) > w.timeout/8 {
			if err := w.conn.SetWriteDeadline(now.Add(w.timeout)); err != nil {
				return err
			}
			w.deadlineMoved = now
		}
	}
	_, err := w.conn.Write(buf)
	return err
}

// flushed waits until everything queued has been written or writing failed.
func (w *connWriter) flushed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && (w.flushing || len(w.pending) > 0) {
		w.space.Wait()
	}
	return w.err
}
