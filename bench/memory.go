package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shoalgrid/shoal/internal/local"
)

// MemoryConfig sizes the memory scenario.
type MemoryConfig struct {
	// Binary is the shoal executable, run as `shoal node` and as
	// `shoal submit`.
	Binary string `json:"-"`
	// Sizes are the jobs' items, run smallest first. Default 1,000,000
	// and 10,000,000.
	Sizes []int `json:"sizes"`
	// Nodes is the node processes of each job's grid. Default 2.
	Nodes int `json:"nodes"`
	// BudgetMiB is the most resident memory the client may be expected to
	// need: a job whose client, growing with the job as the last one did,
	// would pass it is skipped with a note. Default 1024.
	BudgetMiB int `json:"budget_mib"`
}

// MemoryReport is the memory scenario's figures: the client's and every
// node's peak resident memory against the job's size.
type MemoryReport struct {
	Results []MemoryResult `json:"results"`
	// Skipped says which sizes were not run, and why.
	Skipped []string `json:"skipped,omitempty"`
}

// MemoryResult is one `shoal submit --range 0:N --no-cache square` job.
type MemoryResult struct {
	Items          int     `json:"items"`
	Seconds        float64 `json:"seconds"`
	ItemsPerSecond float64 `json:"items_per_second"`
	// ClientPeakMiB is the submit process's peak resident memory
	// (VmHWM, read while it runs), NodePeakMiB each node's
	// (VmHWM), each node started for this job alone. Zero where the
	// system does not say.
	ClientPeakMiB float64   `json:"client_peak_rss_mib"`
	NodePeakMiB   []float64 `json:"node_peak_rss_mib"`
}

// RunMemory runs `shoal submit --range 0:N --no-cache square` for each
// size N, each on a fresh grid of cfg.Nodes node processes, its output
// into a pipe, and reads the peak resident memory of the client and of
// every node. A size whose client would pass cfg.BudgetMiB, were it to
// grow in proportion to the job from the size before, is skipped with a
// note, and so are the sizes above it. Zero fields of cfg take their
// defaults.
func RunMemory(ctx context.Context, cfg MemoryConfig, progress io.Writer) (*MemoryReport, error) {
	cfg = Config{Memory: cfg}.withDefaults(DefaultConfig()).Memory
	if cfg.Binary == "" {
		return nil, errors.New("bench: the memory scenario needs the shoal binary")
	}
	p := progressLog{progress}
	report := &MemoryReport{}
	for _, items := range slicesSorted(cfg.Sizes) {
		if n := len(report.Results); n > 0 {
			last := report.Results[n-1]
			if expect := last.ClientPeakMiB * float64(items) / float64(last.Items); expect > float64(cfg.BudgetMiB) {
				report.Skipped = append(report.Skipped, fmt.Sprintf(
					"memory: %s items not run: the client peaked at %.0f MiB for %s; growing with the job it would need about %.0f MiB, over the budget of %d MiB (--memory-budget)",
					thousands(float64(items)), last.ClientPeakMiB, thousands(float64(last.Items)), expect, cfg.BudgetMiB))
				break
			}
		}
		p.printf("memory: shoal submit --range 0:%d --no-cache square over %d fresh node%s", items, cfg.Nodes, plural(cfg.Nodes))
		res, err := memoryJob(ctx, cfg, items)
		if err != nil {
			return nil, err
		}
		report.Results = append(report.Results, res)
	}
	return report, nil
}

func memoryJob(ctx context.Context, cfg MemoryConfig, items int) (MemoryResult, error) {
	res := MemoryResult{Items: items}
	g, err := StartGrid(ctx, cfg.Binary, "memory"+strconv.Itoa(items), cfg.Nodes)
	if err != nil {
		return res, err
	}
	defer g.Close()
	start := time.Now()
	peak, err := submitRange(ctx, cfg.Binary, g.Nodes[0].RPC, items)
	if err != nil {
		return res, err
	}
	took := time.Since(start)
	res.Seconds, res.ItemsPerSecond = took.Seconds(), PerSecond(items, took)
	res.ClientPeakMiB = float64(peak) / (1 << 20)
	if runtime.GOOS == "linux" {
		for _, n := range g.Nodes {
			m, err := n.Memory()
			if err != nil {
				return res, err
			}
			res.NodePeakMiB = append(res.NodePeakMiB, float64(m.Peak)/(1<<20))
		}
	}
	return res, g.Close()
}

// submitRange runs `shoal submit --range 0:items --no-cache square`
// against the node at seed, as a user would, its output into a pipe that
// is read and checked line by line; it returns the submit process's peak
// resident memory in bytes (0 where the system does not say).
func submitRange(ctx context.Context, bin, seed string, items int) (int64, error) {
	cmd := exec.CommandContext(ctx, bin, "submit", "--seed", seed, "--range", "0:"+strconv.Itoa(items), "--no-cache", "square")
	out := &lineCounter{}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("bench: shoal submit: %w", err)
	}
	stopWatch := local.WatchPeak(cmd.Process.Pid)
	_, copyErr := io.Copy(out, stdout)
	peak := stopWatch() // its output has ended: it is done but for exiting
	if err := cmd.Wait(); err != nil || copyErr != nil {
		return 0, fmt.Errorf("bench: shoal submit --range 0:%d: %w: %s", items, errors.Join(err, copyErr), strings.TrimSpace(tail(stderr.String(), 2000)))
	}
	last := strconv.Itoa((items - 1) * (items - 1))
	if out.lines != items || string(out.last) != last {
		return 0, fmt.Errorf("bench: shoal submit --range 0:%d printed %d lines, the last %q; want %d, the last %s", items, out.lines, out.last, items, last)
	}
	return peak, nil
}

// lineCounter counts the lines written to it and keeps the last.
type lineCounter struct {
	lines int
	last  []byte // the last complete line
	part  []byte // the line being written
}

func (c *lineCounter) Write(b []byte) (int, error) {
	n := len(b)
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		c.part = append(c.part, b...)
		return n, nil
	}
	c.lines += bytes.Count(b[:i+1], []byte{'\n'})
	lastLine := b[:i]
	if j := bytes.LastIndexByte(lastLine, '\n'); j >= 0 {
		c.last = append(c.last[:0], lastLine[j+1:]...)
	} else {
		c.last = append(append(c.last[:0], c.part...), lastLine...)
	}
	c.part = append(c.part[:0], b[i+1:]...)
	return n, nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
