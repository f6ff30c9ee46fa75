package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/internal/builtins"
	"github.com/shoalgrid/shoal/internal/local"
)

// MapConfig sizes the map scenario.
type MapConfig struct {
	// Binary is the shoal executable the nodes run as `shoal node`.
	Binary string `json:"-"`
	// Nodes are the grid sizes the trivial job runs on. Default 1, 2, 3.
	Nodes []int `json:"nodes"`
	// Items is the trivial job's size: square of 0..Items-1. Default
	// 100,000.
	Items int `json:"items"`
	// SubmitItems is the size of the same job run through `shoal submit
	// --range` beside the floors: larger than Items, so that starting the
	// process (some 40 ms) weighs little. Default 1,000,000.
	SubmitItems int `json:"submit_items"`
	// Jobs is how many times each job is measured per grid, after one
	// unmeasured warm-up; the median counts. Default 5.
	Jobs int `json:"jobs"`
	// OneItemJobs is how many one-item jobs measure a job's fixed cost.
	// Default 200.
	OneItemJobs int `json:"one_item_jobs"`
	// CPUNodes are the grid sizes, of one slot per node, the CPU-bound
	// job runs on. Default 1, 2.
	CPUNodes []int `json:"cpu_nodes"`
	// CPUItems is the CPU-bound job's size. Default 400.
	CPUItems int `json:"cpu_items"`
	// CPURounds is the SHA-256 rounds of one CPU-bound item. Default 20,000.
	CPURounds int `json:"cpu_rounds"`
}

// MapReport is the map scenario's figures.
type MapReport struct {
	// Trivial is the square job on each grid, smallest first.
	Trivial []MapResult `json:"trivial"`
	// OneItemJob is the latency of a job of one item on the largest grid:
	// what a job costs however small it is.
	OneItemJob      Latency `json:"one_item_job"`
	OneItemJobNodes int     `json:"one_item_job_nodes"`
	// CPU is the sha256 job on each grid of one slot per node.
	CPU []MapResult `json:"cpu"`
	// LocalCPUItemMicros is one sha256 item computed by a plain function
	// call in the bench process, timed in turns with the grids, and
	// CPUItemOverheadMicros what the grid adds to it, per item, on one node
	// of one slot (negative when noise outweighs it).
	LocalCPUItemMicros    float64 `json:"local_cpu_item_us"`
	CPUItemOverheadMicros float64 `json:"cpu_item_overhead_us"`
	// IdleMiB is the most resident memory of any node once the grids have
	// formed, before any job; PeakMiB the most any node had after the
	// trivial jobs. Zero where /proc cannot be read.
	IdleMiB float64 `json:"idle_rss_mib"`
	PeakMiB float64 `json:"peak_rss_mib"`
	// IdleAnonMiB is the most memory of its own (not pages of the binary,
	// which nodes on one machine share) any node held idle.
	IdleAnonMiB float64 `json:"idle_anon_rss_mib"`
	// PerItem is the square job's cost per item done without Shoal (the
	// floors: a plain loop, msgpack, loopback TCP) and with it (through
	// the Go API and through shoal submit, on the smallest grid), all
	// timed in turns with the grids.
	PerItem []ItemCost `json:"per_item"`
}

// ItemCost is the square job done one way: a floor of this machine, or
// Shoal end to end.
type ItemCost struct {
	// Name is loop, msgpack or tcp for the floors, go-api or submit for
	// Shoal.
	Name  string `json:"name"`
	What  string `json:"what"`
	Floor bool   `json:"floor"`
	// Nodes is the node processes Shoal's rows ran on; 0 for the floors.
	Nodes          int       `json:"nodes,omitempty"`
	Items          int       `json:"items"`
	JobSeconds     []float64 `json:"job_seconds"`
	ItemsPerSecond float64   `json:"items_per_second"`
	NanosPerItem   float64   `json:"ns_per_item"`
	// GoAPIVsThis and SubmitVsThis are Shoal's time per item, through the
	// Go API and through shoal submit, as a multiple of this row's: how
	// far Shoal is from this floor.
	GoAPIVsThis  float64 `json:"go_api_vs_this"`
	SubmitVsThis float64 `json:"submit_vs_this"`
}

