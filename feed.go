package shoal

import (
	"fmt"
	"io"
	"iter"
	"sync"

	"github.com/shoalgrid/shoal/scheduler"
)

// feedBytes bounds the encoded inputs a feed holds ahead of the job, in
// each of its two buffers.
const feedBytes = 64 << 10

// feed is the job's source for inputs given as an iter.Seq: a goroutine
// ranges over the sequence and encodes each input into the feed's
// buffer, at most feedBytes ahead; the job takes the whole buffer at once
// and hands back the one it has read, so that the lock is taken once per
// input by the goroutine and once per buffer by the job. The goroutine
// may wait for its inputs as long as it likes: the job is a
// scheduler.Waiter's, and goes on with the nodes' answers meanwhile.
type feed struct {
	mu      sync.Mutex
	space   sync.Cond     // signalled when the job takes the buffer, or stops
	buf     []byte        // inputs encoded and not yet taken
	ends    []int         // where each of them ends in buf
	end     error         // io.EOF once the inputs ended, or why they failed
	waiting bool          // the job found nothing and waits for ready
	stopped bool          // the job is over: encode no more
	ready   chan struct{} // one wake-up for the job

	// The job's side: the buffer it took, and how far it has read it.
	taken     []byte
	takenEnds []int
	next      int // the next input in taken

	// The goroutine's side.
	done     chan struct{} // closed when it has returned
	panicked any           // what inputs panicked with, if it did
}

// startFeed starts a goroutine encoding inputs into a new feed.
func startFeed[In any](inputs iter.Seq[In]) *feed {
	f := &feed{ready: make(chan struct{}, 1), done: make(chan struct{})}
	f.space.L = &f.mu
	go func() {
		defer close(f.done)
		defer func() {
			if p := recover(); p != nil {
				f.panicked = p
				f.finish(fmt.Errorf("the inputs panicked: %v", p))
			}
		}()
		var enc argEncoder
		for in := range inputs {
			if !put(f, &enc, &in) {
				return
			}
		}
		f.finish(io.EOF)
	}()
	return f
}

// put encodes one input into the buffer, waiting while the buffer is
// full; it reports false when the feed wants no more.
func put[In any](f *feed, enc *argEncoder, in *In) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.buf) >= feedBytes && !f.stopped {
		f.space.Wait()
	}
	if f.stopped || f.end != nil {
		return false
	}
	n := len(f.buf)
	out, err := appendInput(enc, f.buf, in)
	if err != nil {
		f.buf = out[:n]
		f.end = err
	} else {
		f.buf = out
		f.ends = append(f.ends, len(out))
	}
	f.wake()
	return err == nil
}

// finish records the end of the inputs, or why they failed.
func (f *feed) finish(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.end == nil {
		f.end = err
	}
	f.wake()
}

// wake tells a waiting job there is news; f.mu is held.
func (f *feed) wake() {
	if f.waiting {
		f.waiting = false
		select {
		case f.ready <- struct{}{}:
		default:
		}
	}
}

// Next is scheduler.Source's: it never waits.
func (f *feed) Next(buf []byte) ([]byte, error) {
	if f.next == len(f.takenEnds) {
		// The job has read the buffer it took: hand it back for the next
		// inputs, and take the one filled meanwhile.
		f.mu.Lock()
		if len(f.buf) == 0 {
			err := f.end
			if err == nil {
				f.waiting = true
				err = scheduler.ErrNotReady
			}
			f.mu.Unlock()
			return buf, err
		}
		f.taken, f.buf = f.buf, f.taken[:0]
		f.takenEnds, f.ends = f.ends, f.takenEnds[:0]
		f.next = 0
		f.space.Signal()
		f.mu.Unlock()
	}
	start := 0
	if f.next > 0 {
		start = f.takenEnds[f.next-1]
	}
	f.next++
	return append(buf, f.taken[start:f.takenEnds[f.next-1]]...), nil
}

// Ready is scheduler.Waiter's.
func (f *feed) Ready() <-chan struct{} { return f.ready }

// close stops the goroutine at its next input and waits for it to return;
// a panic in the inputs is raised again here.
func (f *feed) close() {
	f.mu.Lock()
	f.stopped = true
	f.space.Broadcast()
	f.mu.Unlock()
	<-f.done
	if f.panicked != nil {
		panic(f.panicked)
	}
}
