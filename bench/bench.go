// Package bench holds Shoal's benchmark scenarios, which `shoal bench`
// runs and `go test -bench . ./bench` can run too. Each scenario measures
// the systems it compares side by side in one run, taking turns round by
// round, so a noisy machine slows them alike instead of faking a result:
//
//   - rpc: a Shoal call against Go's net/rpc and a raw TCP echo round trip,
//     one caller and many;
//   - map: trivial map jobs over grids of 1, 2 and 3 `shoal node`
//     processes, beside the floors of the same job on this machine (a
//     plain loop, msgpack, loopback TCP between two processes) and the
//     same job through `shoal submit`, and CPU-bound ones over 1 and 2;
//   - memory: the client's and the nodes' peak resident memory against
//     the size of a `shoal submit --range` job;
//   - dask: the trivial job through Dask's client.map and through Shoal,
//     over as many worker processes as node processes, where Dask is
//     installed;
//   - cache: the same job cold and warm on node processes, with memcached
//     and with the grid cache.
//
// Run returns a Report: every figure, the machine and the targets Shoal
// aims for. WriteTable prints it for people, encoding/json for machines,
// and WritePlot draws it.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The scenarios, in the order Run runs them.
const (
	ScenarioRPC    = "rpc"
	ScenarioMap    = "map"
	ScenarioMemory = "memory"
	ScenarioDask   = "dask"
	ScenarioCache  = "cache"
)

// Scenarios lists every scenario.
var Scenarios = []string{ScenarioRPC, ScenarioMap, ScenarioMemory, ScenarioDask, ScenarioCache}

// Config sizes a run. A zero field takes its value from DefaultConfig.
type Config struct {
	RPC    RPCConfig    `json:"rpc"`
	Map    MapConfig    `json:"map"`
	Memory MemoryConfig `json:"memory"`
	Dask   DaskConfig   `json:"dask"`
	Cache  CacheConfig  `json:"cache"`
	// Version is the Shoal version recorded in the report.
	Version string `json:"-"`
	// Progress receives a line as each step starts; nil discards them.
	Progress io.Writer `json:"-"`
}

// DefaultConfig is a full run: a few minutes on a 2-core machine.
func DefaultConfig() Config {
	return Config{
		RPC: RPCConfig{Duration: 3 * time.Second, Turns: 3, Callers: []int{1, 64}, Payload: 64},
		Map: MapConfig{Nodes: []int{1, 2, 3}, Items: 100_000, SubmitItems: 1_000_000, Jobs: 5, OneItemJobs: 200,
			CPUNodes: []int{1, 2}, CPUItems: 400, CPURounds: 20_000},
		Memory: MemoryConfig{Sizes: []int{1_000_000, 10_000_000}, Nodes: 2, BudgetMiB: 1024},
		Dask:   DaskConfig{Workers: 2, Items: 5_000, Jobs: 3},
		Cache:  CacheConfig{Nodes: 3, Memcached: 3, Items: 100_000, Rounds: 500, Jobs: 5},
	}
}

// QuickConfig is a run of about a minute, for a first look.
func QuickConfig() Config {
	return Config{
		RPC: RPCConfig{Duration: 600 * time.Millisecond, Turns: 3, Callers: []int{1, 64}, Payload: 64},
		Map: MapConfig{Nodes: []int{1, 2, 3}, Items: 20_000, SubmitItems: 200_000, Jobs: 3, OneItemJobs: 50,
			CPUNodes: []int{1, 2}, CPUItems: 100, CPURounds: 20_000},
		Memory: MemoryConfig{Sizes: []int{100_000, 1_000_000}, Nodes: 2, BudgetMiB: 1024},
		Dask:   DaskConfig{Workers: 2, Items: 2_000, Jobs: 1},
		Cache:  CacheConfig{Nodes: 3, Memcached: 3, Items: 20_000, Rounds: 500, Jobs: 3},
	}
}

// withDefaults fills every zero field of c from d.
func (c Config) withDefaults(d Config) Config {
	fill(&c.RPC.Duration, d.RPC.Duration)
	fill(&c.RPC.Turns, d.RPC.Turns)
	fill(&c.RPC.Payload, d.RPC.Payload)
	if len(c.RPC.Callers) == 0 {
		c.RPC.Callers = d.RPC.Callers
	}
	if len(c.Map.Nodes) == 0 {
		c.Map.Nodes = d.Map.Nodes
	}
	if len(c.Map.CPUNodes) == 0 {
		c.Map.CPUNodes = d.Map.CPUNodes
	}
	fill(&c.Map.Items, d.Map.Items)
	fill(&c.Map.SubmitItems, d.Map.SubmitItems)
	fill(&c.Map.Jobs, d.Map.Jobs)
	fill(&c.Map.OneItemJobs, d.Map.OneItemJobs)
	fill(&c.Map.CPUItems, d.Map.CPUItems)
	fill(&c.Map.CPURounds, d.Map.CPURounds)
	if len(c.Memory.Sizes) == 0 {
		c.Memory.Sizes = d.Memory.Sizes
	}
	fill(&c.Memory.Nodes, d.Memory.Nodes)
	fill(&c.Memory.BudgetMiB, d.Memory.BudgetMiB)
	fill(&c.Dask.Workers, d.Dask.Workers)
	fill(&c.Dask.Items, d.Dask.Items)
	fill(&c.Dask.Jobs, d.Dask.Jobs)
	fill(&c.Cache.Nodes, d.Cache.Nodes)
	fill(&c.Cache.Memcached, d.Cache.Memcached)
	fill(&c.Cache.Items, d.Cache.Items)
	fill(&c.Cache.Rounds, d.Cache.Rounds)
	fill(&c.Cache.Jobs, d.Cache.Jobs)
	return c
}

