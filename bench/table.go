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
	if ch := r.Cache; ch != nil {
		c := r.Config.Cache
		fmt.Fprintf(tw, "\ncache: sha256 of %d rounds, %s items per job over %d nodes; cold once, then the median of %d warm run%s\n",
			c.Rounds, thousands(float64(c.Items)), c.Nodes, c.Jobs, plural(c.Jobs))
		fmt.Fprintln(tw, "cache\tcold items/s\twarm items/s\twarm/cold\tcached when warm")
		for _, b := range ch.Backends {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s of %s\n", b.Name, thousands(b.ColdItemsPerSecond),
				thousands(b.WarmItemsPerSecond), times(b.WarmVsCold), thousands(float64(b.WarmCached)), thousands(float64(b.Items)))
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
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}
