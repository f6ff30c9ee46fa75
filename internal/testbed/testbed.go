//go:build linux

// Package testbed gives Shoal's tests several hosts on one Linux machine:
// network namespaces, each with its own interface and address in a private
// test range (198.18.0.0/15, set aside for network tests by RFC 2544),
// cabled to a switch, itself a namespace holding a bridge. Tests run
// `shoal node` and the other commands inside the hosts (`ip netns exec`),
// and cut, split, heal and slow the hosts' links. Nothing is routed out of
// the namespaces: all traffic stays between the hosts.
//
// It needs root and iproute2 (ip, tc); New skips the test, saying why,
// where they are missing, and fails it instead when SHOAL_REQUIRE_NETNS
// is set, as CI sets it. Everything New makes is removed when the test
// ends, however it ends, and a bed left behind by a killed test process is
// removed by the next New.
package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// prefix starts the name of every namespace a bed makes; the test
// process's id follows it, so that stale beds can be told from live ones.
const prefix = "shoaltb-"

var beds atomic.Int64 // beds made by this process, to name the next one

// Bed is a switch and the hosts cabled to it.
type Bed struct {
	t     testing.TB
	name  string // prefix, pid and sequence number
	swNS  string // the switch's namespace
	Hosts []*Host
	mu    sync.Mutex
	split map[*Host]bool // hosts moved to the second bridge by Split
}

// Host is a namespace with one interface, eth0, cabled to the switch.
type Host struct {
	bed  *Bed
	NS   string // the namespace's name, for ip netns exec
	IP   string // eth0's address
	port string // the switch's end of the cable
}

// New makes a bed of n hosts, 198.18.0.1 to 198.18.0.n, each with a
// default route out of eth0 (which leads only to the switch), so that a
// node bound to 0.0.0.0 finds its address as it would on a real host. It
// skips the test where it cannot run.
func New(t testing.TB, n int) *Bed {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("SHOAL_REQUIRE_NETNS") != "" {
		skip = t.Fatalf // CI runs as root: a skip there would hide the tests
	}
	if os.Geteuid() != 0 {
		skip("testbed: network namespaces need root; CI runs as root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("testbed: %s not found (Debian package iproute2)", tool)
		}
	}
	if n < 1 || n > 250 {
		t.Fatalf("testbed: %d hosts; want 1 to 250", n)
	}
	removeStale(t)
	b := &Bed{
		t:     t,
		name:  fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), beds.Add(1)),
		split: make(map[*Host]bool),
	}
	b.swNS = b.name + "-sw"
	t.Cleanup(b.remove)
	b.ip("netns", "add", b.swNS)
	b.ip("-n", b.swNS, "link", "set", "lo", "up")
	for _, br := range []string{"br0", "br1"} {
		b.ip("-n", b.swNS, "link", "add", br, "type", "bridge")
		b.ip("-n", b.swNS, "link", "set", br, "up")
	}
	for i := 1; i <= n; i++ {
		h := &Host{bed: b, NS: fmt.Sprintf("%s-h%d", b.name, i), IP: fmt.Sprintf("198.18.0.%d", i), port: fmt.Sprintf("p%d", i)}
		b.Hosts = append(b.Hosts, h)
		b.ip("netns", "add", h.NS)
		// Host files and a resolver of its own: names the test gives
		// resolve inside the host, and no lookup leaves it.
		dir := filepath.Join("/etc/netns", h.NS)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		h.SetHosts(nil)
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		b.ip("-n", h.NS, "link", "set", "lo", "up")
		b.ip("-n", b.swNS, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
		b.ip("-n", b.swNS, "link", "set", h.port, "master", "br0")
		b.ip("-n", b.swNS, "link", "set", h.port, "up")
		b.ip("-n", h.NS, "addr", "add", h.IP+"/16", "dev", "eth0")
		b.ip("-n", h.NS, "link", "set", "eth0", "up")
		b.ip("-n", h.NS, "route", "add", "default", "dev", "eth0")
	}
	return b
}

