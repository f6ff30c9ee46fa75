//go:build unix

package bench

import (
	"os"
	"runtime"
	"syscall"
)

// peakRSS returns an exited process's peak resident memory in bytes, from
// getrusage's ru_maxrss: kilobytes on Linux, bytes on macOS.
func peakRSS(ps *os.ProcessState) int64 {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss)
	}
	return int64(ru.Maxrss) << 10
}
