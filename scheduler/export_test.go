package scheduler

import "sync/atomic"

// CountTurns counts the turns of every job's loop until the returned stop
// is called: a loop that turns without news is spinning. Set it before the
// job starts and stop it after Run returns.
func CountTurns() (turns func() int64, stop func()) {
	var n atomic.Int64
	turnHook = func() { n.Add(1) }
	return n.Load, func() { turnHook = nil }
}
