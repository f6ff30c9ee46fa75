package local

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestProcessMemoryOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	m, err := ProcessMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.Resident < 1<<20 || m.Peak < m.Resident || m.Anon <= 0 || m.Anon > m.Resident {
		t.Errorf("resident %d bytes, peak %d bytes, anonymous %d bytes", m.Resident, m.Peak, m.Anon)
	}
	if _, err := ProcessMemory(-1); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

func TestTailBufferKeepsTheLastLines(t *testing.T) {
	b := newTailBuffer(3)
	if got := b.String(); got != "no output" {
		t.Errorf("empty: %q", got)
	}
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(b, "line %d\n", i)
	}
	b.Write([]byte("partial"))
	if got, want := b.String(), "line 3\nline 4\nline 5\npartial"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestStartNodeReportsAProcessThatExits(t *testing.T) {
	_, err := StartNode(context.Background(), "/bin/sh", "n1", "")
	// sh cannot open a script named "node" and exits at once.
	if err == nil || !strings.Contains(err.Error(), "local: node n1: exited at start") {
		t.Fatalf("err = %v", err)
	}
}
