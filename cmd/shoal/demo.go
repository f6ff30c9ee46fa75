package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/builtins"
	"github.com/shoalgrid/shoal/internal/local"
	"github.com/shoalgrid/shoal/node"
)

type demoOptions struct {
	nodes  int
	items  int
	rounds int
	keep   bool
	rpc    string // the first node's, with keep
	http   string // the first node's, with keep
}

func newDemoCmd(g *globalOptions) *cobra.Command {
	o := &demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a local grid, run a map job twice (the second from the cache) and stop",
		Long: `Start a grid of --nodes nodes in this process on free ports of 127.0.0.1,
with memcached as the result cache if it is on the PATH (started on a free
port and stopped at the end) and otherwise the grid cache the nodes' memory
forms, as any grid of shoal nodes without --memcached has. Then run a
real map job, sha256 of --items texts hashed --rounds times each, once to
compute it and once more to show the cache, print both summaries, stop
everything and exit 0.

With --keep the grid stays up until Ctrl-C, with the first node on --rpc
and --http (another free port when one is taken), so that shoal submit,
shoal members and shoal jobs reach it with their defaults and its
dashboard is at http://127.0.0.1:8787/. Every node serves a dashboard on
its own HTTP port. Meanwhile the demo runs a job to watch every few
seconds: 1,500 sleep items of 20ms, of which every 50th sleeps past its
100ms timeout and fails.`,
		Example: `  shoal demo
  shoal demo --nodes 5 --items 100000
  shoal demo --keep     # then open http://127.0.0.1:8787/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout(), g, o)
		},
	}
	cmd.Flags().IntVar(&o.nodes, "nodes", 3, "nodes in the local grid")
	cmd.Flags().IntVar(&o.items, "items", 20_000, "items in the map job")
	cmd.Flags().IntVar(&o.rounds, "rounds", 100, "SHA-256 rounds per item: the CPU work of one item")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the grid up after the runs, running a job to watch every few seconds, until Ctrl-C")
	cmd.Flags().StringVar(&o.rpc, "rpc", "127.0.0.1:7373", "with --keep, the first node's RPC address (a free port when taken)")
	cmd.Flags().StringVar(&o.http, "http", "127.0.0.1:8787", "with --keep, the first node's HTTP address, where its dashboard is (a free port when taken)")
	return cmd
}

// demoCacheTimeout bounds the demo's requests to its own memcached.
const demoCacheTimeout = 5 * time.Second

func runDemo(ctx context.Context, out io.Writer, g *globalOptions, o *demoOptions) error {
	if o.nodes < 1 || o.items < 1 || o.rounds < 1 {
		return errors.New("--nodes, --items and --rounds must be at least 1")
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	// The grid's own chatter would drown the demo's output.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if g.logLevel == "debug" {
		quiet = log
	}

	var memcachedAddr string
	if mc, err := local.StartMemcached(ctx, 256); err == nil {
		defer mc.Stop()
		memcachedAddr = mc.Addr
		fmt.Fprintf(out, "cache: memcached on %s\n", mc.Addr)
	} else {
		fmt.Fprintf(out, "cache: the grid cache, in the nodes' memory (%v)\n", err)
	}

	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			n.Shutdown(context.Background())
		}
	}()
	for i := 0; i < o.nodes; i++ {
		cfg := node.FastConfig()
		cfg.Name = fmt.Sprintf("demo-%d", i+1)
		cfg.HTTPAddr = ""
		if o.keep {
			cfg.HTTPAddr = "127.0.0.1:0"
			if i == 0 {
				cfg.RPCAddr, cfg.HTTPAddr = freeOr(o.rpc), freeOr(o.http)
			}
		}
		cfg.Logger = quiet
		// The demo's processes share one machine with whatever else runs
		// on it: a cache request that waits for a busy CPU is slow, not
		// failed, and must not cost the second run its hits.
		cfg.CacheTimeout = demoCacheTimeout
		if memcachedAddr != "" {
			cfg.Memcached = []string{memcachedAddr}
		}
		// Room for every result the job computes: a full write queue
		// drops results rather than slow the nodes down.
		cfg.CacheQueue = max(o.items, node.DefaultConfig().CacheQueue)
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr()}
		}
		n, err := node.New(cfg, shoalVersion())
		if err != nil {
			return err
		}
		if err := builtins.Register(n); err != nil {
			return err
		}
		if err := n.Start(ctx); err != nil {
			return err
		}
		nodes = append(nodes, n)
		fmt.Fprintf(out, "node %s: rpc %s, gossip %s, %d slots\n", n.Name(), n.RPCAddr(), n.GossipAddr(), n.Executor().Slots())
		if o.keep {
			fmt.Fprintf(out, "dashboard: http://%s/\n", n.HTTPAddr())
		}
	}

	c, err := shoal.Dial(ctx, shoal.Config{Seeds: []string{nodes[0].RPCAddr()}, CacheTimeout: demoCacheTimeout, Logger: quiet})
	if err != nil {
		return err
	}
	defer c.Close()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitForMembers(wait, o.nodes); err != nil {
		return err
	}
	// Every node must place the grid cache's keys as the client does, or
	// the first run's results land where the second does not look.
	if err := waitForNodes(wait, nodes); err != nil {
		return err
	}

	inputs := make([]shoal.Args, o.items)
	for i := range inputs {
		inputs[i] = shoal.Args{"item-" + strconv.Itoa(i), o.rounds}
	}
	var first []string
	for run := 1; run <= 2; run++ {
		var st shoal.Stats
		results, err := shoal.Map[shoal.Args, string](ctx, c, "sha256", inputs, shoal.WithStats(&st))
		if err != nil {
			return err
		}
		if run == 1 {
			first = results
			// Nodes write results to the cache after replying: let the
			// writes land before asking for them.
			for _, n := range nodes {
				if err := n.FlushCache(ctx); err != nil {
					return err
				}
			}
			stored := uint64(0) // counted once every node has sent its results to their owners
			for _, n := range nodes {
				stored += n.CacheStats().Stored
			}
			if stored < uint64(o.items) {
				fmt.Fprintf(out, "note: only %d of %d results reached the cache; run 2 computes the rest (--log-level debug says why)\n", stored, o.items)
			}
		} else {
			for i := range results {
				if results[i] != first[i] {
					return fmt.Errorf("item %d differs between runs", i)
				}
			}
		}
		label := "computed"
		if run == 2 {
			label = "from the cache"
		}
		fmt.Fprintf(out, "run %d (%s): items %d, ok %d, failed %d, cached %d, retries %d, %.3fs, %.0f items/s\n",
			run, label, st.Items, st.OK, st.Failed, st.Cached, st.Retries, st.Wall.Seconds(), float64(st.Items)/st.Wall.Seconds())
	}
	fmt.Fprintf(out, "sha256(%q, %d) = %s\n", "item-0", o.rounds, first[0])
	if o.keep {
		return keepDemo(ctx, out, c, nodes[0])
	}
	return nil
}

// freeOr returns addr when it can be listened on now, else a free port of
// 127.0.0.1: a demo kept up beside a real node still starts.
func freeOr(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	l.Close()
	return addr
}

// Watch jobs: sleep items, every watchFailEvery-th of them past the
// item timeout.
const (
	watchItems     = 1500
	watchSleepMs   = 20
	watchFailEvery = 50
	watchTimeout   = 100 * time.Millisecond
	watchPause     = 5 * time.Second
)

// keepDemo keeps the grid up until ctx ends (Ctrl-C), running a job to
// watch on the dashboard every few seconds.
func keepDemo(ctx context.Context, out io.Writer, c *shoal.Client, first *node.Node) error {
	fmt.Fprintf(out, "the grid stays up: open http://%s/ to watch it; from another terminal try\n", first.HTTPAddr())
	fmt.Fprintf(out, "  shoal members --seed %s\n  shoal submit --seed %s --range 0:600 sleep\n", first.RPCAddr(), first.RPCAddr())
	fmt.Fprintf(out, "every %v a job of %d sleep items runs; Ctrl-C stops everything\n", watchPause, watchItems)
	inputs := make([]shoal.Args, watchItems)
	for i := range inputs {
		ms := watchSleepMs
		if i%watchFailEvery == watchFailEvery-1 {
			ms = 2 * int(watchTimeout/time.Millisecond)
		}
		inputs[i] = shoal.Args{ms}
	}
	for round := 1; ; round++ {
		var st shoal.Stats
		_, err := shoal.Map[shoal.Args, int](ctx, c, "sleep", inputs, shoal.WithStats(&st),
			shoal.WithTimeout(watchTimeout), shoal.WithAttempts(1))
		var itemErrs shoal.ItemErrors
		switch {
		case ctx.Err() != nil:
			fmt.Fprintln(out, "stopped")
			return nil
		case err != nil && !errors.As(err, &itemErrs):
			return err
		}
		fmt.Fprintf(out, "watch job %d: items %d, ok %d, failed %d, %.1fs\n", round, st.Items, st.OK, st.Failed, st.Wall.Seconds())
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "stopped")
			return nil
		case <-time.After(watchPause):
		}
	}
}

// waitForNodes waits until every node sees every other one alive.
func waitForNodes(ctx context.Context, nodes []*node.Node) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		agreed := true
		for _, n := range nodes {
			alive := 0
			for _, m := range n.Members() {
				if m.State == grid.StateAlive {
					alive++
				}
			}
			agreed = agreed && alive == len(nodes)
		}
		if agreed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the demo's nodes did not all see each other: %w", ctx.Err())
		case <-t.C:
		}
	}
}