// ip runs ip with args and fails the test if it fails.
func (b *Bed) ip(args ...string) { b.t.Helper(); run(b.t, "ip", args...) }

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("testbed: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// remove kills whatever still runs in the bed's namespaces and deletes
// them, with their /etc/netns files.
func (b *Bed) remove() {
	names := []string{b.swNS}
	for _, h := range b.Hosts {
		names = append(names, h.NS)
	}
	removeNamespaces(names)
}

func removeNamespaces(names []string) {
	for _, ns := range names {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
			}
		}
	}
	for _, ns := range names {
		// Killed processes leave the namespace as they exit; deleting it
		// before then only unlinks its name, which is all that matters.
		exec.Command("ip", "netns", "delete", ns).Run()
		os.RemoveAll(filepath.Join("/etc/netns", ns))
	}
}

// removeStale removes the beds of test processes that no longer run.
func removeStale(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("testbed: ip netns list: %v", err)
	}
	var stale []string
	for _, line := range strings.Split(string(out), "\n") {
		ns, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(ns, prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			stale = append(stale, ns)
		}
	}
	removeNamespaces(stale)
}

// Command returns a command that runs name with args inside the host.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Start runs name with args inside the host, as testutil.Start does on
// this machine: killed, if still running, when the test ends. ip netns
// exec becomes the program, so the process is the program itself and a
// signal to it reaches the program.
func (h *Host) Start(env []string, name string, args ...string) *testutil.Process {
	h.bed.t.Helper()
	return testutil.Start(h.bed.t, env, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Run runs name with args inside the host to completion and returns its
// stdout, stderr and exit status.
func (h *Host) Run(timeout time.Duration, name string, args ...string) (stdout, stderr string, code int) {
	h.bed.t.Helper()
	var out, errOut bytes.Buffer
	cmd := h.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		h.bed.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		h.bed.t.Fatalf("testbed: %s in %s still running after %v\nstderr:\n%s", name, h.NS, timeout, errOut.String())
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// SetHosts writes the host's /etc/hosts, which processes started in it
// afterwards, and those that read it again, see: localhost and names.
func (h *Host) SetHosts(names map[string]string) {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n")
	for name, ip := range names {
		fmt.Fprintf(&b, "%s %s\n", ip, name)
	}
	path := filepath.Join("/etc/netns", h.NS, "hosts")
	// In place, not renamed over: ip netns exec bind-mounts the file
	// itself, so processes already running see new contents only.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		_, err = f.WriteString(b.String())
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		h.bed.t.Fatal(err)
	}
}

// RemoveDefaultRoute leaves the host with a route to the switch only, as a
// host with no way out has.
func (h *Host) RemoveDefaultRoute() {
	h.bed.t.Helper()
	h.bed.ip("-n", h.NS, "route", "del", "default")
}

// Cut takes the host's cable out: the switch's end goes down, and what the
// host sends or is sent is lost, with no reset to say so, as when a link
// or a switch port fails.
func (h *Host) Cut() {
	h.bed.t.Helper()
	h.bed.ip("-n", h.bed.swNS, "link", "set", h.port, "down")
}

// Reconnect puts the cable back.
func (h *Host) Reconnect() {
	h.bed.t.Helper()
	h.bed.ip("-n", h.bed.swNS, "link", "set", h.port, "up")
}

// Split partitions the network: the hosts given are moved to a second
// bridge, where they reach each other but none of the rest.
func (b *Bed) Split(hosts ...*Host) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range hosts {
		b.ip("-n", b.swNS, "link", "set", h.port, "master", "br1")
		b.split[h] = true
	}
}

// Heal ends a Split: every host is back on one bridge.
func (b *Bed) Heal() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for h := range b.split {
		b.ip("-n", b.swNS, "link", "set", h.port, "master", "br0")
		delete(b.split, h)
	}
}

// Shape limits the host's link to rate (a tc rate, such as "2mbit") both
// ways, with a token bucket: bursts beyond a few kilobytes queue and then
// drop, as on a slow line.
func (h *Host) Shape(rate string) {
	h.bed.t.Helper()
	tbf := []string{"qdisc", "replace", "dev", "", "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "200ms"}
	out := append([]string{"-n", h.bed.swNS}, tbf...)
	out[5] = h.port
	in := append([]string{"-n", h.NS}, tbf...)
	in[5] = "eth0"
	run(h.bed.t, "tc", out...)
	run(h.bed.t, "tc", in...)
}
