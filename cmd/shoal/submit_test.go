package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
)

// threeNodes starts a three-node grid of processes with extra node args.
func threeNodes(t *testing.T, args ...string) []*gridNode {
	t.Helper()
	a := startGridNode(t, "a", "", args...)
	b := startGridNode(t, "b", a.Gossip, args...)
	c := startGridNode(t, "c", a.Gossip, args...)
	all := []*gridNode{a, b, c}
	for _, n := range all {
		awaitState(t, all, n.Name, grid.StateAlive, 15*time.Second)
	}
	return all
}

func readSummary(t *testing.T, path string) summary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("summary %s: %v", b, err)
	}
	return s
}

func TestSubmitHundredThousandItemsInOrder(t *testing.T) {
	nodes := threeNodes(t)
	sum := filepath.Join(t.TempDir(), "summary.json")
	stdout, stderr, code := runShoal(t, nil, "submit", "--seed", nodes[0].RPC, "--range", "0:100000", "--summary-json", sum, "square")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 100_000 {
		t.Fatalf("%d lines", len(lines))
	}
	for i, l := range lines {
		if l != strconv.Itoa(i*i) {
			t.Fatalf("line %d = %q, want %d", i, l, i*i)
		}
	}
	s := readSummary(t, sum)
	if s.Items != 100_000 || s.OK != 100_000 || s.Failed != 0 || len(s.PerNode) != 3 {
		t.Fatalf("summary %+v", s)
	}
	if !strings.Contains(stderr, "items 100000, ok 100000, failed 0") {
		t.Fatalf("summary line: %q", stderr)
	}
	t.Logf("100,000 squares through shoal submit: %.0f items/s (%v)", s.ItemsPerSec, s.PerNode)
}

func TestSubmitSurvivesKilledNode(t *testing.T) {
	nodes := threeNodes(t)
	input := filepath.Join(t.TempDir(), "in.jsonl")
	var b strings.Builder
	for i := 0; i < 400; i++ {
		b.WriteString("10\n") // sleep 10ms each: a few seconds over 6 slots
	}
	os.WriteFile(input, []byte(b.String()), 0o644)
	sum := filepath.Join(t.TempDir(), "summary.json")
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--seed", nodes[0].RPC, "--input", input,
		"--format", "records", "--summary-json", sum, "sleep")
	testutil.WaitFor(t, 15*time.Second, "c to be working on the job", func() bool {
		return scrape(t, nodes[2].HTTP)["shoal_rpc_calls_total,method=shoal.map,outcome=ok"] > 3
	})
	nodes[2].Signal(syscall.SIGKILL)
	if code := p.Wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d after a node died\n%s", code, p.Stderr())
	}
	seen := make(map[int]int)
	for _, line := range strings.Split(strings.TrimSpace(p.Stdout()), "\n") {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Error != "" || fmt.Sprint(r.Result) != "10" {
			t.Fatalf("record %+v", r)
		}
		seen[r.Index]++
	}
	for i := 0; i < 400; i++ {
		if seen[i] != 1 {
			t.Fatalf("item %d delivered %d times", i, seen[i])
		}
	}
	s := readSummary(t, sum)
	t.Logf("with c killed mid-job: %+v", s)
	if s.Retries == 0 {
		t.Fatal("no item was retried although a node died mid-job")
	}
}

func TestSubmitItemErrorsExitTwo(t *testing.T) {
	nodes := threeNodes(t)
	sum := filepath.Join(t.TempDir(), "summary.json")
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--seed", nodes[0].RPC, "--range", "88:96", "--summary-json", sum, "fib")
	if code := p.Wait(processTimeout); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	// The summary matters most when items failed (it was once removed
	// with the exit status 2).
	if s := readSummary(t, sum); s.Items != 8 || s.OK != 5 || s.Failed != 3 {
		t.Fatalf("summary %+v", s)
	}
	lines := strings.Split(strings.TrimSpace(p.Stdout()), "\n")
	want := []string{"1100087778366101931", "1779979416004714189", "2880067194370816120", "4660046610375530309", "7540113804746346429", "null", "null", "null"}
	if strings.Join(lines, ",") != strings.Join(want, ",") {
		t.Fatalf("stdout %v", lines)
	}
	for _, i := range []int{5, 6, 7} {
		if !strings.Contains(p.Stderr(), fmt.Sprintf("item %d: BadArguments: fib: n must be between 0 and 92", i)) {
			t.Fatalf("stderr lacks item %d's error:\n%s", i, p.Stderr())
		}
	}
}

