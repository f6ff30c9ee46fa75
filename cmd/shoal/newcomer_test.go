package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// TestNewcomerMistakes runs the mistakes a person makes in their first hour
// against one real node, and checks that each gets a message that says
// what to do, at once.
func TestNewcomerMistakes(t *testing.T) {
	n := startGridNode(t, "a", "")
	noSummary := filepath.Join(t.TempDir(), "missing-dir", "summary.json")
	cases := []struct {
		name string
		args []string
		want []string // each must appear in stderr
	}{
		{"misspelt function", []string{"call", "--seed", n.RPC, "squre", "3"},
			[]string{`no live node offers "squre"; did you mean "square"?`, "`shoal functions` lists"}},
		{"misspelt function in a job", []string{"submit", "--seed", n.RPC, "--range", "0:3", "sqare"},
			[]string{`did you mean "square"?`}},
		{"misspelt flag", []string{"call", "--sed", n.RPC, "square", "3"},
			[]string{"unknown flag: --sed; did you mean --seed?", "shoal call --help"}},
		{"flag after FUNC", []string{"call", "--seed", n.RPC, "square", "3", "--timeout", "1s"},
			[]string{"--timeout after square: flags go before FUNC"}},
		{"no node at the seed", []string{"call", "--seed", "127.0.0.1:1", "square", "3"},
			[]string{"connection refused", "start one with `shoal node`", "--seed"}},
		{"seed is an HTTP port", []string{"call", "--seed", n.HTTP, "square", "3"},
			[]string{n.HTTP + " is an HTTP address", "--seed takes a node's RPC address"}},
		{"seed is a gossip port", []string{"members", "--seed", n.Gossip},
			[]string{n.Gossip + " is a node's gossip address, not its RPC address"}},
		{"TLS to a plain node", []string{"members", "--seed", n.RPC, "--tls"},
			[]string{"TLS handshake with " + n.RPC, "does the node serve TLS"}},
		{"empty range", []string{"submit", "--seed", n.RPC, "--range", "10:0", "square"},
			[]string{`--range "10:0" holds no integers`, "10:0:-1"}},
		{"no attempts", []string{"submit", "--seed", n.RPC, "--range", "0:3", "--attempts", "0", "square"},
			[]string{"--attempts 0: an item needs at least 1 attempt"}},
		{"no attempts by the old name", []string{"submit", "--seed", n.RPC, "--range", "0:3", "--retries", "0", "square"},
			[]string{"--retries 0: an item needs at least 1 attempt", "now --attempts"}},
		{"negative chunk", []string{"submit", "--seed", n.RPC, "--range", "0:3", "--chunk", "-1", "square"},
			[]string{"--chunk -1: want a number of items per call"}},
		// The seed is dead: the summary file must be refused before
		// anything is dialled.
		{"unwritable summary", []string{"submit", "--seed", "127.0.0.1:1", "--range", "0:3", "--summary-json", noSummary, "square"},
			[]string{"--summary-json: open " + noSummary}},
		{"no slots", []string{"node", "--slots", "0"},
			[]string{"--slots 0: a node needs at least 1 slot"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			_, stderr, code := runShoal(t, nil, tc.args...)
			took := time.Since(start)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, "shoal: shoal:") {
				t.Errorf("doubled prefix:\n%s", stderr)
			}
			// Not a speed test: a client that waited out its 5s read of
			// the seed, or retried, would take longer than this.
			if took > 4*time.Second {
				t.Errorf("took %v to say so", took)
			}
		})
	}
	if _, err := os.Stat(filepath.Dir(noSummary)); !os.IsNotExist(err) {
		t.Errorf("the refused summary's directory exists: %v", err)
	}
}

// TestJoinThroughTheWrongPortFailsAtOnce gives --join a node's RPC and HTTP
// addresses: the node exits 1 naming the mistake instead of retrying for
// its whole --join-timeout.
func TestJoinThroughTheWrongPortFailsAtOnce(t *testing.T) {
	seed := startGridNode(t, "seed", "")
	for _, tc := range []struct {
		addr, want string
	}{
		{seed.RPC, seed.RPC + " answers msgpack-rpc: it is a node's RPC address, not its gossip address"},
		{seed.HTTP, seed.HTTP + " answers HTTP: it is a node's HTTP address, not its gossip address"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			p := testutil.Start(t, nil, testutil.ShoalBinary(t), "node", "--name", "lost", "--gossip", "127.0.0.1:0",
				"--rpc", "127.0.0.1:0", "--http", "", "--join", tc.addr, "--join-timeout", "10m")
			if code := p.Wait(processTimeout); code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			if !strings.Contains(p.Stderr(), tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, p.Stderr())
			}
		})
	}
}

// TestNameTakenByALiveMember starts a second node under a live member's
// name: it must exit 1 saying so, not report itself ready while the grid
// ignores it.
func TestNameTakenByALiveMember(t *testing.T) {
	a := startGridNode(t, "a", "")
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "node", "--name", "a", "--gossip", "127.0.0.1:0",
		"--rpc", "127.0.0.1:0", "--http", "", "--gossip-timing", "fast", "--join", a.Gossip)
	if code := p.Wait(processTimeout); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, p.Stderr())
	}
	want := `the name "a" is taken by a live member at ` + a.Gossip
	if !strings.Contains(p.Stderr(), want) {
		t.Fatalf("stderr lacks %q:\n%s", want, p.Stderr())
	}
	if strings.Contains(p.Stderr(), "joined the grid") {
		t.Fatalf("the impostor reported itself joined:\n%s", p.Stderr())
	}
}
