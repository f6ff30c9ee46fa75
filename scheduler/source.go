package scheduler

import (
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// Source gives a job its items, in order, one at a time, as the job has
// room for them: a job holds only its window of items, never the whole
// input.
type Source interface {
	// Next appends the next item's encoded argument array (a msgpack
	// array) to buf and returns the longer buf. At the end it returns
	// io.EOF. A Waiter returns ErrNotReady when its next item is not
	// ready yet. Any other error ends the job: Run returns it as an
	// *InputError naming the item's index. What Next appended before
	// failing is discarded.
	//
	// Next runs on the job's goroutine, between handling the nodes'
	// answers: it must not wait for its item. A source that may have to
	// wait (reading a pipe, fed by another goroutine) is a Waiter.
	Next(buf []byte) ([]byte, error)
}

// Waiter is a Source whose next item may not be ready when the job asks
// for it: Next then returns ErrNotReady, and the job goes on with the
// items it has until Ready says there may be more.
type Waiter interface {
	Source
	// Ready returns a channel that receives once Next may have an item,
	// or its end, after it returned ErrNotReady.
	Ready() <-chan struct{}
}

// ErrNotReady is what a Waiter's Next returns when its next item is not
// ready yet.
var ErrNotReady = errors.New("scheduler: no item ready yet")

// InputError is Run's error when the source failed to give an item: an
// input that cannot be encoded, say, or input that cannot be read. The
// items before it were run.
type InputError struct {
	Index int // the position the item would have had
	Err   error
}

func (e *InputError) Error() string { return fmt.Sprintf("input %d: %v", e.Index, e.Err) }

// Unwrap returns the source's error.
func (e *InputError) Unwrap() error { return e.Err }

// Encoded is a Source of items encoded already, each the msgpack encoding
// of an argument array.
func Encoded(items []msgpack.RawMessage) Source { return &encodedSource{items: items} }

type encodedSource struct {
	items []msgpack.RawMessage
	next  int
}

func (s *encodedSource) Next(buf []byte) ([]byte, error) {
	if s.next >= len(s.items) {
		return buf, io.EOF
	}
	s.next++
	return append(buf, s.items[s.next-1]...), nil
}
