//go:build linux

package testbed_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testbed"
	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// secureGrid is a grid of `shoal node` processes, one per host of a bed,
// with gossip key, token and mutual TLS all on, every node bound to
// 0.0.0.0 on the standard ports and advertising its host's address, and
// one more host for clients.
type secureGrid struct {
	t      *testing.T
	bed    *testbed.Bed
	bin    string
	nodes  []*testutil.Process // nodes[i] runs on bed.Hosts[i]
	client *testbed.Host       // the last host, running no node
	secret []string            // the node flags for key, token and TLS
	seeds  []string            // --seed for clients: every node's RPC address
	access []string            // the client flags for token and TLS
	timing string
}

// newSecureGrid starts n nodes on a bed of n+1 hosts and waits until each
// of them sees all of them alive.
func newSecureGrid(t *testing.T, n int, timing string) *secureGrid {
	t.Helper()
	bed := testbed.New(t, n+1)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := make([]byte, 32)
	rand.Read(key)
	token := make([]byte, 24)
	rand.Read(token)
	keyFile := write("gossip.key", []byte(base64.StdEncoding.EncodeToString(key)+"\n"))
	tokenFile := write("token", []byte(base64.RawURLEncoding.EncodeToString(token)+"\n"))
	var ips []string
	for _, h := range bed.Hosts {
		ips = append(ips, h.IP)
	}
	pki := testutil.NewPKI(t, ips...)
	g := &secureGrid{
		t: t, bed: bed, bin: testutil.PlainShoalBinary(t), client: bed.Hosts[n], timing: timing,
		secret: []string{"--gossip-key-file", keyFile, "--token-file", tokenFile,
			"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CAFile},
		access: []string{"--token-file", tokenFile, "--tls-ca", pki.CAFile, "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey},
		nodes:  make([]*testutil.Process, n),
	}
	for _, h := range bed.Hosts[:n] {
		g.seeds = append(g.seeds, h.IP+":7373")
	}
	for i := range n {
		g.startNode(i)
	}
	for i := range n {
		g.nodes[i].WaitForLine(`msg="node started"`, 60*time.Second)
	}
	for _, seed := range g.seeds {
		g.awaitMembersAt(g.client, seed, time.Minute, "every node alive", func(ms map[string]grid.Member) bool {
			return g.countAlive(ms) == n
		})
	}
	return g
}

// startNode starts node i on host i, joining through the first two hosts'
// gossip addresses (itself among them for the first two, as a static
// configuration shared by every host would have it).
func (g *secureGrid) startNode(i int) {
	g.t.Helper()
	h := g.bed.Hosts[i]
	args := append([]string{"node", "--name", nodeName(i),
		"--gossip", "0.0.0.0:7946", "--rpc", "0.0.0.0:7373", "--http", "0.0.0.0:8787",
		"--join", g.bed.Hosts[0].IP + ":7946," + g.bed.Hosts[1].IP + ":7946",
		"--gossip-timing", g.timing, "--slots", "2", "--join-timeout", "2m"}, g.secret...)
	g.nodes[i] = h.Start(nil, g.bin, args...)
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

// shoal runs a shoal client command on host from with the grid's access
// flags and the seeds given (the grid's, when none).
func (g *secureGrid) shoal(from *testbed.Host, timeout time.Duration, seeds []string, args ...string) (string, string, int) {
	g.t.Helper()
	if seeds == nil {
		seeds = g.seeds
	}
	args = append(args, "--seed", strings.Join(seeds, ","))
	return from.Run(timeout, g.bin, append(args, g.access...)...)
}

// members returns the members as the node at seed sees them, or nil if it
// does not answer.
func (g *secureGrid) members(from *testbed.Host, seed string) map[string]grid.Member {
	g.t.Helper()
	out, _, code := g.shoal(from, 30*time.Second, []string{seed}, "members", "--json")
	if code != 0 {
		return nil
	}
	var list []grid.Member
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		g.t.Fatalf("shoal members --json: %v\n%s", err, out)
	}
	ms := make(map[string]grid.Member, len(list))
	for _, m := range list {
		ms[m.Name] = m
	}
	return ms
}

func (g *secureGrid) countAlive(ms map[string]grid.Member) int {
	alive := 0
	for _, m := range ms {
		if m.State == grid.StateAlive {
			alive++
		}
	}
	return alive
}

// awaitMembers polls the first node's view, as the client host sees it,
// until cond holds, and returns how long that took.
func (g *secureGrid) awaitMembers(from *testbed.Host, timeout time.Duration, what string, cond func(map[string]grid.Member) bool) time.Duration {
	g.t.Helper()
	return g.awaitMembersAt(from, g.seeds[0], timeout, what, cond)
}

// awaitMembersAt is awaitMembers asking the node at seed.
func (g *secureGrid) awaitMembersAt(from *testbed.Host, seed string, timeout time.Duration, what string, cond func(map[string]grid.Member) bool) time.Duration {
	g.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ms := g.members(from, seed)
		if ms != nil && cond(ms) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("%s: not seen within %v through %s; last view: %v", what, timeout, seed, ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// job is a `shoal submit` running on the client host.
type job struct {
	p       *testutil.Process
	summary string
}

// submit starts shoal submit on the client host with args (FUNC last),
// writing its summary to a file.
func (g *secureGrid) submit(args ...string) *job {
	g.t.Helper()
	j := &job{summary: filepath.Join(g.t.TempDir(), "summary.json")}
	full := append([]string{"submit", "--summary-json", j.summary, "--seed", strings.Join(g.seeds, ",")}, g.access...)
	j.p = g.client.Start(nil, g.bin, append(full, args...)...)
	return j
}

// summary is what shoal submit --summary-json writes.
type summary struct {
	Items, OK, Failed, Retries, Reissued int
	Seconds                              float64
	PerNode                              map[string]int `json:"per_node"`
}

// wait waits for the job to end, expects it to have succeeded, and returns
// its output lines and summary.
func (j *job) wait(t *testing.T, timeout time.Duration) ([]string, summary) {
	t.Helper()
	if code := j.p.Wait(timeout); code != 0 {
		t.Fatalf("shoal submit exited %d\n%s", code, j.p.Stderr())
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(j.p.Stdout()))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	var s summary
	b, err := os.ReadFile(j.summary)
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil {
		t.Fatalf("summary: %v", err)
	}
	return lines, s
}

// expectInOrder checks that the output has exactly one line per input,
// each the expected one, in input order.
func expectInOrder(t *testing.T, lines []string, n int, want func(i int) string) {
	t.Helper()
	if len(lines) != n {
		t.Fatalf("%d result lines for %d inputs", len(lines), n)
	}
	for i, l := range lines {
		if w := want(i); l != w {
			t.Fatalf("line %d is %q, want %q", i, l, w)
		}
	}
}

// inputFile writes n lines made by line to a temporary file.
func inputFile(t *testing.T, n int, line func(i int) string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		b.WriteString(line(i))
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "inputs")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// awaitRunning waits until the first node's view shows the named member
// running calls, as gossiped load shows it.
func (g *secureGrid) awaitRunning(name string) {
	g.t.Helper()
	g.awaitMembers(g.client, time.Minute, name+" running calls", func(ms map[string]grid.Member) bool {
		return ms[name].Running > 0
	})
}

func quote(s string) string { return strconv.Quote(s) }
