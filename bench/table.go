package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the report as aligned tables, one per scenario, then
// the targets.
func WriteTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	m := r.Machine
	fmt.Fprintf(tw, "Shoal %s, %s %s, %s, %d CPUs (GOMAXPROCS %d), %s, run took %.0fs\n",
		r.Shoal, m.Go, m.OS, m.CPU, m.Cores, m.GOMAXPROCS, r.Started.Format("2006-01-02 15:04"), r.Seconds)
	if r.RPC != nil {
		rpcTable(tw, r.RPC, r.Config.RPC)
	}
	if mp := r.Map; mp != nil {
		c := r.Config.Map
		fmt.Fprintf(tw, "\nmap: square of %s items per job, node processes with a slot per CPU; median of %d job%s\n", thousands(float64(c.Items)), c.Jobs, plural(c.Jobs))
		mapTable(tw, mp.Trivial)
		fmt.Fprintf(tw, "a one-item job over %d node%s: p50 %s, p99 %s (%d jobs)\n",
			mp.OneItemJobNodes, plural(mp.OneItemJobNodes), micro(mp.OneItemJob.P50), micro(mp.OneItemJob.P99), c.OneItemJobs)
		if len(mp.PerItem) > 0 {
			fmt.Fprintf(tw, "\nmap: the square job done without Shoal (this machine's floors) and with it, in turns with the grids; median of %d job%s\n",
				c.Jobs, plural(c.Jobs))
			itemCostTable(tw, mp.PerItem)
		}
		fmt.Fprintf(tw, "\nmap: sha256 of %s rounds, %d items per job, 1 slot per node; median of %d job%s\n", thousands(float64(c.CPURounds)), c.CPUItems, c.Jobs, plural(c.Jobs))
		mapTable(tw, mp.CPU)
		if mp.LocalCPUItemMicros > 0 && mp.CPU[0].Nodes == 1 {
			fmt.Fprintf(tw, "an item takes %s by a plain call in turn with the grids, %s end to end on one node: ",
				micro(mp.LocalCPUItemMicros), micro(mp.CPU[0].MicrosPerItem))
			if over := mp.CPUItemOverheadMicros; over > 0 {
				fmt.Fprintf(tw, "the grid adds %s an item (%.1f%%)\n", micro(over), 100*over/mp.LocalCPUItemMicros)
			} else {
				fmt.Fprintf(tw, "no overhead shows above this run's noise\n")
			}
		}
		if mp.IdleMiB > 0 {
			fmt.Fprintf(tw, "node memory, largest of any node: idle %.1f MiB resident, %.1f MiB anonymous (the rest: pages of the binary, shared); under load %.1f MiB at most\n",
				mp.IdleMiB, mp.IdleAnonMiB, mp.PeakMiB)
		}
	}
	if mem := r.Memory; mem != nil {
		memoryTable(tw, mem, r.Config.Memory)
	}
	if d := r.Dask; d != nil {
		daskTable(tw, d, r.Config.Dask)
	}
	if ch := r.Cache; ch != nil {
		c := r.Config.Cache
		fmt.Fprintf(tw, "\ncache: sha256 of %d rounds, %s items per job over %d node processes; cold once, then the median of %d warm run%s\n",
			c.Rounds, thousands(float64(c.Items)), c.Nodes, c.Jobs, plural(c.Jobs))
		fmt.Fprintln(tw, "cache\tcold items/s\twarm items/s\twarm/cold\tcached when warm\tentries per node")
		for _, b := range ch.Backends {
			held := "-"
			if len(b.EntriesPerNode) > 0 {
				parts := make([]string, len(b.EntriesPerNode))
				for i, n := range b.EntriesPerNode {
					parts[i] = thousands(float64(n))
				}
				held = strings.Join(parts, " / ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s of %s\t%s\n", b.Name, thousands(b.ColdItemsPerSecond),
				thousands(b.WarmItemsPerSecond), times(b.WarmVsCold), thousands(float64(b.WarmCached)), thousands(float64(b.Items)), held)
		}
		for _, skipped := range ch.Skipped {
			fmt.Fprintf(tw, "note: %s\n", skipped)
		}
	}

	if len(r.Targets) > 0 {
		fmt.Fprintln(tw, "\ntarget\tmeasured\tgoal\t")
		for _, t := range r.Targets {
			verdict := "met"
			if !t.Met {
				verdict = "MISSED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.What, formatFigure(t.Value, t.Unit), t.Goal, verdict)
		}
	}
	return tw.Flush()
}

func mapTable(w io.Writer, results []MapResult) {
	fmt.Fprintln(w, "nodes\titems/s\tper item\tjob (median)\tspeed-up")
	for _, res := range results {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", res.Nodes, thousands(res.ItemsPerSecond), micro(res.MicrosPerItem),
			seconds3(Median(res.JobSeconds)), times(res.SpeedUp))
	}
}

