package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// EchoServerFlag is the hidden flag of `shoal bench` that makes it serve
// the rpc scenario's echo servers, as ServeEchoProcess does, instead of
// measuring: it is for the bench to start, not for people.
const EchoServerFlag = "rpc-echo-server"

// EchoServerArgs is the command line, after the shoal binary, of the rpc
// scenario's separate process.
var EchoServerArgs = []string{"bench", "--" + EchoServerFlag}

// echoReadyPrefix starts the line a child prints once its servers listen,
// followed by their addresses as a JSON object keyed by system.
const echoReadyPrefix = "rpc echo servers: "

// echoStartTimeout bounds how long a child may take to print its
// addresses.
const echoStartTimeout = 30 * time.Second

// ServeEchoProcess is the child's side of the rpc scenario's separate
// process: it serves Shoal's echo (Inline and not), net/rpc's and a raw
// TCP echo on 127.0.0.1, prints their addresses to out as one line, and
// serves until in ends (the parent closed it, or died) or ctx ends.
func ServeEchoProcess(ctx context.Context, in io.Reader, out io.Writer) error {
	addrs := make(map[string]string)
	var stops []func() error
	stopAll := func() error {
		var errs []error
		for _, stop := range stops {
			errs = append(errs, stop())
		}
		return errors.Join(errs...)
	}
	for _, system := range rpcSystems {
		addr, stop, err := serveEcho(system)
		if err != nil {
			stopAll()
			return err
		}
		addrs[system] = addr
		stops = append(stops, stop)
	}
	line, err := json.Marshal(addrs)
	if err != nil {
		stopAll()
		return err
	}
	if _, err := fmt.Fprintf(out, "%s%s\n", echoReadyPrefix, line); err != nil {
		stopAll()
		return err
	}
	ended := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in)
		close(ended)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
	}
	return stopAll()
}

// echoProcess is a child process serving the rpc scenario's echo servers.
type echoProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer // what the child said, for errors; written until it exits
	exited chan struct{}
	addrs  map[string]string
}

// startEchoProcess runs bin (a shoal binary) as EchoServerArgs and waits
// for the addresses of its servers.
func startEchoProcess(ctx context.Context, bin string) (*echoProcess, error) {
	p := &echoProcess{cmd: exec.Command(bin, EchoServerArgs...), exited: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p.stdin = stdin
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: rpc echo process: %w", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), echoReadyPrefix); ok {
				ready <- line
				break
			}
		}
		io.Copy(io.Discard, stdout)
		p.cmd.Wait()
		close(p.exited)
	}()
	timeout := time.NewTimer(echoStartTimeout)
	defer timeout.Stop()
	select {
	case line := <-ready:
		if err := json.Unmarshal([]byte(line), &p.addrs); err != nil {
			p.Close()
			return nil, fmt.Errorf("bench: rpc echo process: addresses %q: %w", line, err)
		}
		return p, nil
	case <-p.exited:
		err = fmt.Errorf("exited at start (%v): %s", p.cmd.ProcessState, p.stderr.String())
	case <-timeout.C:
		err = fmt.Errorf("printed no addresses within %v", echoStartTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.stdin.Close()
	p.cmd.Process.Kill()
	<-p.exited
	return nil, fmt.Errorf("bench: rpc echo process: %w", err)
}

// targets dials every system the child serves.
func (p *echoProcess) targets() ([]*RPCTarget, error) {
	var targets []*RPCTarget
	for _, system := range rpcSystems {
		t, err := dialEcho(system, ChildProcess, p.addrs[system])
		if err != nil {
			for _, t := range targets {
				t.Close()
			}
			return nil, fmt.Errorf("bench: rpc echo process: %s: %w", system, err)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// Close ends the child's input, which stops it, and waits for it to exit,
// killing it after a while.
func (p *echoProcess) Close() error {
	p.stdin.Close()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.exited
		return errors.New("bench: rpc echo process did not stop and was killed")
	}
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("bench: rpc echo process: %v: %s", p.cmd.ProcessState, p.stderr.String())
	}
	return nil
}
