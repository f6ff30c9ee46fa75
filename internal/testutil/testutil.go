// Package testutil holds the helpers Shoal's tests share: building the
// shoal binary once, running it as a real process, and awaiting what it
// prints.
package testutil

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

var build struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string // package to binary
}

// Main runs a package's tests and removes what the helpers left behind.
// Call it from TestMain: os.Exit(testutil.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// ShoalBinary builds ./cmd/shoal once per test process and returns its path.
func ShoalBinary(t testing.TB) string {
	t.Helper()
	return Build(t, "github.com/shoalgrid/shoal/cmd/shoal")
}

// PlainShoalBinary builds ./cmd/shoal once per test process as the
// container image has it (static, CGO_ENABLED=0, -trimpath), without the
// race detector, for tests that time what a grid does (how soon a lost
// node is noticed, how long a job takes), which the detector's slowdown
// would distort, and returns its path. Built as scripts/image.sh builds
// it, the build cache serves both.
func PlainShoalBinary(t testing.TB) string {
	t.Helper()
	return build1(t, "github.com/shoalgrid/shoal/cmd/shoal", false)
}

// Build builds the main package pkg once per test process (with the race
// detector when the tests have it) and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	return build1(t, pkg, raceEnabled)
}

// build1 builds pkg with the race detector, or else static.
func build1(t testing.TB, pkg string, race bool) string {
	t.Helper()
	build.mu.Lock()
	defer build.mu.Unlock()
	key := pkg
	if !race {
		key += " (static)"
	}
	if bin, ok := build.bins[key]; ok {
		return bin
	}
	if build.dir == "" {
		dir, err := os.MkdirTemp("", "shoal-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		build.dir, build.bins = dir, make(map[string]string)
	}
	bin := filepath.Join(build.dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-race", "-o", bin, pkg)
	if !race {
		bin += "-static"
		cmd = exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	build.bins[key] = bin
	return bin
}

// GoBuild runs go build with args, with the race detector when the tests
// run with it (so that it shares their build cache), and returns its
// combined output.
func GoBuild(args ...string) ([]byte, error) {
	if raceEnabled {
		args = append([]string{"-race"}, args...)
	}
	return exec.Command("go", append([]string{"build"}, args...)...).CombinedOutput()
}

// Process is a command started by Start. Its stderr is read line by line so
// tests can await what it logs.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout LogBuffer // read while the process writes

	mu     sync.Mutex
	lines  []string
	notify chan struct{} // closed and replaced when a line arrives
	done   chan struct{} // closed when the process has exited
	err    error
}

// Start runs name with args and kills it, if still running, when the test
// ends.
func Start(t testing.TB, env []string, name string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, cmd: exec.Command(name, args...), notify: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.readStderr(stderr)
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", filepath.Base(name), p.Stderr())
		}
	})
	return p
}

func (p *Process) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	err := p.cmd.Wait()
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	close(p.done)
}

// WaitForLine waits until a line of stderr matches pattern and returns the
// pattern's submatches in it. It fails the test if the process exits or
// the time runs out first.
func (p *Process) WaitForLine(pattern string, timeout time.Duration) []string {
	p.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if m := re.FindStringSubmatch(p.lines[seen]); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		notify := p.notify
		p.mu.Unlock()
		select {
		case <-notify:
		case <-p.done:
			p.mu.Lock()
			more := seen < len(p.lines)
			p.mu.Unlock()
			if !more {
				p.t.Fatalf("process exited before printing a line matching %q", pattern)
			}
		case <-deadline:
			p.t.Fatalf("no line matching %q within %v", pattern, timeout)
		}
	}
}

// Pid returns the process id, to read the process's own figures in /proc.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Wait waits for the process to exit and returns its exit status.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("process still running after %v", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// Stdout returns what the process has printed on stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the process has printed on stderr so far.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b bytes.Buffer
	for _, l := range p.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// Run runs a command to completion and returns its stdout, stderr and exit
// status.
func Run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := Start(t, env, name, args...)
	code = p.Wait(timeout)
	return p.Stdout(), p.Stderr(), code
}
