package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// TestOwnFunctionsNode builds examples/greeter, joins it to a grid started
// with shoal node, and calls its functions through shoal submit and the Go
// API, both seeded at the shoal node.
func TestOwnFunctionsNode(t *testing.T) {
	seed := startGridNode(t, "a", "")
	greeter := testutil.Start(t, nil, testutil.Build(t, "github.com/shoalgrid/shoal/examples/greeter"),
		"--join", seed.Gossip, "--name", "greeter")
	greeter.WaitForLine(`msg="greeter serving"`, processTimeout)
	awaitState(t, []*gridNode{seed}, "greeter", grid.StateAlive, 15*time.Second)
	testutil.WaitFor(t, 15*time.Second, "greet to be offered", func() bool {
		stdout, _, _ := runShoal(t, nil, "functions", "--seed", seed.RPC)
		return strings.Contains(stdout, "greet(name string) string")
	})

	in := filepath.Join(t.TempDir(), "names.jsonl")
	os.WriteFile(in, []byte("\"ada\"\n\"grace\"\n"), 0o644)
	stdout, stderr, code := runShoal(t, nil, "submit", "--seed", seed.RPC, "--input", in, "greet")
	if code != 0 || stdout != "\"hello, ada!\"\n\"hello, grace!\"\n" {
		t.Fatalf("submit greet: exit %d, %q\n%s", code, stdout, stderr)
	}

	ctx := context.Background()
	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{seed.RPC}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	counts, err := shoal.Map[string, int](ctx, c, "vowels", []string{"shoal", "gossip grid"})
	if err != nil || counts[0] != 2 || counts[1] != 3 {
		t.Fatalf("vowels via the Go API: %v, %v", counts, err)
	}
}