func fill[T int | time.Duration](field *T, def T) {
	if *field == 0 {
		*field = def
	}
}

// Validate reports the first size that cannot work, naming it as the
// flags of `shoal bench` do.
func (c Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{
		{"turns", c.RPC.Turns}, {"payload", c.RPC.Payload},
		{"items", c.Map.Items}, {"submit-items", c.Map.SubmitItems}, {"jobs", c.Map.Jobs}, {"one-item-jobs", c.Map.OneItemJobs},
		{"cpu-items", c.Map.CPUItems}, {"cpu-rounds", c.Map.CPURounds},
		{"memory-nodes", c.Memory.Nodes}, {"memory-budget", c.Memory.BudgetMiB},
		{"dask-workers", c.Dask.Workers}, {"dask-items", c.Dask.Items}, {"dask-jobs", c.Dask.Jobs},
		{"cache-nodes", c.Cache.Nodes}, {"memcached-servers", c.Cache.Memcached},
		{"cache-items", c.Cache.Items}, {"cache-rounds", c.Cache.Rounds}, {"cache-jobs", c.Cache.Jobs},
	}
	for _, p := range positive {
		if p.v < 1 {
			return fmt.Errorf("bench: %s must be at least 1, got %d", p.name, p.v)
		}
	}
	if c.RPC.Duration < time.Millisecond*time.Duration(c.RPC.Turns) {
		return fmt.Errorf("bench: duration %v is too short for %d turns", c.RPC.Duration, c.RPC.Turns)
	}
	for _, list := range []struct {
		name string
		v    []int
	}{{"callers", c.RPC.Callers}, {"nodes", c.Map.Nodes}, {"cpu-nodes", c.Map.CPUNodes}, {"memory-sizes", c.Memory.Sizes}} {
		for _, n := range list.v {
			if n < 1 {
				return fmt.Errorf("bench: %s must each be at least 1, got %v", list.name, list.v)
			}
		}
		if len(list.v) != len(slices.Compact(slicesSorted(list.v))) {
			return fmt.Errorf("bench: %s repeat a value: %v", list.name, list.v)
		}
	}
	return nil
}

// Report is every figure of a run.
type Report struct {
	Shoal   string        `json:"shoal_version"`
	Machine Machine       `json:"machine"`
	Started time.Time     `json:"started"`
	Seconds float64       `json:"seconds"`
	Config  Config        `json:"config"`
	RPC     *RPCReport    `json:"rpc,omitempty"`
	Map     *MapReport    `json:"map,omitempty"`
	Memory  *MemoryReport `json:"memory,omitempty"`
	Dask    *DaskReport   `json:"dask,omitempty"`
	Cache   *CacheReport  `json:"cache,omitempty"`
	Targets []Target      `json:"targets"`
}

// Run runs the named scenarios (all of them when none are named) and
// reports every figure. The map, memory and dask scenarios need the shoal
// binary, in cfg.Map.Binary (which the others default to), as do the
// cache scenario's nodes.
func Run(ctx context.Context, cfg Config, scenarios ...string) (*Report, error) {
	if len(scenarios) == 0 {
		scenarios = Scenarios
	}
	want := make(map[string]bool)
	for _, s := range scenarios {
		if !slices.Contains(Scenarios, s) {
			return nil, fmt.Errorf("bench: unknown scenario %q: want one of %s", s, strings.Join(Scenarios, ", "))
		}
		want[s] = true
	}
	cfg = cfg.withDefaults(DefaultConfig())
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, bin := range []*string{&cfg.Memory.Binary, &cfg.Dask.Binary, &cfg.Cache.Binary} {
		if *bin == "" {
			*bin = cfg.Map.Binary
		}
	}
	for _, s := range []string{ScenarioMap, ScenarioMemory, ScenarioDask, ScenarioCache} {
		if want[s] && cfg.Map.Binary == "" {
			return nil, fmt.Errorf("bench: the %s scenario needs the shoal binary to start nodes from", s)
		}
	}
	r := &Report{Shoal: cfg.Version, Machine: DescribeMachine(), Started: time.Now(), Config: cfg}
	p := cfg.Progress
	var err error
	if want[ScenarioRPC] {
		if r.RPC, err = RunRPC(ctx, cfg.RPC, p); err != nil {
			return nil, err
		}
	}
	if want[ScenarioMap] {
		if r.Map, err = RunMap(ctx, cfg.Map, p); err != nil {
			return nil, err
		}
	}
	if want[ScenarioMemory] {
		if r.Memory, err = RunMemory(ctx, cfg.Memory, p); err != nil {
			return nil, err
		}
	}
	if want[ScenarioDask] {
		if r.Dask, err = RunDask(ctx, cfg.Dask, p); err != nil {
			return nil, err
		}
	}
	if want[ScenarioCache] {
		if r.Cache, err = RunCache(ctx, cfg.Cache, p); err != nil {
			return nil, err
		}
	}
	r.Seconds = time.Since(r.Started).Seconds()
	r.Targets = r.targets()
	return r, nil
}

