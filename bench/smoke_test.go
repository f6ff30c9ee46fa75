package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// tinyConfig runs every scenario at a size that takes seconds.
func tinyConfig(t *testing.T) Config {
	return Config{
		RPC: RPCConfig{Binary: testutil.ShoalBinary(t), Duration: 60 * time.Millisecond, Turns: 2, Callers: []int{1, 4}, Payload: 16},
		Map: MapConfig{Binary: testutil.ShoalBinary(t), Nodes: []int{1, 2}, Items: 2500, SubmitItems: 700, Jobs: 1, OneItemJobs: 3,
			CPUNodes: []int{1, 2}, CPUItems: 4, CPURounds: 200},
		Memory:  MemoryConfig{Sizes: []int{3000, 300}, Nodes: 1},
		Dask:    DaskConfig{Workers: 1, Items: 40, Jobs: 1},
		Cache:   CacheConfig{Nodes: 2, Memcached: 2, Items: 300, Rounds: 10, Jobs: 2},
		Version: "test",
	}
}

// TestEveryScenarioAtATinySize runs `shoal bench all` small, against real
// node and memcached processes (and Dask, where it is installed), and
// checks every figure is there and consistent, and that the table, the
// JSON and the plots come out.
func TestEveryScenarioAtATinySize(t *testing.T) {
	testutil.CheckGoroutines(t)
	memcached := os.Getenv("SHOAL_REQUIRE_MEMCACHED") == "1"
	dask := os.Getenv("SHOAL_REQUIRE_DASK") == "1"
	var progress bytes.Buffer
	cfg := tinyConfig(t)
	cfg.Progress = &progress
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	if r.Shoal != "test" || r.Machine.Cores < 1 || r.Machine.Go != runtime.Version() {
		t.Errorf("report header: %q %+v", r.Shoal, r.Machine)
	}
	if len(r.RPC.Results) != 16 {
		t.Fatalf("%d rpc results, want 4 systems x 2 caller counts x 2 places of the server", len(r.RPC.Results))
	}
	for _, res := range r.RPC.Results {
		l := res.Latency
		if res.Calls < 1 || res.CallsPerSecond <= 0 || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
			t.Errorf("rpc %s x%d: %+v", res.System, res.Callers, res)
		}
		if res.System == "shoal" && res.ShoalRatio != 1 {
			t.Errorf("Shoal against itself: %v", res.ShoalRatio)
		}
	}
	if r.RPC.SequentialVsEcho <= 0 || r.RPC.ConcurrentVsNetRPC <= 0 || r.RPC.ConcurrentCallers != 4 ||
		r.RPC.ProcessSequentialVsEcho <= 0 || r.RPC.ProcessConcurrentVsNetRPC <= 0 {
		t.Errorf("rpc ratios: %+v", r.RPC)
	}

	m := r.Map
	for _, results := range [][]MapResult{m.Trivial, m.CPU} {
		if len(results) != 2 || results[0].Nodes != 1 || results[1].Nodes != 2 {
			t.Fatalf("map grids: %+v", results)
		}
		for _, res := range results {
			if len(res.JobSeconds) != 1 || res.ItemsPerSecond <= 0 || res.MicrosPerItem <= 0 || res.SpeedUp <= 0 {
				t.Errorf("map over %d nodes: %+v", res.Nodes, res)
			}
		}
	}
	if m.CPU[0].Slots != 1 || m.LocalCPUItemMicros <= 0 || m.OneItemJob.P50 <= 0 || m.OneItemJobNodes != 2 {
		t.Errorf("map: %+v", m)
	}
	if runtime.GOOS == "linux" && (m.IdleMiB <= 1 || m.PeakMiB < m.IdleMiB || m.IdleAnonMiB <= 0 || m.IdleAnonMiB > m.IdleMiB) {
		t.Errorf("node memory: idle %v MiB (own %v MiB), peak %v MiB", m.IdleMiB, m.IdleAnonMiB, m.PeakMiB)
	}
	checkItemCosts(t, m, 2500, 700)

	mem := r.Memory
	if len(mem.Results) != 2 || len(mem.Skipped) != 0 {
		t.Fatalf("memory: %+v", mem)
	}
	for i, res := range mem.Results {
		if want := []int{300, 3000}[i]; res.Items != want || res.Seconds <= 0 || res.ItemsPerSecond <= 0 {
			t.Errorf("memory job %d: %+v, want %d items", i, res, want)
		}
		if runtime.GOOS == "linux" && (res.ClientPeakMiB <= 1 || len(res.NodePeakMiB) != 1 || res.NodePeakMiB[0] <= 1) {
			t.Errorf("memory job of %d items: client %v MiB, nodes %v MiB", res.Items, res.ClientPeakMiB, res.NodePeakMiB)
		}
	}

	d := r.Dask
	daskRan := d.Skipped == ""
	if dask && !daskRan {
		t.Errorf("SHOAL_REQUIRE_DASK=1 but Dask was skipped: %s", d.Skipped)
	}
	if daskRan {
		if d.Items != 40 || d.Workers != 1 || d.ThreadsPerWorker < 1 || d.Version == "" || len(d.Dask.JobSeconds) != 1 ||
			len(d.Shoal.JobSeconds) != shoalJobsPerTurn || d.Dask.ItemsPerSecond <= 0 || d.Shoal.ItemsPerSecond <= 0 ||
			d.ShoalVsDask != d.Shoal.ItemsPerSecond/d.Dask.ItemsPerSecond {
			t.Errorf("dask: %+v", d)
		}
	} else if !strings.Contains(d.Skipped, "apt-get install -y python3-distributed") {
		t.Errorf("dask skipped without saying how to install it: %q", d.Skipped)
	}

	names := []string{}
	for _, b := range r.Cache.Backends {
		names = append(names, b.Name)
		if b.ColdCached != 0 || b.WarmCached != b.Items || b.Items != 300 || len(b.WarmSeconds) != 2 ||
			b.ColdItemsPerSecond <= 0 || b.WarmItemsPerSecond <= 0 || b.WarmVsCold <= 0 {
			t.Errorf("cache %s: %+v", b.Name, b)
		}
		if b.Name == "grid cache" {
			if len(b.EntriesPerNode) != 2 || b.EntriesPerNode[0]+b.EntriesPerNode[1] != 300 || slices.Contains(b.EntriesPerNode, 0) {
				t.Errorf("grid cache entries per node %v: want two shares of the 300 results", b.EntriesPerNode)
			}
		}
	}
	wantNames := "grid cache"
	if memcached || len(r.Cache.Skipped) == 0 {
		wantNames = "memcached x2,grid cache"
	}
	if strings.Join(names, ",") != wantNames {
		t.Errorf("cache backends %v, want %s (skipped: %v)", names, wantNames, r.Cache.Skipped)
	}
	// No 64 callers, no 3 nodes; the Dask ratio only where it ran.
	wantTargets := 6 + len(r.Cache.Backends)
	if daskRan {
		wantTargets++
	}
	if len(r.Targets) != wantTargets {
		t.Errorf("%d targets, want %d: %+v", len(r.Targets), wantTargets, r.Targets)
	}
	if !strings.Contains(progress.String(), "cache: warm run 2 of 2") {
		t.Errorf("progress lacks the last step:\n%s", progress.String())
	}

	var table bytes.Buffer
	if err := WriteTable(&table, r); err != nil {
		t.Fatal(err)
	}
	wantInTable := []string{"Shoal test, go", "\nrpc: 16-byte echo", "\nmap: square of 2,500 items", "\nmap: sha256 of 200 rounds",
		"\ncache: sha256 of 10 rounds", "grid cache  ", "\ntarget  ", "idle node, resident memory",
		"\nplain Go loop of square  ", "\nShoal, shoal submit --range", "\nmemory: shoal submit --range 0:N", "\n3,000  ",
		"client peak resident memory, shoal submit of 3,000 items"}
	if daskRan {
		wantInTable = append(wantInTable, "\ndask: square of 40 items per job, 1 worker process", "Shoal does ")
	} else {
		wantInTable = append(wantInTable, "apt-get install -y python3-distributed")
	}
	for _, want := range wantInTable {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	encoded, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var decoded Report
	if err := json.Unmarshal(encoded, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.Map.Trivial[1].ItemsPerSecond != m.Trivial[1].ItemsPerSecond || decoded.Machine != r.Machine ||
		decoded.Config.Map.Items != 2500 || len(decoded.Targets) != len(r.Targets) ||
		len(decoded.Map.PerItem) != 6 || decoded.Map.PerItem[2].NanosPerItem != m.PerItem[2].NanosPerItem ||
		len(decoded.Memory.Results) != 2 || decoded.Memory.Results[1].ClientPeakMiB != mem.Results[1].ClientPeakMiB ||
		decoded.Dask.ShoalVsDask != d.ShoalVsDask || decoded.Dask.Skipped != d.Skipped {
		t.Errorf("JSON round trip lost figures:\n%s", encoded)
	}

	dir := t.TempDir()
	for _, name := range []string{"bench.svg", "bench.png"} {
		path := filepath.Join(dir, name)
		if err := WritePlot(path, r); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		magic := map[string]string{"bench.svg": "<?xml", "bench.png": "\x89PNG"}[name]
		if !bytes.HasPrefix(b, []byte(magic)) || len(b) < 10_000 {
			t.Errorf("%s: %d bytes starting %q", name, len(b), b[:min(len(b), 8)])
		}
	}
	if err := WritePlot(filepath.Join(dir, "bench.gif"), r); err == nil {
		t.Error("no error for a .gif plot")
	}
}

// checkItemCosts checks the map scenario's table of floors and Shoal's
// rows: every row measured, Shoal's rows the same figures as the grid's,
// and the ratios Shoal's time per item over each row's.
func checkItemCosts(t *testing.T, m *MapReport, items, submitItems int) {
	t.Helper()
	var names []string
	for _, c := range m.PerItem {
		names = append(names, c.Name)
		wantItems := items
		if c.Name == CostSubmit || c.Name == CostDetached {
			wantItems = submitItems
		}
		if c.Items != wantItems || len(c.JobSeconds) != 1 || c.ItemsPerSecond <= 0 || c.NanosPerItem <= 0 ||
			c.Floor != (c.Nodes == 0) || c.What == "" {
			t.Errorf("per item, %s: %+v", c.Name, c)
		}
		if math.Abs(c.NanosPerItem*c.ItemsPerSecond-1e9) > 1e3 {
			t.Errorf("per item, %s: %v ns an item at %v items/s", c.Name, c.NanosPerItem, c.ItemsPerSecond)
		}
	}
	if got := strings.Join(names, ","); got != "loop,msgpack,tcp,go-api,submit,detached" {
		t.Fatalf("per-item rows %s", got)
	}
	goAPI, submit := m.Cost(CostGoAPI), m.Cost(CostSubmit)
	if goAPI.ItemsPerSecond != m.Trivial[0].ItemsPerSecond || goAPI.Nodes != 1 || submit.Nodes != 1 || m.Cost(CostDetached).Nodes != 1 {
		t.Errorf("Shoal's rows %+v, %+v; the 1-node grid's job %+v", goAPI, submit, m.Trivial[0])
	}
	for _, c := range m.PerItem {
		if math.Abs(c.GoAPIVsThis-goAPI.NanosPerItem/c.NanosPerItem) > 1e-9*c.GoAPIVsThis ||
			math.Abs(c.SubmitVsThis-submit.NanosPerItem/c.NanosPerItem) > 1e-9*c.SubmitVsThis {
			t.Errorf("per item, %s: ratios %v and %v", c.Name, c.GoAPIVsThis, c.SubmitVsThis)
		}
	}
}

func TestRunRejectsBadScenariosAndSizes(t *testing.T) {
	if _, err := Run(context.Background(), Config{}, "rpc", "disk"); err == nil || !strings.Contains(err.Error(), `unknown scenario "disk"`) {
		t.Errorf("unknown scenario: %v", err)
	}
	for _, scenario := range []string{"map", "memory", "dask"} {
		if _, err := Run(context.Background(), Config{}, scenario); err == nil || !strings.Contains(err.Error(), "needs the shoal binary") {
			t.Errorf("%s without a binary: %v", scenario, err)
		}
	}
	if _, err := Run(context.Background(), Config{Memory: MemoryConfig{Sizes: []int{10, 10}}}, "memory"); err == nil ||
		!strings.Contains(err.Error(), "memory-sizes repeat a value") {
		t.Errorf("repeated memory sizes: %v", err)
	}
	if _, err := Run(context.Background(), Config{Map: MapConfig{CPUNodes: []int{0}}}, "map"); err == nil {
		t.Error("no error for a grid of 0 nodes")
	}
	if err := WritePlot(filepath.Join(t.TempDir(), "x.svg"), &Report{}); err == nil {
		t.Error("no error for an empty report")
	}
}