// The names of the ItemCost rows.
const (
	CostLoop    = "loop"
	CostMsgpack = "msgpack"
	CostTCP     = "tcp"
	CostGoAPI   = "go-api"
	CostSubmit  = "submit"
	// CostDetached is the job run detached by a node, its results read
	// back: the extra hop beside go-api.
	CostDetached = "detached"
)

// Cost returns the row of that name, or nil.
func (m *MapReport) Cost(name string) *ItemCost {
	for i := range m.PerItem {
		if m.PerItem[i].Name == name {
			return &m.PerItem[i]
		}
	}
	return nil
}

// MapResult is one job on one grid.
type MapResult struct {
	Nodes int `json:"nodes"`
	// Slots is each node's slots; 0 means the default, one per CPU.
	Slots          int       `json:"slots"`
	Items          int       `json:"items"`
	JobSeconds     []float64 `json:"job_seconds"`
	ItemsPerSecond float64   `json:"items_per_second"`
	// MicrosPerItem is the median job's time over its items.
	MicrosPerItem float64 `json:"us_per_item"`
	// SpeedUp is ItemsPerSecond over that of the smallest grid.
	SpeedUp float64 `json:"speed_up"`
}

// RunMap measures the trivial job on grids of cfg.Nodes nodes and the
// CPU-bound job on grids of cfg.CPUNodes, each grid its own processes, the
// grids of a job taking turns. Zero fields of cfg take their defaults.
func RunMap(ctx context.Context, cfg MapConfig, progress io.Writer) (*MapReport, error) {
	cfg = Config{Map: cfg}.withDefaults(DefaultConfig()).Map
	p := progressLog{progress}
	report := &MapReport{}

	grids, err := startGrids(ctx, cfg.Binary, "trivial", cfg.Nodes, p)
	if err != nil {
		return nil, err
	}
	defer closeGrids(grids)
	if report.IdleMiB, err = mostMemory(grids, func(m local.Memory) int64 { return m.Resident }); err != nil {
		p.printf("map: resident memory not measured: %v", err)
	}
	report.IdleAnonMiB, _ = mostMemory(grids, func(m local.Memory) int64 { return m.Anon })
	squares := make([]int, cfg.Items)
	for i := range squares {
		squares[i] = i
	}
	trivial := func(g *Grid) error { return squareJob(ctx, g.Client, squares) }
	p.printf("map: starting the TCP floor's peer process")
	tcp, err := startTCPFloor(ctx, cfg.Binary, squares)
	if err != nil {
		return nil, err
	}
	defer tcp.close()
	squaresSum := squareSum(squares)
	msgpackFloor := newMsgpackFloor(squares)
	floors := []runner{
		{what: "plain loop", job: func() error {
			sum, err := squareLoop(squares)
			if err == nil && sum != squaresSum {
				err = fmt.Errorf("the loop's squares sum to %d, want %d", sum, squaresSum)
			}
			return err
		}},
		{what: "msgpack floor", job: msgpackFloor.run},
		{what: "TCP floor", job: tcp.run},
	}
	for i := range floors {
		floors[i].repeat = max(1, floorItemsPerTurn/cfg.Items)
	}
	smallest := grids[0]
	submit := runner{nodes: len(smallest.Nodes), what: "shoal submit", items: cfg.SubmitItems, job: func() error {
		_, err := submitRange(ctx, cfg.Binary, smallest.Nodes[0].RPC, cfg.SubmitItems)
		return err
	}}
	detached := runner{nodes: len(smallest.Nodes), what: "detached job", items: cfg.SubmitItems, job: func() error {
		return detachedSquares(ctx, smallest.Client, cfg.SubmitItems)
	}}
	runners := append(append(floors, onGrids(grids, trivial)...), submit, detached)
	timed, err := timeJobs(ctx, "map: trivial", runners, cfg.Jobs, cfg.Items, 0, nodePids(grids), p)
	if err != nil {
		return nil, err
	}
	report.Trivial = speedUps(timed[len(floors) : len(timed)-2])
	report.PerItem = itemCosts(timed[:len(floors)], report.Trivial[0], timed[len(timed)-2], timed[len(timed)-1])
	if err := tcp.close(); err != nil {
		p.printf("map: the TCP floor's peer: %v", err)
	}
	largest := grids[len(grids)-1]
	p.printf("map: %d one-item jobs over %d node%s", cfg.OneItemJobs, len(largest.Nodes), plural(len(largest.Nodes)))
	oneItem := make([]time.Duration, 0, cfg.OneItemJobs)
	for i := range cfg.OneItemJobs {
		start := time.Now()
		out, err := shoal.Map[int, int](ctx, largest.Client, "square", []int{i}, shoal.WithoutCache())
		if err != nil {
			return nil, fmt.Errorf("bench: one-item job: %w", err)
		}
		if out[0] != i*i {
			return nil, fmt.Errorf("bench: one-item job: square(%d) = %d", i, out[0])
		}
		oneItem = append(oneItem, time.Since(start))
	}
	report.OneItemJob, report.OneItemJobNodes = Summarize(oneItem), len(largest.Nodes)
	if report.PeakMiB, err = mostMemory(grids, func(m local.Memory) int64 { return m.Peak }); err != nil {
		p.printf("map: peak memory not measured: %v", err)
	}
	closeGrids(grids)

	cpuGrids, err := startGrids(ctx, cfg.Binary, "cpu", cfg.CPUNodes, p, "--slots", "1")
	if err != nil {
		return nil, err
	}
	defer closeGrids(cpuGrids)
	texts := make([]shoal.Args, cfg.CPUItems)
	for i := range texts {
		texts[i] = shoal.Args{"text-" + strconv.Itoa(i), cfg.CPURounds}
	}
	want, err := hashLocally(ctx, texts)
	if err != nil {
		return nil, err
	}
	hashes := func(g *Grid) error {
		out, err := shoal.Map[shoal.Args, string](ctx, g.Client, "sha256", texts, shoal.WithoutCache())
		if err != nil {
			return err
		}
		if !slices.Equal(out, want) {
			return errors.New("sha256 results differ from those computed locally")
		}
		return nil
	}
	// The plain loop takes its turns beside the grids, so the overhead is
	// measured under the same conditions.
	plain := runner{what: "plain loop", job: func() error { _, err := hashLocally(ctx, texts); return err }}
	cpu, err := timeJobs(ctx, "map: sha256", append([]runner{plain}, onGrids(cpuGrids, hashes)...), cfg.Jobs, cfg.CPUItems, 1, nodePids(cpuGrids), p)
	if err != nil {
		return nil, err
	}
	report.LocalCPUItemMicros, report.CPU = cpu[0].MicrosPerItem, speedUps(cpu[1:])
	if report.CPU[0].Nodes == 1 {
		report.CPUItemOverheadMicros = report.CPU[0].MicrosPerItem - report.LocalCPUItemMicros
	}
	return report, nil
}

