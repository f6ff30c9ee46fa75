//go:build unix

package main

import (
	"math"
	"syscall"
)

// raiseOpenFileLimit raises the soft limit on open files to the hard
// limit, for the RPC connections --max-conns is derived from. Go's runtime
// already raises it as the process starts (syscall's init, since Go
// 1.19), but to one below the hard limit, so that it can tell a later
// prlimit from its own change; this takes the last one too. An unlimited
// hard limit (macOS) is left alone: the runtime has gone as far as the
// system allows. It returns the soft limit before and after, and the hard
// limit.
func raiseOpenFileLimit() (before, after, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, 0, err
	}
	before, hard = uint64(l.Cur), uint64(l.Max)
	if before >= hard || hard > math.MaxInt32 {
		return before, before, hard, nil
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return before, before, hard, err
	}
	return before, hard, hard, nil
}
