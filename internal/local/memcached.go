// Package local starts the processes a grid on one machine runs on:
// memcached servers and `shoal node` processes, on free ports of
// 127.0.0.1. The demo, the benchmarks and the tests share it. Every
// process it starts is stopped by its Stop, and on Linux is killed too if
// the process that started it dies.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// ErrNoMemcached means there is no memcached binary on the PATH.
var ErrNoMemcached = errors.New("local: memcached is not on the PATH (apt-get install -y memcached)")

// startTimeout bounds how long a process may take to start serving.
const startTimeout = 30 * time.Second

// Memcached is a memcached server on a free port of 127.0.0.1, TCP only.
// Stop and Start restart it on the same port, empty.
type Memcached struct {
	Addr string // host:port

	bin  string
	args []string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
}

// NewMemcached prepares, without starting it, a memcached of memoryMB
// megabytes on a free port, with extra command-line args (for example
// "-I", "512k"). It returns ErrNoMemcached when there is none to run.
func NewMemcached(memoryMB int, extra ...string) (*Memcached, error) {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		return nil, ErrNoMemcached
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", strconv.Itoa(memoryMB)}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise
	}
	return &Memcached{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bin: bin, args: append(args, extra...)}, nil
}

// StartMemcached starts a memcached of memoryMB megabytes on a free port.
func StartMemcached(ctx context.Context, memoryMB int, extra ...string) (*Memcached, error) {
	m, err := NewMemcached(memoryMB, extra...)
	if err != nil {
		return nil, err
	}
	return m, m.Start(ctx)
}

// Start starts the server, or starts it again after Stop, and waits until
// it accepts connections.
func (m *Memcached) Start(ctx context.Context) error {
	if m.cmd != nil {
		return fmt.Errorf("local: memcached on %s is already running", m.Addr)
	}
	m.out = newTailBuffer(20)
	m.cmd = exec.Command(m.bin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = dieWithParent()
	if err := m.cmd.Start(); err != nil {
		m.cmd = nil
		return fmt.Errorf("local: memcached: %w", err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(m.cmd, m.done)
	err := poll(ctx, startTimeout, func() (bool, error) {
		select {
		case <-m.done:
			return false, fmt.Errorf("exited at start: %s", m.out)
		default:
		}
		c, err := net.DialTimeout("tcp", m.Addr, 100*time.Millisecond)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		m.Stop()
		return fmt.Errorf("local: memcached on %s: %w", m.Addr, err)
	}
	return nil
}

// Stop kills the server and waits for it to exit. It does nothing when the
// server is not running.
func (m *Memcached) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// String names the server in messages.
func (m *Memcached) String() string { return "memcached " + m.Addr }

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// poll calls check every few milliseconds until it reports done or an
// error, ctx ends, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := check()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("not ready within %v", timeout)
		case <-tick.C:
		}
	}
}

// tailBuffer keeps the last lines written to it, for error messages about
// a process that failed.
type tailBuffer struct {
	mu    sync.Mutex // String may be called while a process writes
	max   int
	lines [][]byte
	part  []byte
}

func newTailBuffer(max int) *tailBuffer {
	return &tailBuffer{max: max}
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.part = append(b.part, p...)
	for {
		i := bytes.IndexByte(b.part, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, append([]byte(nil), b.part[:i]...))
		b.part = b.part[i+1:]
		if len(b.lines) > b.max {
			b.lines = b.lines[1:]
		}
	}
	return len(p), nil
}

// String returns the kept lines, or "no output".
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	all := bytes.Join(append(b.lines, b.part), []byte("\n"))
	if len(bytes.TrimSpace(all)) == 0 {
		return "no output"
	}
	return string(bytes.TrimSpace(all))
}