// runner is one of the things a job is timed on, side by side: a grid, or
// (nodes 0) a floor in this process.
type runner struct {
	nodes int
	what  string // for errors; "over N nodes" when empty
	items int    // the job's size, when not that of the others
	// repeat is how many times the job runs in each turn, its time the
	// mean of them: a floor's job of milliseconds, run once, would be
	// at the mercy of any other process's time slice.
	repeat int
	job    func() error
}

// floorItemsPerTurn is how many items a floor handles in each of its
// turns, its job repeated as needed.
const floorItemsPerTurn = 1_000_000

// onGrids returns a runner per grid doing job.
func onGrids(grids []*Grid, job func(*Grid) error) []runner {
	rs := make([]runner, len(grids))
	for i, g := range grids {
		rs[i] = runner{nodes: len(g.Nodes), job: func() error { return job(g) }}
	}
	return rs
}

// squareJob is the trivial job through the Go API: square of every item,
// results checked. Every Go API square job of the scenarios is this one
// call, so that feeding the items as a stream instead of a slice is a
// change here alone.
func squareJob(ctx context.Context, c *shoal.Client, items []int) error {
	out, err := shoal.Map[int, int](ctx, c, "square", items, shoal.WithoutCache())
	if err != nil {
		return err
	}
	if len(out) != len(items) {
		return fmt.Errorf("%d results for %d items", len(out), len(items))
	}
	for _, i := range []int{0, len(out) / 2, len(out) - 1} {
		if out[i] != items[i]*items[i] {
			return fmt.Errorf("square(%d) = %d", items[i], out[i])
		}
	}
	return nil
}