// progressLog writes a line per step to a writer that may be nil.
type progressLog struct{ w io.Writer }

func (p progressLog) printf(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// Target is one figure Shoal aims for on a 2-core machine, and whether this
// run met it.
type Target struct {
	What  string  `json:"what"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Goal  string  `json:"goal"`
	Met   bool    `json:"met"`
}

// targets checks the figures Shoal aims for on a 2-core machine, among
// those this run measured: the rpc ones at 1 and 64 callers, the map one
// over 3 nodes.
func (r *Report) targets() []Target {
	var ts []Target
	atMost := func(what string, v float64, unit string, limit float64) {
		ts = append(ts, Target{what, v, unit, "<= " + formatFigure(limit, unit), v > 0 && v <= limit})
	}
	atLeast := func(what string, v float64, unit string, limit float64) {
		ts = append(ts, Target{what, v, unit, ">= " + formatFigure(limit, unit), v >= limit})
	}
	if rpc := r.RPC; rpc != nil {
		if rpc.SequentialVsEcho > 0 {
			atMost("one caller: Shoal call time / raw TCP echo time", rpc.SequentialVsEcho, "x", 2)
		}
		if s, n := rpc.Result("shoal", 64), rpc.Result("net/rpc", 64); s != nil && n != nil {
			atLeast("64 callers: Shoal calls/s / net/rpc calls/s", Ratio(s.CallsPerSecond, n.CallsPerSecond), "x", 2.5)
		}
		if rpc.ProcessSequentialVsEcho > 0 {
			atMost("one caller, separate process: Shoal call time / raw TCP echo time", rpc.ProcessSequentialVsEcho, "x", 1.5)
		}
		if s, n := rpc.ResultAt(ChildProcess, "shoal", 64), rpc.ResultAt(ChildProcess, "net/rpc", 64); s != nil && n != nil {
			atLeast("64 callers, separate process: Shoal calls/s / net/rpc calls/s", Ratio(s.CallsPerSecond, n.CallsPerSecond), "x", 2.5)
		}
	}
	if m := r.Map; m != nil {
		for _, res := range m.Trivial {
			if res.Nodes == 3 {
				atLeast("trivial map items/s over 3 nodes", res.ItemsPerSecond, "items/s", 300_000)
			}
		}
		if c := m.Cost(CostGoAPI); c != nil && c.Nodes == 1 {
			atLeast("trivial map items/s, Go API, client and 1 node process", c.ItemsPerSecond, "items/s", 1_000_000)
		}
		if c := m.Cost(CostSubmit); c != nil && c.Nodes == 1 {
			atLeast("trivial map items/s, shoal submit --range to a pipe, 1 node", c.ItemsPerSecond, "items/s", 800_000)
		}
		if m.IdleMiB > 0 {
			atMost("idle node, resident memory", m.IdleMiB, "MiB", 40)
		}
	}
	if mem := r.Memory; mem != nil && len(mem.Results) > 0 {
		if last := mem.Results[len(mem.Results)-1]; last.ClientPeakMiB > 0 {
			atMost(fmt.Sprintf("client peak resident memory, shoal submit of %s items", thousands(float64(last.Items))), last.ClientPeakMiB, "MiB", 64)
		}
	}
	if d := r.Dask; d != nil && d.ShoalVsDask > 0 {
		atLeast("trivial map items/s, Shoal / Dask's client.map", d.ShoalVsDask, "x", 1000)
	}
	if c := r.Cache; c != nil {
		for _, b := range c.Backends {
			atLeast("warm (cached) items/s, "+b.Name, b.WarmItemsPerSecond, "items/s", 150_000)
		}
	}
	return ts
}

// Machine describes where a run happened.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	MemoryMiB  int64  `json:"memory_mib,omitempty"`
	OS         string `json:"os"`
	Kernel     string `json:"kernel,omitempty"`
	Go         string `json:"go"`
}

// DescribeMachine reads what it can of this machine; figures it cannot
// read stay empty.
func DescribeMachine() Machine {
	m := Machine{
		CPU:        "unknown",
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		Go:         runtime.Version(),
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		var kb int64
		if _, err := fmt.Sscanf(v, "%d kB", &kb); err == nil {
			m.MemoryMiB = kb >> 10
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = string(bytes.TrimSpace(b))
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc
// file, or "".
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
