package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
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

// pipedSubmit is `shoal submit` with its stdin a pipe the test writes to
// and its stdout read line by line.
type pipedSubmit struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at its end
	stderr *bytes.Buffer
	exited chan struct{} // closed once it has exited
}

func startPipedSubmit(t *testing.T, args ...string) *pipedSubmit {
	t.Helper()
	p := &pipedSubmit{cmd: exec.Command(testutil.ShoalBinary(t), append([]string{"submit"}, args...)...),
		lines: make(chan string, 100), stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	go func() {
		<-read
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Error("shoal submit still running 10s after it was killed")
		}
		if t.Failed() {
			t.Logf("stderr of shoal submit:\n%s", p.stderr)
		}
	})
	return p
}

// line returns the next line of stdout, failing the test if none comes
// within timeout.
func (p *pipedSubmit) line(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("stdout ended")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no line on stdout within %v", timeout)
	}
	return ""
}

// wait waits for the command to exit and returns its status.
func (p *pipedSubmit) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(processTimeout):
		t.Fatalf("shoal submit still running after %v", processTimeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestSubmitStreamsStdin: results of the lines written so far come out
// while stdin stays open, and the rest follow once it is written (stdin
// was once read to its end before the first item was sent).
func TestSubmitStreamsStdin(t *testing.T) {
	n := startGridNode(t, "a", "")
	p := startPipedSubmit(t, "--seed", n.RPC, "--input", "-", "square")
	io.WriteString(p.stdin, "1\n2\n")
	// Generous: the race detector and a loaded machine slow everything,
	// and the input never ends until this test writes more.
	for _, want := range []string{"1", "4"} {
		if got := p.line(t, processTimeout); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	io.WriteString(p.stdin, "[3]\n\n4\n")
	p.stdin.Close()
	for _, want := range []string{"9", "16"} {
		if got := p.line(t, processTimeout); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(p.stderr.String(), "items 4, ok 4, failed 0") {
		t.Fatalf("summary: %s", p.stderr)
	}
}

// TestSubmitInterruptWhileStdinWaits: Ctrl-C while the input waits for
// its next line ends the command at once with 130, its results printed.
func TestSubmitInterruptWhileStdinWaits(t *testing.T) {
	n := startGridNode(t, "a", "")
	p := startPipedSubmit(t, "--seed", n.RPC, "--input", "-", "square")
	io.WriteString(p.stdin, "12\n")
	if got := p.line(t, processTimeout); got != "144" {
		t.Fatalf("got %q", got)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t); code != 130 {
		t.Fatalf("exit %d after Ctrl-C, want 130", code)
	}
}

// TestSubmitBadLineAfterGoodOnes: the lines before a bad one run and
// print; the command then exits 1 naming the bad line, and writes no
// summary file.
func TestSubmitBadLineAfterGoodOnes(t *testing.T) {
	n := startGridNode(t, "a", "")
	dir := t.TempDir()
	in, sum := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "sum.json")
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	b.WriteString("\n[7, 8] 9\n10\n")
	os.WriteFile(in, []byte(b.String()), 0o644)
	stdout, stderr, code := runShoal(t, nil, "submit", "--seed", n.RPC, "--input", in, "--summary-json", sum, "square")
	if code != 1 || !strings.Contains(stderr, "input line 1002: more than one JSON value on the line") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 1000 || lines[999] != "998001" {
		t.Fatalf("%d lines printed, the last %q", len(lines), lines[len(lines)-1])
	}
	if _, err := os.Stat(sum); !os.IsNotExist(err) {
		t.Fatalf("summary file: %v", err)
	}
}

// TestSubmitRangeNearTheEnds: ranges reaching the ends of int64 stop
// there instead of wrapping round (they once ran on until 100 million
// items were refused), counting up and down.
func TestSubmitRangeNearTheEnds(t *testing.T) {
	n := startGridNode(t, "a", "")
	cases := []struct {
		spec string
		want []string
	}{
		{"9223372036854775800:9223372036854775807:2", []string{"9223372036854775800", "9223372036854775802", "9223372036854775804", "9223372036854775806"}},
		{"9223372036854775806:9223372036854775807", []string{"9223372036854775806"}},
		{"-9223372036854775800:-9223372036854775808:-3", []string{"-9223372036854775800", "-9223372036854775803", "-9223372036854775806"}},
		{"-9223372036854775808:9223372036854775807:9223372036854775807", []string{"-9223372036854775808", "-1", "9223372036854775806"}},
		{"9223372036854775807:-9223372036854775808:-9223372036854775808", []string{"9223372036854775807", "-1"}},
	}
	for _, tc := range cases {
		stdout, stderr, code := runShoal(t, nil, "submit", "--seed", n.RPC, "--range", tc.spec, "--no-cache", "echo")
		if got := strings.Fields(stdout); code != 0 || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("--range %s: exit %d, %v, want %v\n%s", tc.spec, code, got, tc.want, stderr)
		}
	}
}

// TestResultsPrintAsEncodingJSONDoes: results written straight from their
// msgpack read as encoding/json writes the decoded value, plain values
// taking the direct path, and records as encoding/json writes a record.
func TestResultsPrintAsEncodingJSONDoes(t *testing.T) {
	plain := []any{nil, true, false, 0, 1, -1, 127, -32, -33, 128, 255, 256, 65535, -40000, 1 << 40,
		math.MaxInt64, math.MinInt64, uint64(math.MaxUint64), 1.5, -2.0, 1e-7, 1e21, 1e20, 123456789.125, 5e-324,
		float32(0.1), float32(3e38), math.NaN(), math.Inf(1), math.Inf(-1),
		"", "plain text", strings.Repeat("x", 40), strings.Repeat("y", 200)}
	other := []any{"<b>&", "quote\"", "tab\t", "héllo", "bad \xff utf8", strings.Repeat("z", 300),
		[]int{1, 2}, map[string]any{"a": 1.5, "b": []any{"x", nil}}, []byte("bin")}
	for k, v := range append(plain, other...) {
		raw, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var decoded any
		if err := msgpack.Unmarshal(raw, &decoded); err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(jsonValue(decoded))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendResult(nil, raw); string(got) != string(want) {
			t.Errorf("%T %v: printed %s, encoding/json %s", v, v, got, want)
		}
		if _, direct := appendPlainJSON(nil, raw); direct != (k < len(plain)) {
			t.Errorf("%T %v: direct path %v", v, v, direct)
		}
	}
	items := []shoal.Item[msgpack.RawMessage]{
		{Index: 0, Value: msgpack.RawMessage{0x05}, Node: "a", Attempts: 1},
		{Index: 7, Value: msgpack.RawMessage{0xc0}, Node: "b", Attempts: 2},
		{Index: 8, Value: msgpack.RawMessage{0xa1, 'x'}, Cached: true},
		{Index: 9, Err: rpc.Errorf(rpc.KindBadArguments, "want <int>, got \"x\""), Node: "nöde", Attempts: 3},
	}
	for _, it := range items {
		r := record{Index: it.Index, Cached: it.Cached, Node: it.Node, Attempts: it.Attempts}
		if it.Err != nil {
			r.Error = rpc.ErrorOf(it.Err).Error()
		} else {
			msgpack.Unmarshal(it.Value, &r.Result)
		}
		want, _ := json.Marshal(r)
		if got := appendRecord(nil, it); string(got) != string(want) {
			t.Errorf("record %+v: printed %s, encoding/json %s", it, got, want)
		}
	}
}