// detachedSquares runs square over 0..n-1 as a detached job on a node of
// c's grid and reads every result back, checking them.
func detachedSquares(ctx context.Context, c *shoal.Client, n int) error {
	job, err := c.SubmitRange(ctx, "square", 0, int64(n), 1, shoal.WithoutCache())
	if err != nil {
		return err
	}
	i := 0
	for it, err := range job.Results(ctx) {
		if err != nil {
			return err
		}
		if it.Err != nil || it.Index != i {
			return fmt.Errorf("detached job: item %d: index %d, %v", i, it.Index, it.Err)
		}
		if i%1000 == 0 {
			var v int
			if err := msgpack.Unmarshal(it.Value, &v); err != nil || v != i*i {
				return fmt.Errorf("detached job: square(%d) = %d, %v", i, v, err)
			}
		}
		i++
	}
	if i != n {
		return fmt.Errorf("detached job: %d results for %d items", i, n)
	}
	return nil
}

// speedUps sets each result's SpeedUp relative to the first's, and
// returns them.
func speedUps(results []MapResult) []MapResult {
	for i := range results {
		results[i].SpeedUp = Ratio(results[i].ItemsPerSecond, results[0].ItemsPerSecond)
	}
	return results
}

// itemCosts makes the per-item table: the floors, then Shoal through the
// Go API (the smallest grid's trivial job) and through shoal submit on the
// same grid, each with Shoal's ratios to it.
func itemCosts(floors []MapResult, goAPI, submit, detached MapResult) []ItemCost {
	row := func(name, what string, floor bool, r MapResult) ItemCost {
		return ItemCost{Name: name, What: what, Floor: floor, Nodes: r.Nodes, Items: r.Items, JobSeconds: r.JobSeconds,
			ItemsPerSecond: r.ItemsPerSecond, NanosPerItem: r.MicrosPerItem * 1000}
	}
	nodes := "client and 1 node process"
	if goAPI.Nodes > 1 {
		nodes = fmt.Sprintf("client and %d node processes", goAPI.Nodes)
	}
	costs := []ItemCost{
		row(CostLoop, "plain Go loop of square", true, floors[0]),
		row(CostMsgpack, fmt.Sprintf("msgpack encode+decode of args and results, chunks of %s", thousands(FloorChunkItems)), true, floors[1]),
		row(CostTCP, "the job's msgpack-rpc bytes both ways over loopback TCP, 2 processes", true, floors[2]),
		row(CostGoAPI, "Shoal, Go API, "+nodes, false, goAPI),
		row(CostSubmit, "Shoal, shoal submit --range --no-cache, output to a pipe, "+nodes, false, submit),
		row(CostDetached, "Shoal, a detached job (Client.SubmitRange, the node runs it and keeps the results on disk), its results read back, "+nodes, false, detached),
	}
	for i := range costs {
		costs[i].GoAPIVsThis = Ratio(costs[3].NanosPerItem, costs[i].NanosPerItem)
		costs[i].SubmitVsThis = Ratio(costs[4].NanosPerItem, costs[i].NanosPerItem)
	}
	return costs
}

