package main

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// TestNodeOutlivesItsLogReader: a node whose stderr is a pipe that nobody
// reads any more goes on serving when it next logs, instead of dying of
// SIGPIPE without a word.
func TestNodeOutlivesItsLogReader(t *testing.T) {
	cmd := exec.Command(testutil.ShoalBinary(t), local.NodeArgs("a", "")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	var addr string
	lines := bufio.NewScanner(stderr)
	for addr == "" && lines.Scan() {
		if m := local.StartedLine.FindStringSubmatch(lines.Text()); m != nil {
			addr = m[2]
		}
	}
	if addr == "" {
		t.Fatal("the node never said it started")
	}
	stderr.Close() // the log's reader goes away

	// Bytes that are not msgpack-rpc make the node log a warning.
	for i := 0; i < 3; i++ {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte{0xc1})
		// The node logs why before it closes the connection: once it is
		// closed, the line has been written.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		conn.Read(make([]byte, 1))
		conn.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rpc.Dial(ctx, addr, rpc.ClientConfig{})
	if err != nil {
		t.Fatalf("after its log reader went away: %v", err)
	}
	defer c.Close()
	var sum int
	if err := c.Call(ctx, "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("add after its log reader went away: %d, %v", sum, err)
	}
	select {
	case err := <-exited:
		t.Fatalf("the node exited: %v", err)
	default:
	}
}