func TestSubmitUnknownFunctionFailsFast(t *testing.T) {
	nodes := threeNodes(t)
	start := time.Now()
	_, stderr, code := runShoal(t, nil, "submit", "--seed", nodes[1].RPC, "--range", "0:10", "nope")
	if code != 1 || !strings.Contains(stderr, `no live node offers "nope"`) || time.Since(start) > 10*time.Second {
		t.Fatalf("exit %d after %v: %s", code, time.Since(start), stderr)
	}
	_, stderr, code = runShoal(t, nil, "submit", "--seed", "127.0.0.1:1", "--range", "0:10", "square")
	if code != 1 || !strings.Contains(stderr, "no seed answered") {
		t.Fatalf("no node: exit %d: %s", code, stderr)
	}
	in := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(in, []byte("1\n2\n{oops\n"), 0o644)
	_, stderr, code = runShoal(t, nil, "submit", "--seed", nodes[0].RPC, "--input", in, "square")
	if code != 1 || !strings.Contains(stderr, "input line 3") {
		t.Fatalf("bad input line: exit %d: %s", code, stderr)
	}
}

func TestSubmitInterruptStopsWorkOnNodes(t *testing.T) {
	nodes := threeNodes(t)
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--seed", nodes[0].RPC, "--range", "60000:60030", "sleep")
	testutil.WaitFor(t, 15*time.Second, "the job to be running", func() bool {
		return scrape(t, nodes[0].HTTP)["shoal_executor_running"] > 0
	})
	p.Signal(syscall.SIGINT)
	if code := p.Wait(10 * time.Second); code != 130 {
		t.Fatalf("interrupted submit exited %d, want 130", code)
	}
	for _, n := range nodes {
		testutil.WaitFor(t, 10*time.Second, n.Name+" to stop the job's work", func() bool {
			m := scrape(t, n.HTTP)
			return m["shoal_executor_running"] == 0 && m["shoal_executor_queued"] == 0
		})
	}
}

func TestSubmitSecondRunFromMemcached(t *testing.T) {
	mc := testutil.StartMemcached(t)
	nodes := threeNodes(t, "--memcached", mc.Addr)
	dir := t.TempDir()
	first, second := filepath.Join(dir, "1.json"), filepath.Join(dir, "2.json")
	out1, _, code := runShoal(t, nil, "submit", "--seed", nodes[0].RPC, "--range", "0:2000", "--summary-json", first, "square")
	if code != 0 || readSummary(t, first).Cached != 0 {
		t.Fatalf("first run: exit %d, %+v", code, readSummary(t, first))
	}
	// Nodes store results after replying; wait until all 2,000 are in.
	testutil.WaitFor(t, 10*time.Second, "the results to be stored", func() bool {
		stored := 0.0
		for _, n := range nodes {
			stored += scrape(t, n.HTTP)["shoal_cache_stored_total"]
		}
		return stored >= 2000
	})
	out2, _, code := runShoal(t, nil, "submit", "--seed", nodes[1].RPC, "--range", "0:2000", "--summary-json", second, "square")
	if s := readSummary(t, second); code != 0 || s.Cached != 2000 || out2 != out1 {
		t.Fatalf("second run: exit %d, %+v, same output %v", code, s, out2 == out1)
	}
	_, _, code = runShoal(t, nil, "submit", "--seed", nodes[1].RPC, "--range", "0:2000", "--no-cache", "--summary-json", second, "square")
	if s := readSummary(t, second); code != 0 || s.Cached != 0 {
		t.Fatalf("--no-cache run: %+v", s)
	}
}

func TestSubmitSurvivesMemcachedDying(t *testing.T) {
	mc := testutil.StartMemcached(t)
	nodes := threeNodes(t, "--memcached", mc.Addr)
	dir := t.TempDir()
	sum, input := filepath.Join(dir, "summary.json"), filepath.Join(dir, "in.jsonl")
	var b strings.Builder
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&b, "[\"text-%d\", 3000]\n", i) // cacheable CPU work, a few seconds in all
	}
	os.WriteFile(input, []byte(b.String()), 0o644)
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--seed", nodes[0].RPC, "--input", input,
		"--chunk", "10", "--summary-json", sum, "sha256")
	testutil.WaitFor(t, 15*time.Second, "results to reach memcached", func() bool {
		return scrape(t, nodes[0].HTTP)["shoal_cache_stored_total"] > 0
	})
	mc.Stop()
	if code := p.Wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d with memcached gone\n%s", code, p.Stderr())
	}
	if s := readSummary(t, sum); s.OK != 1500 {
		t.Fatalf("summary %+v", s)
	}
	// memcached died while the job ran: the nodes saw it fail.
	failures := 0.0
	for _, n := range nodes {
		failures += scrape(t, n.HTTP)["shoal_cache_errors_total"]
	}
	if failures == 0 {
		t.Fatal("no node saw memcached fail; it died after the job")
	}
}
