//go:build linux

package testbed_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/builtins"
	"github.com/shoalgrid/shoal/internal/testbed"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// Five nodes on five hosts, with every protection on, form one grid that
// advertises the hosts' own addresses, and a client on a sixth host runs a
// large job and a CPU-bound one across them: every result once, in order.
func TestFiveHostsFormOneSecureGrid(t *testing.T) {
	t.Parallel()
	g := newSecureGrid(t, 5, "lan")
	ms := g.members(g.client, g.seeds[2])
	for i, h := range g.bed.Hosts[:5] {
		m := ms[nodeName(i)]
		if m.RPC != h.IP+":7373" || m.Gossip != h.IP+":7946" || m.HTTP != h.IP+":8787" {
			t.Errorf("%s advertises rpc %s, gossip %s, http %s; want its host's address %s on the bound ports",
				m.Name, m.RPC, m.Gossip, m.HTTP, h.IP)
		}
	}

	const items = 200_000
	lines, s := g.submit("--range", "0:"+strconv.Itoa(items), "square").wait(t, 5*time.Minute)
	expectInOrder(t, lines, items, func(i int) string { return strconv.Itoa(i * i) })
	if s.OK != items || s.Failed != 0 {
		t.Errorf("summary: %+v", s)
	}
	t.Logf("200,000 squares over 5 hosts: %.1fs, per node %v", s.Seconds, s.PerNode)

	const hashes, rounds = 400, 100_000
	inputs := inputFile(t, hashes, func(i int) string { return fmt.Sprintf(`["item-%d", %d]`, i, rounds) })
	lines, s = g.submit("--input", inputs, "--no-cache", "sha256").wait(t, 5*time.Minute)
	expectInOrder(t, lines, hashes, func(i int) string {
		sum, _ := builtins.SHA256Rounds(context.Background(), fmt.Sprintf("item-%d", i), rounds)
		return quote(sum)
	})
	for i := range 5 {
		if s.PerNode[nodeName(i)] == 0 {
			t.Errorf("%s computed nothing of the CPU-bound job: %v", nodeName(i), s.PerNode)
		}
	}
	t.Logf("400 x 100,000 sha256 rounds over 5 hosts: %.1fs, per node %v", s.Seconds, s.PerNode)
}

// A node killed with SIGKILL mid-job is declared dead by the others, and
// the job reroutes its items: every result once, in order.
func TestKilledHostsWorkIsRerouted(t *testing.T) {
	t.Parallel()
	g := newSecureGrid(t, 5, "lan")
	const items, ms = 3000, 20
	j := g.submit("--input", inputFile(t, items, func(int) string { return strconv.Itoa(ms) }), "sleep")
	g.awaitRunning("n3")
	g.nodes[2].Signal(syscall.SIGKILL)
	detect := g.awaitMembers(g.client, time.Minute, "n3 dead", func(ms map[string]grid.Member) bool {
		return ms["n3"].State == grid.StateDead
	})
	lines, s := j.wait(t, 5*time.Minute)
	expectInOrder(t, lines, items, func(int) string { return strconv.Itoa(ms) })
	t.Logf("n3 killed: declared dead after %v; the job of %d items took %.1fs in all, %d retries, per node %v",
		detect.Round(100*time.Millisecond), items, s.Seconds, s.Retries, s.PerNode)
}

// A network partition mid-job, first of one host, then of two from three:
// the job ends on the side the client reaches, every result once; when
// the network heals the cut-off nodes rejoin and take work again.
func TestPartitionedHostsRejoinAfterHealing(t *testing.T) {
	t.Parallel()
	g := newSecureGrid(t, 5, "lan")
	const items, ms = 3000, 20
	sleeps := inputFile(t, items, func(int) string { return strconv.Itoa(ms) })
	every := func(want string) func(map[string]grid.Member) bool {
		return func(m map[string]grid.Member) bool {
			for i := range 5 {
				if m[nodeName(i)].State != want {
					return false
				}
			}
			return true
		}
	}
	runAndCheck := func(what string, during func()) summary {
		j := g.submit("--input", sleeps, "sleep")
		during()
		lines, s := j.wait(t, 5*time.Minute)
		expectInOrder(t, lines, items, func(int) string { return strconv.Itoa(ms) })
		t.Logf("%s: job of %d items in %.1fs, %d retries, %d reissued, per node %v", what, items, s.Seconds, s.Retries, s.Reissued, s.PerNode)
		return s
	}

	// One host's link cut.
	n5 := g.bed.Hosts[4]
	var detect time.Duration
	runAndCheck("n5 cut off mid-job", func() {
		g.awaitRunning("n5")
		n5.Cut()
		detect = g.awaitMembers(g.client, time.Minute, "n5 dead", func(m map[string]grid.Member) bool {
			return m["n5"].State == grid.StateDead
		})
	})
	n5.Reconnect()
	rejoin := g.awaitMembers(g.client, 2*time.Minute, "n5 alive again", every(grid.StateAlive))
	g.awaitMembersAt(g.client, g.seeds[4], time.Minute, "n5 sees everyone alive", every(grid.StateAlive))
	t.Logf("one host cut: declared dead after %v; rejoined %v after its link came back", detect.Round(100*time.Millisecond), rejoin.Round(100*time.Millisecond))

	// Two hosts split from three and the client.
	n4 := g.bed.Hosts[3]
	runAndCheck("n4 and n5 split off mid-job", func() {
		g.awaitRunning("n4")
		g.bed.Split(n4, n5)
		detect = g.awaitMembers(g.client, time.Minute, "n4 and n5 dead", func(m map[string]grid.Member) bool {
			return m["n4"].State == grid.StateDead && m["n5"].State == grid.StateDead
		})
		// Each side goes on as a grid of its own.
		g.awaitMembersAt(n4, n4.IP+":7373", time.Minute, "n4 sees n1 to n3 dead", func(m map[string]grid.Member) bool {
			return m["n1"].State == grid.StateDead && m["n2"].State == grid.StateDead && m["n3"].State == grid.StateDead &&
				m["n5"].State == grid.StateAlive
		})
	})
	g.bed.Heal()
	rejoin = g.awaitMembers(g.client, 2*time.Minute, "n4 and n5 alive again", every(grid.StateAlive))
	g.awaitMembersAt(n4, n4.IP+":7373", time.Minute, "n4 sees everyone alive", every(grid.StateAlive))
	t.Logf("two hosts split from three: declared dead after %v; rejoined %v after the split healed", detect.Round(100*time.Millisecond), rejoin.Round(100*time.Millisecond))

	s := runAndCheck("after healing", func() {})
	for _, name := range []string{"n4", "n5"} {
		if s.PerNode[name] == 0 {
			t.Errorf("%s rejoined but computed nothing of the next job: %v", name, s.PerNode)
		}
	}
}

