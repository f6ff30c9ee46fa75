//go:build linux

package main

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// fileLimit is the open-file limit the nodes of these tests run under,
// soft and hard alike: Go raises the soft limit to the hard one itself.
const fileLimit = 256

// startLimitedNode runs `shoal node` under prlimit --nofile=256:256.
func startLimitedNode(t *testing.T, args ...string) *testutil.Node {
	t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	limit := "--nofile=" + strconv.Itoa(fileLimit) + ":" + strconv.Itoa(fileLimit)
	p := testutil.Start(t, nil, prlimit, append([]string{limit, testutil.ShoalBinary(t)}, local.NodeArgs("a", "", args...)...)...)
	m := p.WaitForLine(local.StartedLine.String(), processTimeout)
	return &testutil.Node{Process: p, Name: "a", Gossip: m[1], RPC: m[2], HTTP: m[3]}
}

// TestNodeOutlivesRunningOutOfDescriptors opens more connections to a
// node at once than it has descriptors for, holds them, closes them, and
// expects the node to serve again: with its default bound it never runs
// out; with a bound above its limit it runs out, retries, and recovers.
// Either way /readyz says not ready while it cannot take a connection.
func TestNodeOutlivesRunningOutOfDescriptors(t *testing.T) {
	const conns = 400
	for _, tc := range []struct {
		name     string
		args     []string
		notReady string // in /readyz's answer while the connections are held
	}{
		{"default bound", nil, "at the RPC connection limit"},
		{"bound above the file limit", []string{"--max-conns", "1000"}, "not accepting connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startLimitedNode(t, tc.args...)
			// One HTTP connection, opened now and kept alive, so that
			// /readyz can be asked while the node has no descriptor to
			// accept another.
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr, Timeout: processTimeout}
			readyz := func() (int, string) {
				resp, err := client.Get("http://" + n.HTTP + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			// The node logs that it started just before it counts itself
			// ready.
			testutil.WaitFor(t, processTimeout, "/readyz to say ready", func() bool {
				code, _ := readyz()
				return code == 200
			})

			var held []net.Conn
			closeAll := func() {
				for _, c := range held {
					c.Close()
				}
				held = nil
			}
			t.Cleanup(closeAll)
			for range conns {
				c, err := net.DialTimeout("tcp", n.RPC, processTimeout)
				if err != nil {
					t.Fatalf("connection %d: %v", len(held)+1, err)
				}
				held = append(held, c)
			}
			testutil.WaitFor(t, processTimeout, "/readyz to say not ready", func() bool {
				code, body := readyz()
				return code == http.StatusServiceUnavailable && strings.Contains(body, tc.notReady)
			})
			if tc.args == nil {
				// The bound, from the README's formula: 256 - (64 + 256/8).
				const bound = 160
				testutil.WaitFor(t, processTimeout, "every connection beyond the bound to be refused", func() bool {
					m := scrape(t, n.HTTP)
					return m["shoal_rpc_max_connections"] == bound && m["shoal_rpc_connections"] == bound &&
						m["shoal_rpc_connections_refused_total"] == conns-bound
				})
			}
			closeAll()

			testutil.WaitFor(t, processTimeout, "/readyz to say ready again", func() bool {
				code, _ := readyz()
				return code == 200
			})
			stdout, stderr, code := runShoal(t, nil, "call", "--seed", n.RPC, "add", "2", "3")
			if code != 0 || stdout != "5\n" {
				t.Fatalf("call after the flood: exit %d, %q %q", code, stdout, stderr)
			}
			stdout, stderr, code = runShoal(t, nil, "submit", "--seed", n.RPC, "--range", "0:1000", "square")
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if code != 0 || len(lines) != 1000 || lines[999] != "998001" {
				t.Fatalf("map job after the flood: exit %d, %d lines\n%s", code, len(lines), stderr)
			}

			m := scrape(t, n.HTTP)
			refused, acceptErrors := m["shoal_rpc_connections_refused_total"], m["shoal_rpc_accept_errors_total"]
			t.Logf("refused %v, accept errors %v", refused, acceptErrors)
			if tc.args == nil {
				// The bound left room for everything else: no accept failed.
				if refused != conns-160 || acceptErrors != 0 {
					t.Errorf("with the default bound: refused %v, accept errors %v", refused, acceptErrors)
				}
			} else if refused != 0 || acceptErrors == 0 {
				t.Errorf("with a bound above the file limit: refused %v, accept errors %v", refused, acceptErrors)
			}
		})
	}
}
