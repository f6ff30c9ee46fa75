package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// How settle tells the processes are idle: they used less than
// settleBusy of CPU, all together, in the last settleWindow; it waits at
// most settleMax.
const (
	settleWindow = 25 * time.Millisecond
	settleBusy   = 2500 * time.Microsecond
	settleMax    = 5 * time.Second
)

// settle waits until the processes pids have finished what the last job
// left them (a node's cache writes and garbage collection go on after it
// replies), so that the next thing timed does not pay for them.
func settle(ctx context.Context, pids []int) {
	if len(pids) == 0 {
		return
	}
	deadline := time.Now().Add(settleMax)
	last := cpuTimes(pids)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(settleWindow)
		now := cpuTimes(pids)
		if used := now - last; used >= 0 && used < settleBusy {
			return
		}
		last = now
	}
}

// cpuTimes is the CPU time every thread of the processes has used, from
// /proc/PID/task/TID/schedstat (nanoseconds, unlike /proc/PID/stat's
// clock ticks). Threads that end in between are missed, so it may go
// down; processes that cannot be read count nothing.
func cpuTimes(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "schedstat"))
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			if err != nil {
				continue
			}
			first, _, _ := strings.Cut(string(b), " ")
			if ns, err := strconv.ParseInt(first, 10, 64); err == nil {
				total += time.Duration(ns)
			}
		}
	}
	return total
}
