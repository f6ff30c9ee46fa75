package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoalgrid/shoal/bench"
)

type benchOptions struct {
	cfg      bench.Config
	quick    bool
	jsonPath string
	plotPath string
	// echoServer makes this process the rpc scenario's separate process
	// (see bench.EchoServerArgs) instead of running a benchmark.
	echoServer bool
}

func newBenchCmd(g *globalOptions) *cobra.Command {
	o := &benchOptions{cfg: bench.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "bench [rpc|map|memory|dask|cache|all]...",
		Short: "Measure Shoal side by side with references on this machine",
		Long: `Run benchmark scenarios on this machine, everything on 127.0.0.1, and print
a table of the figures on stdout (progress goes to stderr). Each scenario
measures the systems it compares in one run, taking turns round by round,
so a noisy machine slows them alike:

  rpc    a Shoal call against Go's net/rpc and a raw TCP echo round trip,
         with 1 and with 64 concurrent callers: calls/s, p50/p90/p99
         latency and the ratios between them; "shoal" calls a function
         registered Inline, "shoal-worker" the same without Inline; every
         server once in this process and once in a separate process
         (started from this binary), as users run a node
  map    square items end to end over grids of 1, 2 and 3 node processes
         (started from this binary), beside the same job's floors on this
         machine (a plain loop, msgpack encoding and decoding, its bytes
         over loopback TCP between two processes) and through shoal
         submit, with Shoal's cost per item as a multiple of each; sha256
         items over 1 and 2 nodes of one slot each with the speed-up, what
         a one-item job costs, what the grid adds per item, and each
         node's resident memory
  memory shoal submit --range 0:N --no-cache square for each N of
         --memory-sizes on fresh nodes: the client's and every node's
         peak resident memory (a size the client would need more than
         --memory-budget MiB for, growing as it did, is skipped)
  dask   the square job through Dask's client.map and through Shoal, over
         as many worker processes as node processes, in turns, where a
         python3 imports distributed (else the table says how to
         install it: apt-get install -y python3-distributed)
  cache  the same sha256 job cold and then warm on node processes, with
         the results in memcached servers (started on free ports if
         memcached is on the PATH) and in the grid cache the nodes'
         memory forms: items/s, warm/cold ratio, each node's share
  all    every scenario (the default)

The table ends with the targets Shoal aims for and whether this run met
them. A full run takes a few minutes on a 2-core machine; --quick runs
smaller sizes in about a minute. Flags set sizes one by one and win over --quick.`,
		Example: `  shoal bench --quick
  shoal bench all --json bench.json --plot bench.svg
  shoal bench rpc --duration 10s --callers 1,8,64
  shoal bench map --items 200000 --nodes 1,2,3,4`,
		ValidArgs: append([]string{"all"}, bench.Scenarios...),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd.Context(), cmd, o, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "small sizes: a run of about a minute")
	f.StringVar(&o.jsonPath, "json", "", "also write every figure, the machine and the Shoal version to this JSON file")
	f.StringVar(&o.plotPath, "plot", "", "also draw throughput against node count and latency percentiles to this .svg or .png file")
	bindBenchFlags(f, &o.cfg)
	f.BoolVar(&o.echoServer, bench.EchoServerFlag, false, "serve the rpc scenario's echo servers until stdin ends (the bench starts this)")
	f.MarkHidden(bench.EchoServerFlag)
	return cmd
}

// bindBenchFlags defines the size flags on fs, bound to c, with c's values
// as defaults.
func bindBenchFlags(fs *pflag.FlagSet, c *bench.Config) {
	fs.DurationVar(&c.RPC.Duration, "duration", c.RPC.Duration, "rpc: time each system is measured at each number of callers")
	fs.IntVar(&c.RPC.Turns, "turns", c.RPC.Turns, "rpc: how many times the systems take turns, splitting --duration")
	fs.IntSliceVar(&c.RPC.Callers, "callers", c.RPC.Callers, "rpc: numbers of concurrent callers, sharing one connection")
	fs.IntVar(&c.RPC.Payload, "payload", c.RPC.Payload, "rpc: bytes each call carries each way")
	fs.IntSliceVar(&c.Map.Nodes, "nodes", c.Map.Nodes, "map: grid sizes for the square job")
	fs.IntVar(&c.Map.Items, "items", c.Map.Items, "map: items in the square job")
	fs.IntVar(&c.Map.SubmitItems, "submit-items", c.Map.SubmitItems, "map: items in the same job through shoal submit --range, beside the floors")
	fs.IntVar(&c.Map.Jobs, "jobs", c.Map.Jobs, "map: measured jobs per grid (after a warm-up); the median counts")
	fs.IntVar(&c.Map.OneItemJobs, "one-item-jobs", c.Map.OneItemJobs, "map: one-item jobs timed for a job's fixed cost")
	fs.IntSliceVar(&c.Map.CPUNodes, "cpu-nodes", c.Map.CPUNodes, "map: grid sizes (1 slot per node) for the sha256 job")
	fs.IntVar(&c.Map.CPUItems, "cpu-items", c.Map.CPUItems, "map: items in the sha256 job")
	fs.IntVar(&c.Map.CPURounds, "cpu-rounds", c.Map.CPURounds, "map: SHA-256 rounds per item of the sha256 job")
	fs.IntSliceVar(&c.Memory.Sizes, "memory-sizes", c.Memory.Sizes, "memory: items of each shoal submit --range job")
	fs.IntVar(&c.Memory.Nodes, "memory-nodes", c.Memory.Nodes, "memory: node processes of each job's grid")
	fs.IntVar(&c.Memory.BudgetMiB, "memory-budget", c.Memory.BudgetMiB, "memory: MiB the client may need; a size it would pass, growing as it did, is skipped")
	fs.IntVar(&c.Dask.Workers, "dask-workers", c.Dask.Workers, "dask: Dask's worker processes and Shoal's node processes")
	fs.IntVar(&c.Dask.Items, "dask-items", c.Dask.Items, "dask: items in the square job")
	fs.IntVar(&c.Dask.Jobs, "dask-jobs", c.Dask.Jobs, "dask: measured jobs of each system (after a warm-up); the median counts")
	fs.StringVar(&c.Dask.Python, "python", c.Dask.Python, "dask: the Python to run Dask with (default /usr/bin/python3, then python3 on the PATH)")
	fs.IntVar(&c.Cache.Nodes, "cache-nodes", c.Cache.Nodes, "cache: nodes in the grid")
	fs.IntVar(&c.Cache.Memcached, "memcached-servers", c.Cache.Memcached, "cache: memcached servers holding the results")
	fs.IntVar(&c.Cache.Items, "cache-items", c.Cache.Items, "cache: items in the job")
	fs.IntVar(&c.Cache.Rounds, "cache-rounds", c.Cache.Rounds, "cache: SHA-256 rounds per item, the work a hit saves")
	fs.IntVar(&c.Cache.Jobs, "cache-jobs", c.Cache.Jobs, "cache: measured warm runs; the median counts")
}