// itemCostTable prints the floors and Shoal's rows, each with Shoal's
// time per item as a multiple of the row's.
func itemCostTable(w io.Writer, costs []ItemCost) {
	fmt.Fprintln(w, "what\titems\titems/s\tns/item\tGo API ÷ this\tsubmit ÷ this")
	for _, c := range costs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.What, thousands(float64(c.Items)), thousands(c.ItemsPerSecond), nanos(c.NanosPerItem),
			times(c.GoAPIVsThis), times(c.SubmitVsThis))
	}
}

func memoryTable(w io.Writer, mem *MemoryReport, c MemoryConfig) {
	fmt.Fprintf(w, "\nmemory: shoal submit --range 0:N --no-cache square, output to a pipe, %d fresh node process%s per job; peak resident memory\n",
		c.Nodes, es(c.Nodes))
	fmt.Fprintln(w, "items\tclient peak\tnode peaks\titems/s\tjob")
	for _, res := range mem.Results {
		nodes := make([]string, len(res.NodePeakMiB))
		for i, n := range res.NodePeakMiB {
			nodes[i] = fmt.Sprintf("%.0f", n)
		}
		nodePeaks := "-"
		if len(nodes) > 0 {
			nodePeaks = strings.Join(nodes, ", ") + " MiB"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", thousands(float64(res.Items)), mib(res.ClientPeakMiB), nodePeaks,
			thousands(res.ItemsPerSecond), seconds3(res.Seconds))
	}
	for _, skipped := range mem.Skipped {
		fmt.Fprintf(w, "note: %s\n", skipped)
	}
}

func daskTable(w io.Writer, d *DaskReport, c DaskConfig) {
	if d.Skipped != "" {
		fmt.Fprintf(w, "\ndask: Dask's client.map beside Shoal, %d worker process%s\nnote: %s\n", c.Workers, es(c.Workers), d.Skipped)
		return
	}
	fmt.Fprintf(w, "\ndask: square of %s items per job, %d worker process%s of %d thread%s (Dask, distributed %s) and %d node process%s (Shoal); median of %d turn%s (Shoal: %d jobs a turn)\n",
		thousands(float64(d.Items)), d.Workers, es(d.Workers), d.ThreadsPerWorker, plural(d.ThreadsPerWorker), d.Version,
		d.Workers, es(d.Workers), c.Jobs, plural(c.Jobs), shoalJobsPerTurn)
	fmt.Fprintln(w, "system\titems/s\tjob (median)")
	fmt.Fprintf(w, "Shoal, Go API shoal.Map\t%s\t%s\n", thousands(d.Shoal.ItemsPerSecond), seconds3(Median(d.Shoal.JobSeconds)))
	fmt.Fprintf(w, "Dask, client.map + gather\t%s\t%s\n", thousands(d.Dask.ItemsPerSecond), seconds3(Median(d.Dask.JobSeconds)))
	fmt.Fprintf(w, "Shoal does %s the items per second of Dask\n", times(d.ShoalVsDask))
}

func mib(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f MiB", v)
}

// nanos formats nanoseconds with three significant figures, at least.
func nanos(ns float64) string {
	switch {
	case ns >= 1000:
		return thousands(ns)
	case ns >= 10:
		return fmt.Sprintf("%.1f", ns)
	default:
		return fmt.Sprintf("%.2f", ns)
	}
}

// formatFigure formats a target's figure in its unit.
func formatFigure(v float64, unit string) string {
	switch unit {
	case "x":
		return times(v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	}
	return thousands(v) + " " + unit
}

// thousands formats x rounded, with commas between thousands: 1,234,567.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// micro formats microseconds as a duration of three significant figures.
func micro(us float64) string {
	d := time.Duration(us * float64(time.Microsecond))
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3gms", us/1000)
	default:
		return fmt.Sprintf("%.3gµs", us)
	}
}

func seconds3(s float64) string { return fmt.Sprintf("%.3fs", s) }

// times formats a ratio, or "-" where one figure was missing.
func times(r float64) string {
	switch {
	case r == 0:
		return "-"
	case r >= 100:
		return thousands(r) + "x"
	case r >= 10:
		return fmt.Sprintf("%.1fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}
