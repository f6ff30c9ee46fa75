package bench

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	_ "gonum.org/v1/plot/vg/vgimg" // png
	_ "gonum.org/v1/plot/vg/vgsvg" // svg
)

// WritePlot draws the report's figures to path, an .svg or .png file:
// map throughput against node count, rpc latency percentiles at each
// number of callers, and cache throughput cold and warm; two panels a row,
// as many as the run measured.
func WritePlot(path string, r *Report) error {
	format, err := PlotFormat(path)
	if err != nil {
		return err
	}
	var panels []*plot.Plot
	add := func(p *plot.Plot, err error) error {
		if err == nil {
			panels = append(panels, p)
		}
		return err
	}
	var errs []error
	if m := r.Map; m != nil {
		errs = append(errs,
			add(throughputPlot("Map: trivial (square) items, end to end", m.Trivial, false)),
			add(throughputPlot("Map: CPU-bound (sha256) items, 1 slot per node", m.CPU, true)))
	}
	if rpc := r.RPC; rpc != nil {
		for _, callers := range r.Config.RPC.Callers {
			errs = append(errs, add(latencyPlot(rpc, InProcess, callers)))
			if rpc.ResultAt(ChildProcess, systemShoal, callers) != nil {
				errs = append(errs, add(latencyPlot(rpc, ChildProcess, callers)))
			}
		}
	}
	if c := r.Cache; c != nil && len(c.Backends) > 0 {
		errs = append(errs, add(cachePlot(c)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if len(panels) == 0 {
		return errors.New("bench: plot: the run measured nothing to plot")
	}
	const cols = 2
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	width, height := 11*vg.Inch, vg.Length(rows)*3.6*vg.Inch
	canvas, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Inch / 3, PadY: vg.Inch / 3,
		PadTop: vg.Inch / 6, PadBottom: vg.Inch / 6, PadLeft: vg.Inch / 6, PadRight: vg.Inch / 6}
	dc := draw.New(canvas)
	// A white page, so the plot reads on dark backgrounds too.
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	cells := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j, p := range grid[i] {
			if p != nil {
				p.Draw(cells[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	return f.Close()
}

// PlotFormat returns the image format WritePlot would write to path, "svg"
// or "png", from its extension.
func PlotFormat(path string) (string, error) {
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if format != "svg" && format != "png" {
		return "", fmt.Errorf("bench: plot %s: want a file ending in .svg or .png", path)
	}
	return format, nil
}

// throughputPlot draws items per second against node count, in thousands
// unless small is set, with the ideal line (the first grid's rate times the
// node count) for comparison.
func throughputPlot(title string, results []MapResult, small bool) (*plot.Plot, error) {
	if len(results) == 0 {
		return nil, fmt.Errorf("%s: no results", title)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "nodes"
	p.Y.Label.Text = "thousand items/s"
	scale := 1000.0
	if small {
		p.Y.Label.Text, scale = "items/s", 1
	}
	measured, ideal := make(plotter.XYs, len(results)), make(plotter.XYs, len(results))
	base := results[0].ItemsPerSecond / float64(results[0].Nodes)
	for i, res := range results {
		measured[i] = plotter.XY{X: float64(res.Nodes), Y: res.ItemsPerSecond / scale}
		ideal[i] = plotter.XY{X: float64(res.Nodes), Y: base * float64(res.Nodes) / scale}
	}
	line, points, err := plotter.NewLinePoints(measured)
	if err != nil {
		return nil, err
	}
	line.Color, points.Color = plotutil.Color(0), plotutil.Color(0)
	idealLine, err := plotter.NewLine(ideal)
	if err != nil {
		return nil, err
	}
	idealLine.Color = color.Gray{Y: 150}
	idealLine.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(plotter.NewGrid(), idealLine, line, points)
	p.Legend.Add("measured", line, points)
	p.Legend.Add("linear from 1 node", idealLine)
	p.Legend.Top, p.Legend.Left = true, true
	p.X.Min, p.Y.Min = 0, 0
	p.X.Max = float64(results[len(results)-1].Nodes) + 0.5
	p.Y.Max = headroom * max(maxY(measured), maxY(ideal))
	p.X.Tick.Marker = plot.ConstantTicks(nodeTicks(results))
	return p, nil
}

func nodeTicks(results []MapResult) []plot.Tick {
	ticks := []plot.Tick{{Value: 0}}
	for _, res := range results {
		ticks = append(ticks, plot.Tick{Value: float64(res.Nodes), Label: fmt.Sprint(res.Nodes)})
	}
	return ticks
}

// latencyPlot draws p50, p90 and p99 of every system at one number of
// callers, with the servers where server says, as grouped bars.
func latencyPlot(r *RPCReport, server string, callers int) (*plot.Plot, error) {
	var systems []string
	var p50, p90, p99 plotter.Values
	for _, system := range rpcSystems {
		if res := r.ResultAt(server, system, callers); res != nil {
			systems = append(systems, res.System)
			p50, p90, p99 = append(p50, res.Latency.P50), append(p90, res.Latency.P90), append(p99, res.Latency.P99)
		}
	}
	if len(systems) == 0 {
		return nil, fmt.Errorf("rpc: nothing measured at %d callers", callers)
	}
	p := plot.New()
	where := "servers in-process"
	if server == ChildProcess {
		where = "servers in a separate process"
	}
	p.Title.Text = fmt.Sprintf("RPC latency, %d caller%s, %s", callers, plural(callers), where)
	p.Y.Label.Text = "µs"
	if err := groupedBars(p, systems, []string{"p50", "p90", "p99"}, p50, p90, p99); err != nil {
		return nil, err
	}
	return p, nil
}

// cachePlot draws each backend's cold and warm items per second.
func cachePlot(c *CacheReport) (*plot.Plot, error) {
	var names []string
	var cold, warm plotter.Values
	for _, b := range c.Backends {
		names = append(names, b.Name)
		cold, warm = append(cold, b.ColdItemsPerSecond/1000), append(warm, b.WarmItemsPerSecond/1000)
	}
	p := plot.New()
	p.Title.Text = "Cache: the same job cold and warm"
	p.Y.Label.Text = "thousand items/s"
	if err := groupedBars(p, names, []string{"cold", "warm"}, cold, warm); err != nil {
		return nil, err
	}
	return p, nil
}

// groupedBars adds one group of bars per name, one bar per series.
func groupedBars(p *plot.Plot, names, series []string, values ...plotter.Values) error {
	width := vg.Points(16)
	p.Add(plotter.NewGrid())
	for i, v := range values {
		bars, err := plotter.NewBarChart(v, width)
		if err != nil {
			return err
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = width * vg.Length(2*i-len(values)+1) / 2
		p.Add(bars)
		p.Legend.Add(series[i], bars)
	}
	p.Legend.Top = true
	p.Y.Min = 0
	var most float64
	for _, v := range values {
		for _, x := range v {
			most = max(most, x)
		}
	}
	p.Y.Max = headroom * most
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
	return nil
}

// headroom leaves the top of a panel to its legend.
const headroom = 1.35

func maxY(xys plotter.XYs) float64 {
	var most float64
	for _, xy := range xys {
		most = max(most, xy.Y)
	}
	return most
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
