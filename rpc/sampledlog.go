package rpc

import (
	"sync"
	"time"
)

// sampledLogInterval spaces the lines of one kind that anyone who reaches
// the port can cause (bytes that are not msgpack-rpc, notifications that
// fail): a line per event would let a stranger flood the log.
const sampledLogInterval = 10 * time.Second

// sampledLog lets the first line of its kind through at once and then at
// most one per sampledLogInterval, counting the ones it holds back.
type sampledLog struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

// allow reports whether a line may be written now and, if so, how many
// were held back since the last one written.
func (l *sampledLog) allow() (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.last) >= sampledLogInterval {
		l.last, skipped, l.skipped = now, l.skipped, 0
		return true, skipped
	}
	l.skipped++
	return false, 0
}