// A host on a slow link gets a share of the work its link can carry: the
// job does not wait on it as if it were as fast as the others.
func TestSlowHostGetsLessWork(t *testing.T) {
	t.Parallel()
	g := newSecureGrid(t, 5, "lan")
	const items, size = 10_000, 1000
	payload := func(i int) string { return quote(fmt.Sprintf("%0*d", size, i)) }
	inputs := inputFile(t, items, payload)
	_, before := g.submit("--input", inputs, "--no-cache", "echo").wait(t, 5*time.Minute)
	g.bed.Hosts[4].Shape("1mbit")
	lines, s := g.submit("--input", inputs, "--no-cache", "echo").wait(t, 5*time.Minute)
	expectInOrder(t, lines, items, payload)
	// Its equal share, a fifth, would take each way 2,000 KB at 125 KB/s:
	// 16s.
	if fair := items / 5; s.PerNode["n5"] >= fair/2 {
		t.Errorf("the slow host computed %d items, not less than half its equal share %d: %v", s.PerNode["n5"], fair, s.PerNode)
	}
	t.Logf("job of %d x %d bytes: %.1fs with every link fast (n5 computed %d); %.1fs with n5 on a 1 Mbit/s link, per node %v",
		items, size, before.Seconds, before.PerNode["n5"], s.Seconds, s.PerNode)
}

// Addresses across hosts: a node bound to every interface on a host with
// no default route refuses to start rather than advertise 0.0.0.0, and
// says to use --advertise; with --advertise it starts and is dialed there;
// a --join name is looked up again on every retry.
func TestAdvertiseAndJoinByName(t *testing.T) {
	t.Parallel()
	bed := testbed.New(t, 3)
	bin := testutil.PlainShoalBinary(t)
	a, b, c := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2]
	b.RemoveDefaultRoute()
	anywhere := []string{"--gossip", "0.0.0.0:7946", "--rpc", "0.0.0.0:7373", "--http", "", "--insecure", "--gossip-timing", "fast"}

	_, stderr, code := b.Run(time.Minute, bin, append([]string{"node", "--name", "b"}, anywhere...)...)
	if code != 1 || !strings.Contains(stderr, "--advertise") || !strings.Contains(stderr, "default route") {
		t.Fatalf("a node bound to 0.0.0.0 without a default route exited %d:\n%s", code, stderr)
	}

	first := a.Start(nil, bin, append([]string{"node", "--name", "a"}, anywhere...)...)
	first.WaitForLine(`msg="node started" name=a gossip=`+a.IP+`:7946 rpc=`+a.IP+`:7373`, time.Minute)

	// The seed's name leads nowhere at first; the node retries, looking
	// it up each time, and joins once it names the first node.
	c.SetHosts(map[string]string{"seed": "198.18.0.200"})
	third := c.Start(nil, bin, append([]string{"node", "--name", "c", "--join", "seed:7946", "--join-timeout", "2m"}, anywhere...)...)
	third.WaitForLine(`join failed; retrying`, time.Minute)
	c.SetHosts(map[string]string{"seed": a.IP})
	third.WaitForLine(`joined the grid`, time.Minute)

	second := b.Start(nil, bin, append([]string{"node", "--name", "b", "--advertise", b.IP, "--join", a.IP + ":7946"}, anywhere...)...)
	second.WaitForLine(`msg="node started" name=b gossip=`+b.IP+`:7946 rpc=`+b.IP+`:7373`, time.Minute)
	second.WaitForLine(`joined the grid`, time.Minute)
	out, stderr, code := c.Run(time.Minute, bin, "call", "--seed", b.IP+":7373", "square", "12")
	if code != 0 || strings.TrimSpace(out) != "144" {
		t.Fatalf("shoal call through the advertised address: exit %d, %q\n%s", code, out, stderr)
	}
}