// timeJobs runs every runner's job once to warm it, then jobs more times
// each, the runners taking turns, and reports the median job of each.
//
// Before each job it collects this process's garbage and waits for the
// processes pids (the grids' nodes) to go idle, so that no job pays for
// the one before: the garbage it left, the work its nodes went on with.
func timeJobs(ctx context.Context, name string, runners []runner, jobs, items, slots int, pids []int, p progressLog) ([]MapResult, error) {
	took := make([][]time.Duration, len(runners))
	for round := 0; round <= jobs; round++ {
		if round == 0 {
			p.printf("%s: warm-up job on each grid", name)
		} else {
			p.printf("%s: job %d of %d on each grid", name, round, jobs)
		}
		for i, r := range runners {
			runtime.GC()
			settle(ctx, pids)
			repeat := max(1, r.repeat)
			start := time.Now()
			for range repeat {
				if err := r.job(); err != nil {
					what := r.what
					if what == "" {
						what = fmt.Sprintf("over %d nodes", r.nodes)
					}
					return nil, fmt.Errorf("bench: %s, %s: %w", name, what, err)
				}
			}
			if round > 0 {
				took[i] = append(took[i], time.Since(start)/time.Duration(repeat))
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	results := make([]MapResult, len(runners))
	for i, r := range runners {
		secs := seconds(took[i])
		median := Median(secs)
		n := items
		if r.items > 0 {
			n = r.items
		}
		results[i] = MapResult{
			Nodes:          r.nodes,
			Slots:          slots,
			Items:          n,
			JobSeconds:     secs,
			ItemsPerSecond: Ratio(float64(n), median),
			MicrosPerItem:  median * 1e6 / float64(n),
		}
	}
	return results, nil
}

// hashLocally computes the sha256 items with a plain function call: the
// results a grid must return, and the time an item takes without a grid.
func hashLocally(ctx context.Context, texts []shoal.Args) ([]string, error) {
	out := make([]string, len(texts))
	for i, t := range texts {
		var err error
		if out[i], err = builtins.SHA256Rounds(ctx, t[0].(string), t[1].(int)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Grid is a grid of `shoal node` processes on 127.0.0.1 and a client of it.
type Grid struct {
	Nodes  []*local.Node
	Client *shoal.Client
}

// StartGrid starts n nodes from the shoal binary bin, named name-1 to
// name-n, the others joining the first, each with the extra `shoal node`
// flags; dials a client; and waits until the client sees every node alive.
func StartGrid(ctx context.Context, bin, name string, n int, extra ...string) (*Grid, error) {
	g := &Grid{}
	for i := 1; i <= n; i++ {
		join := ""
		if i > 1 {
			join = g.Nodes[0].Gossip
		}
		nd, err := local.StartNode(ctx, bin, name+"-"+strconv.Itoa(i), join, extra...)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.Nodes = append(g.Nodes, nd)
	}
	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{g.Nodes[0].RPC}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		g.Close()
		return nil, err
	}
	g.Client = c
	wait, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.WaitForMembers(wait, n); err != nil {
		g.Close()
		return nil, fmt.Errorf("bench: grid %s: %w", name, err)
	}
	return g, nil
}

// Close closes the client and stops every node, all at once, since each
// takes a moment to leave the grid gracefully.
func (g *Grid) Close() error {
	return closeGrids([]*Grid{g})
}

// startGrids starts one grid per size.
func startGrids(ctx context.Context, bin, name string, sizes []int, p progressLog, extra ...string) ([]*Grid, error) {
	var grids []*Grid
	for _, n := range slicesSorted(sizes) {
		p.printf("map: starting the %s grid of %d node%s, a process each", name, n, plural(n))
		g, err := StartGrid(ctx, bin, fmt.Sprintf("%s%d", name, n), n, extra...)
		if err != nil {
			closeGrids(grids)
			return nil, err
		}
		grids = append(grids, g)
	}
	return grids, nil
}

// closeGrids closes every grid's client and stops all their nodes at once.
func closeGrids(grids []*Grid) error {
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for _, g := range grids {
		if g.Client != nil {
			wg.Go(func() { errs <- g.Client.Close() })
		}
		for _, n := range g.Nodes {
			wg.Go(func() { errs <- n.Stop(10 * time.Second) })
		}
	}
	go func() {
		wg.Wait()
		close(errs)
	}()
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	for _, g := range grids {
		g.Client, g.Nodes = nil, nil
	}
	return errors.Join(all...)
}

// nodePids returns the process ids of every node of the grids.
func nodePids(grids []*Grid) []int {
	var pids []int
	for _, g := range grids {
		for _, n := range g.Nodes {
			pids = append(pids, n.Pid())
		}
	}
	return pids
}

// mostMemory returns the largest of one memory figure over every node, in
// MiB.
func mostMemory(grids []*Grid, figure func(local.Memory) int64) (float64, error) {
	if runtime.GOOS != "linux" {
		return 0, errors.New("needs Linux's /proc")
	}
	var most int64
	for _, g := range grids {
		for _, n := range g.Nodes {
			m, err := n.Memory()
			if err != nil {
				return 0, err
			}
			most = max(most, figure(m))
		}
	}
	return float64(most) / (1 << 20), nil
}

func slicesSorted(v []int) []int {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}