// config returns the sizes to run: the flags as given, or with --quick the
// quick sizes overridden by the flags given on the command line.
func (o *benchOptions) config(flags *pflag.FlagSet) (bench.Config, error) {
	if !o.quick {
		return o.cfg, nil
	}
	cfg := bench.QuickConfig()
	quick := pflag.NewFlagSet("quick", pflag.ContinueOnError)
	bindBenchFlags(quick, &cfg)
	var err error
	flags.Visit(func(f *pflag.Flag) {
		target := quick.Lookup(f.Name)
		if target == nil || err != nil {
			return
		}
		if from, ok := f.Value.(pflag.SliceValue); ok {
			err = target.Value.(pflag.SliceValue).Replace(from.GetSlice())
		} else {
			err = target.Value.Set(f.Value.String())
		}
	})
	return cfg, err
}

func runBench(ctx context.Context, cmd *cobra.Command, o *benchOptions, args []string) error {
	if o.echoServer {
		ctx, stop := interruptible(ctx)
		defer stop()
		return bench.ServeEchoProcess(ctx, cmd.InOrStdin(), cmd.OutOrStdout())
	}
	scenarios, err := benchScenarios(args)
	if err != nil {
		return err
	}
	cfg, err := o.config(cmd.Flags())
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Check the output paths before minutes of measuring, not after.
	for _, path := range []string{o.jsonPath, o.plotPath} {
		if path != "" {
			if err := writable(path); err != nil {
				return err
			}
		}
	}
	if o.plotPath != "" {
		if _, err := bench.PlotFormat(o.plotPath); err != nil {
			return err
		}
	}
	for _, s := range []string{bench.ScenarioMap, bench.ScenarioMemory, bench.ScenarioDask, bench.ScenarioCache} {
		if slices.Contains(scenarios, s) && cfg.Map.Binary == "" {
			if cfg.Map.Binary, err = os.Executable(); err != nil {
				return fmt.Errorf("the %s scenario starts nodes from this binary: %w", s, err)
			}
		}
	}
	if slices.Contains(scenarios, bench.ScenarioRPC) {
		if cfg.RPC.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("the rpc scenario starts its separate process from this binary: %w", err)
		}
	}
	cfg.Version = shoalVersion()
	cfg.Progress = cmd.ErrOrStderr()
	ctx, stop := interruptible(ctx)
	defer stop()
	report, err := bench.Run(ctx, cfg, scenarios...)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(cmd.ErrOrStderr(), "shoal: bench interrupted")
		return &exitError{code: 130}
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.ErrOrStderr())
	if err := bench.WriteTable(cmd.OutOrStdout(), report); err != nil {
		return err
	}
	if o.jsonPath != "" {
		if err := writeJSONFile(o.jsonPath, report); err != nil {
			return err
		}
	}
	if o.plotPath != "" {
		if err := bench.WritePlot(o.plotPath, report); err != nil {
			return err
		}
	}
	return nil
}

// benchScenarios turns the arguments into scenario names, in run order.
func benchScenarios(args []string) ([]string, error) {
	if len(args) == 0 || slices.Contains(args, "all") {
		return bench.Scenarios, nil
	}
	var out []string
	for _, s := range bench.Scenarios {
		if slices.Contains(args, s) {
			out = append(out, s)
		}
	}
	for _, a := range args {
		if !slices.Contains(bench.Scenarios, a) {
			return nil, fmt.Errorf("unknown scenario %q: want %s or all", a, strings.Join(bench.Scenarios, ", "))
		}
	}
	return out, nil
}

func writeJSONFile(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeJSON(f, v); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writable checks that path can be created or replaced, leaving it as it
// was.
func writable(path string) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if os.IsNotExist(statErr) {
		os.Remove(path)
	}
	return nil
}

// newBenchFloorPeerCmd is the far end of the bench's TCP floor, which the
// map scenario runs from this binary: hidden, as no one runs it by hand.
func newBenchFloorPeerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    bench.FloorPeerCommand,
		Short:  "The far end of shoal bench's loopback TCP floor (started by shoal bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.ServeFloorPeer(cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}
