package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Memcached is a memcached process started for a test on 127.0.0.1.
type Memcached struct {
	t    testing.TB
	Addr string // host:port
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMemcached starts memcached on a free port (TCP only), with extra
// command-line args (for example "-I", "512k"), and stops it when the test
// ends. Without a memcached binary the test is skipped, unless
// SHOAL_REQUIRE_MEMCACHED=1 (as CI sets), when it fails.
func StartMemcached(t testing.TB, extra ...string) *Memcached {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if os.Getenv("SHOAL_REQUIRE_MEMCACHED") == "1" {
			t.Fatal("memcached is not installed and SHOAL_REQUIRE_MEMCACHED=1: apt-get install -y memcached")
		}
		t.Skip("memcached is not installed; apt-get install -y memcached (scripts/test.sh does) to run this test")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise
	}
	m := &Memcached{t: t, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), args: append(append(args, extra...), bin)}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Start (re)starts the process on the same port and waits until it accepts
// connections.
func (m *Memcached) Start() {
	m.t.Helper()
	bin := m.args[len(m.args)-1]
	m.cmd = exec.Command(bin, m.args[:len(m.args)-1]...)
	m.done = make(chan struct{})
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(m.cmd, m.done)
	WaitFor(m.t, 10*time.Second, "memcached on "+m.Addr, func() bool {
		select {
		case <-m.done:
			m.t.Fatalf("memcached on %s exited at start", m.Addr)
		default:
		}
		c, err := net.DialTimeout("tcp", m.Addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// Stop kills the process and waits for it; it may be started again.
func (m *Memcached) Stop() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// String names the server for test messages.
func (m *Memcached) String() string { return fmt.Sprintf("memcached %s", m.Addr) }
