package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/bench"
)

// TestBenchCommand runs `shoal bench` small through the binary: the rpc
// scenario with its table, JSON and plot, and the map scenario, whose
// nodes the binary starts from itself, with --quick sizes overridden by
// flags.
func TestBenchCommand(t *testing.T) {
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "rpc.json"), filepath.Join(dir, "rpc.svg")
	stdout, stderr, code := runShoal(t, nil, "bench", "rpc", "--duration", "40ms", "--turns", "2", "--callers", "1,3",
		"--json", jsonPath, "--plot", plotPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"rpc: 64-byte echo", "3        in-process     tcp-echo", "one caller: a Shoal call takes", "one caller: Shoal call time / raw TCP echo time",
		"3        child process  tcp-echo", "one caller, separate process: Shoal call time / raw TCP echo time"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "rpc: 3 callers, turn 2 of 2") {
		t.Errorf("no progress on stderr:\n%s", stderr)
	}
	r := readReport(t, jsonPath)
	if r.RPC == nil || len(r.RPC.Results) != 16 || r.RPC.ProcessSequentialVsEcho <= 0 || r.Map != nil || r.Cache != nil || r.Shoal == "" || r.Machine.Cores < 1 {
		t.Errorf("JSON report: %+v", r)
	}
	if b, err := os.ReadFile(plotPath); err != nil || !strings.Contains(string(b), "<svg") {
		t.Errorf("plot: %v", err)
	}

	jsonPath = filepath.Join(dir, "map.json")
	stdout, stderr, code = runShoal(t, nil, "bench", "map", "dask", "--quick", "--nodes", "1", "--cpu-nodes", "1", "--jobs", "1",
		"--one-item-jobs", "2", "--cpu-items", "2", "--submit-items", "3000", "--python", filepath.Join(dir, "no-python"), "--json", jsonPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	r = readReport(t, jsonPath)
	quick := bench.QuickConfig()
	if r.Map == nil || len(r.Map.Trivial) != 1 || r.Config.Map.Items != quick.Map.Items || r.Config.Map.CPURounds != quick.Map.CPURounds ||
		r.Config.Map.CPUItems != 2 || r.Map.Trivial[0].ItemsPerSecond <= 0 {
		t.Errorf("map report: %+v, config %+v", r.Map, r.Config.Map)
	}
	// The floors' TCP peer is this binary in its hidden mode.
	if tcp := r.Map.Cost(bench.CostTCP); tcp == nil || tcp.ItemsPerSecond <= 0 || r.Map.Cost(bench.CostSubmit).Items != 3000 {
		t.Errorf("map per-item costs: %+v", r.Map.PerItem)
	}
	if r.Dask == nil || !strings.Contains(r.Dask.Skipped, "no-python") || !strings.Contains(stdout, "apt-get install -y python3-distributed") {
		t.Errorf("dask without Python: %+v\n%s", r.Dask, stdout)
	}
}

func readReport(t *testing.T, path string) *bench.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return &r
}

func TestBenchCommandRejectsBadInputBeforeMeasuring(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"disk"}, `unknown scenario "disk": want rpc, map, memory, dask, cache or all`},
		{[]string{"memory", "--memory-sizes", "5,5"}, "bench: memory-sizes repeat a value: [5 5]"},
		{[]string{"dask", "--dask-items", "0"}, "bench: dask-items must be at least 1, got 0"},
		{[]string{"rpc", "--plot", filepath.Join(dir, "x.gif")}, "want a file ending in .svg or .png"},
		{[]string{"rpc", "--json", filepath.Join(dir, "no", "such", "dir.json")}, "no such file or directory"},
		{[]string{"map", "--items", "0"}, "bench: items must be at least 1, got 0"},
		{[]string{"rpc", "--callers", "1,1"}, "bench: callers repeat a value: [1 1]"},
	}
	for _, tc := range cases {
		_, stderr, code := runShoal(t, nil, append([]string{"bench"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("bench %v: exit %d, stderr %q; want 1 and %q", tc.args, code, stderr, tc.want)
		}
		if strings.Contains(stderr, "turn 1 of") || strings.Contains(stderr, "map: starting") {
			t.Errorf("bench %v measured before checking its input:\n%s", tc.args, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.gif")); !os.IsNotExist(err) {
		t.Errorf("the rejected plot file was left behind: %v", err)
	}
}
