package local

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// StartedLine matches the line a `shoal node` logs once it serves; its
// submatches are the gossip, RPC and HTTP addresses.
var StartedLine = regexp.MustCompile(`msg="node started" name=\S+ gossip=(\S+) rpc=(\S+) http=(\S+)`)

// NodeArgs is the command line, after the binary, of a `shoal node` named
// name on free ports of 127.0.0.1, joined through join when it is not
// empty. Gossip timing is fast, as suits one machine, unless extra sets
// --gossip-timing; extra comes last, so it wins.
func NodeArgs(name, join string, extra ...string) []string {
	args := []string{"node", "--name", name, "--gossip", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--http", "127.0.0.1:0"}
	timing := false
	for _, a := range extra {
		timing = timing || a == "--gossip-timing"
	}
	if !timing {
		args = append(args, "--gossip-timing", "fast")
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	return append(args, extra...)
}

// Node is a running `shoal node` process.
type Node struct {
	Name, Gossip, RPC, HTTP string

	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed when the process has exited
}

// StartNode runs bin (a shoal binary) as NodeArgs(name, join, extra...)
// and waits until the node serves.
func StartNode(ctx context.Context, bin, name, join string, extra ...string) (*Node, error) {
	n := &Node{Name: name, out: newTailBuffer(20), done: make(chan struct{})}
	n.cmd = exec.Command(bin, NodeArgs(name, join, extra...)...)
	n.cmd.SysProcAttr = dieWithParent()
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	n.cmd.Stdout = n.out
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("local: node %s: %w", name, err)
	}
	started := make(chan []string, 1)
	go n.readStderr(stderr, started)
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	select {
	case m := <-started:
		n.Gossip, n.RPC, n.HTTP = m[1], m[2], m[3]
		return n, nil
	case <-n.done:
		err = fmt.Errorf("exited at start: %s", n.out)
	case <-timeout.C:
		err = fmt.Errorf("did not start within %v: %s", startTimeout, n.out)
	case <-ctx.Done():
		err = ctx.Err()
	}
	n.cmd.Process.Kill()
	<-n.done
	return nil, fmt.Errorf("local: node %s: %w", name, err)
}

// readStderr keeps the last lines the node logs, reports the started line,
// and reaps the process when its output ends.
func (n *Node) readStderr(r io.Reader, started chan<- []string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		n.out.Write(append(line, '\n'))
		if started != nil {
			if m := StartedLine.FindStringSubmatch(string(line)); m != nil {
				started <- m
				started = nil
			}
		}
	}
	io.Copy(io.Discard, r)
	n.cmd.Wait()
	close(n.done)
}

// Stop asks the node to leave the grid (SIGTERM), waits up to timeout for
// it to exit, then kills it. It returns an error if the node had to be
// killed or exited with a failure.
func (n *Node) Stop(timeout time.Duration) error {
	select {
	case <-n.done:
		return n.exitErr()
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-n.done:
		return n.exitErr()
	case <-t.C:
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("local: node %s did not stop within %v and was killed", n.Name, timeout)
	}
}

func (n *Node) exitErr() error {
	if !n.cmd.ProcessState.Success() {
		return fmt.Errorf("local: node %s: %v: %s", n.Name, n.cmd.ProcessState, n.out)
	}
	return nil
}

// Memory is a process's resident memory, from /proc (Linux only).
type Memory struct {
	Resident int64 // bytes resident now (VmRSS)
	Peak     int64 // most bytes resident so far (VmHWM)
	// Anon is the part of Resident that is the process's own (RssAnon);
	// the rest is mostly pages of its binary, shared by every process
	// running it.
	Anon int64
}

// Pid is the node's process id.
func (n *Node) Pid() int { return n.cmd.Process.Pid }

// Memory reads the node's resident memory.
func (n *Node) Memory() (Memory, error) {
	return ProcessMemory(n.cmd.Process.Pid)
}

// ProcessMemory reads process pid's resident memory from
// /proc/PID/status.
func ProcessMemory(pid int) (Memory, error) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, fmt.Errorf("local: resident memory: %w", err)
	}
	var m Memory
	for _, line := range bytes.Split(status, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var field *int64
		switch string(name) {
		case "VmRSS":
			field = &m.Resident
		case "VmHWM":
			field = &m.Peak
		case "RssAnon":
			field = &m.Anon
		default:
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(value), []byte(" kB"))), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("local: resident memory: %s: %q", name, value)
		}
		*field = kb << 10
	}
	if m.Resident == 0 {
		return Memory{}, fmt.Errorf("local: resident memory: no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// WatchPeak follows process pid's peak resident memory (VmHWM) while it
// runs, reading it every few milliseconds; the returned stop function ends
// the watch and returns the highest peak read, in bytes (0 where /proc
// does not say). Stop it once the process has finished its work but before
// it is waited for, so that the last read sees it all. A child's
// getrusage ru_maxrss is no substitute: Go starts children with
// CLONE_VM, and the kernel counts the parent's peak into the child's at
// exec.
func WatchPeak(pid int) (stop func() int64) {
	var mu sync.Mutex
	var peak int64
	read := func() {
		if m, err := ProcessMemory(pid); err == nil {
			mu.Lock()
			peak = max(peak, m.Peak)
			mu.Unlock()
		}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			read()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		read()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}
