package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

// Two gossip keys and a token, as base64 text.
const (
	keyA  = "MDEyMzQ1Njc4OWFiY2RlZg==" // 0123456789abcdef
	keyB  = "ZmVkY2JhOTg3NjU0MzIxMA==" // fedcba9876543210
	token = "s3cret-token"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// secretFile writes text to a file only its owner can read.
func secretFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startRogue runs, in the test process, a node with neither gossip key nor
// token that joins through seed and answers square with forged results:
// a stranger on the network. It returns the node, or the error of its
// join.
func startRogue(t *testing.T, seed string) (*node.Node, error) {
	t.Helper()
	cfg := node.FastConfig()
	cfg.Name = "rogue"
	cfg.Join = []string{seed}
	cfg.JoinTimeout = 3 * time.Second
	cfg.Logger = quietLogger()
	rogue, err := node.New(cfg, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.Register("square", func(x int) int { return x*x + 1 }); err != nil {
		t.Fatal(err)
	}
	if err := rogue.Start(context.Background()); err != nil {
		return nil, err
	}
	t.Cleanup(func() { rogue.Close() })
	return rogue, nil
}

// forgedSquares runs `shoal submit` of square over 0..n-1 against seed
// with the token and returns how many results were wrong.
func forgedSquares(t *testing.T, seed, tokenFile string, n int) int {
	t.Helper()
	stdout, stderr, code := runShoal(t, nil, "submit", "--seed", seed, "--token-file", tokenFile, "--no-cache",
		"--range", "0:"+strconv.Itoa(n), "square")
	if code != 0 {
		t.Fatalf("submit exited %d:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != n {
		t.Fatalf("submit printed %d results for %d items", len(lines), n)
	}
	wrong := 0
	for i, line := range lines {
		var got int
		if err := json.Unmarshal([]byte(line), &got); err != nil || got != i*i {
			wrong++
		}
	}
	return wrong
}

// waitOffered waits until the grid, as seen through seed, offers fn on
// the node named name.
func waitOffered(t *testing.T, seed, fn, name string) {
	t.Helper()
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{seed}, Token: token, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.WaitFor(t, processTimeout, name+" to offer "+fn, func() bool {
		c.WaitForMembers(context.Background(), 0) // re-reads the view
		for _, f := range c.Functions() {
			if f.Name == fn && strings.Contains(","+strings.Join(f.Nodes, ",")+",", ","+name+",") {
				return true
			}
		}
		return false
	})
}

// TestRogueMemberCannotForgeResults: a stranger that joins a grid by
// gossip is sent the token by clients and answers their calls. A node
// therefore refuses a token without a gossip key, and with both the
// stranger stays out and every result is right.
func TestRogueMemberCannotForgeResults(t *testing.T) {
	const items = 3000
	tokenFile := secretFile(t, "token", token+"\n")
	keyFile := secretFile(t, "gossip.key", keyA+"\n")

	// A token and no gossip key: refused, naming the way out.
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), local.NodeArgs("a", "", "--token-file", tokenFile)...)
	m := p.WaitForLine(`msg="node started" name=\S+ gossip=(\S+) rpc=(\S+)|^shoal: `, processTimeout)
	if m[1] != "" {
		// The node started: show what a stranger can then do.
		if _, err := startRogue(t, m[1]); err != nil {
			t.Fatalf("a node started with a token and no gossip key (and the rogue could not join: %v)", err)
		}
		waitOffered(t, m[2], "square", "rogue")
		wrong := forgedSquares(t, m[2], tokenFile, items)
		t.Fatalf("a node started with a token and no gossip key; a rogue member joined by gossip and %d of %d results were forged", wrong, items)
	}
	if code := p.Wait(processTimeout); code != 1 {
		t.Fatalf("a node with a token and no gossip key exited %d, want 1", code)
	}
	for _, want := range []string{"token without a gossip key", "--gossip-key", "--insecure"} {
		if !strings.Contains(p.Stderr(), want) {
			t.Errorf("the refusal does not name %q:\n%s", want, p.Stderr())
		}
	}

	// Said explicitly, it starts, and its log says what it exposes.
	insecure := startGridNode(t, "insecure", "", "--token-file", tokenFile, "--insecure")
	insecure.WaitForLine(`level=WARN msg="running insecure, as --insecure allows: a token without a gossip key`, processTimeout)

	// A gossip key and a token: the rogue cannot join, and every result
	// is right.
	a := startGridNode(t, "a", "", "--token-file", tokenFile, "--gossip-key-file", keyFile)
	b := startGridNode(t, "b", a.Gossip, "--token-file", tokenFile, "--gossip-key-file", keyFile)
	if _, err := startRogue(t, a.Gossip); err == nil {
		t.Fatal("a member without the gossip key joined a keyed grid")
	}
	waitOffered(t, a.RPC, "square", "b")
	c, err := shoal.Dial(context.Background(), shoal.Config{Seeds: []string{b.RPC}, Token: token, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range c.Members() {
		if m.Name == "rogue" {
			t.Fatalf("the keyed grid lists the rogue: %+v", c.Members())
		}
	}
	if wrong := forgedSquares(t, a.RPC, tokenFile, items); wrong != 0 {
		t.Fatalf("%d of %d results were wrong on a grid with a gossip key and a token", wrong, items)
	}
}

// TestSecretsFromFiles: the token and gossip keys can come from files (or
// the environment) rather than the command line, where ps shows them to
// every user; the command line still works, with a warning.
func TestSecretsFromFiles(t *testing.T) {
	tokenFile := secretFile(t, "token", token+"\n")
	// Two keys: the first encrypts, the second is accepted too, as when
	// a grid starts changing its key.
	keyFile := secretFile(t, "gossip.keys", "# the key in use first\n"+keyA+"\n\n"+keyB+"\n")

	p, addr := startNode(t, nil, "--token-file", tokenFile, "--gossip-key-file", keyFile)
	// It joins a member that holds only the first key.
	peer := startGridNode(t, "peer", "", "--gossip-key", keyA, "--token", token)
	joiner := startGridNode(t, "joiner", peer.Gossip, "--gossip-key-file", keyFile, "--token-file", tokenFile)
	joiner.WaitForLine(`msg="joined the grid"`, processTimeout)

	stdout, stderr, code := runShoal(t, nil, "call", "--seed", addr, "--token-file", tokenFile, "add", "1", "2")
	if code != 0 || stdout != "3\n" {
		t.Fatalf("call with --token-file: %q %q %d", stdout, stderr, code)
	}
	if strings.Contains(p.Stderr(), "can be read by every user") || strings.Contains(stderr, "can be read by every user") {
		t.Fatalf("secrets from files drew a warning:\n%s\n%s", p.Stderr(), stderr)
	}
	_, stderr, code = runShoal(t, []string{"SHOAL_TOKEN=" + token}, "call", "--seed", addr, "add", "1", "2")
	if code != 0 || strings.Contains(stderr, "can be read by every user") {
		t.Fatalf("call with SHOAL_TOKEN: %q %d", stderr, code)
	}

	// On the command line it works, and says how to do better.
	stdout, stderr, code = runShoal(t, nil, "call", "--seed", addr, "--token", token, "add", "1", "2")
	if code != 0 || stdout != "3\n" || !strings.Contains(stderr, "--token on the command line can be read by every user") ||
		!strings.Contains(stderr, "--token-file") {
		t.Fatalf("call with --token: %q %q %d", stdout, stderr, code)
	}
	peer.WaitForLine(`--gossip-key on the command line can be read by every user.*--gossip-key-file`, processTimeout)
	peer.WaitForLine(`--token on the command line can be read by every user.*--token-file`, processTimeout)

	// Bad secrets are refused before anything listens.
	open := filepath.Join(t.TempDir(), "open-token")
	os.WriteFile(open, []byte(token), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--token", token, "--token-file", tokenFile}, "--token (or SHOAL_TOKEN) and --token-file both given"},
		{[]string{"node", "--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file"},
		{[]string{"node", "--token-file", secretFile(t, "empty", "\n")}, "is empty"},
		{[]string{"node", "--gossip-key-file", secretFile(t, "bad.key", "not base64!\n")}, "line 1 is not a base64 key"},
		{[]string{"node", "--gossip-key-file", secretFile(t, "short.key", "c2hvcnQ=\n")}, "a key of 5 bytes"},
		{[]string{"node", "--gossip-key", keyA, "--gossip-key-file", keyFile}, "give the key one way"},
		{[]string{"call", "--token", token, "--token-file", tokenFile, "add", "1", "2"}, "--token (or SHOAL_TOKEN) and --token-file both given"},
	} {
		_, stderr, code := runShoal(t, nil, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
	_, stderr, _ = runShoal(t, nil, "call", "--seed", addr, "--token-file", open, "add", "1", "2")
	if !strings.Contains(stderr, "can be read by others than its owner") {
		t.Errorf("a token file others can read drew no warning: %q", stderr)
	}
}

// TestTokenHints: the errors about the token say what to do.
func TestTokenHints(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("dial: %w", rpc.ErrPlaintextToken): "--insecure",
		fmt.Errorf("seed: %w", rpc.ErrUnauthorized):   "--token-file",
	} {
		if got := tokenHint(err).Error(); !strings.Contains(got, want) || !strings.HasPrefix(got, err.Error()) {
			t.Errorf("tokenHint(%q) = %q, want it to name %s", err, got, want)
		}
	}
}
