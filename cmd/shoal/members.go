package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
)

type listOptions struct {
	clientOptions
	json bool
}

// memberRow is a member as `shoal members --json` prints it.
type memberRow struct {
	grid.Member
	Functions  int     `json:"functions"`
	CacheShare float64 `json:"cache_share"` // of the grid cache's keys, as the ring over the members places them
}

func newMembersCmd(g *globalOptions) *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the members of the grid, as a node sees them",
		Long: `List every member the --seed node knows: name, RPC address, state (alive,
suspect, dead or left), slots, load (calls running/slots, then + calls queued)
how many functions it offers and its share of the grid cache's keys (see
shoal cache). --json prints an array of objects with name, gossip, rpc,
http, state, slots, running, queued, digest, cache (the memcached the member
offers, when it offers one), cache_bytes (the memory it offers the grid
cache), version, functions and cache_share.`,
		Example: `  shoal members
  shoal members --seed 127.0.0.1:7374 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMembers(cmd.Context(), cmd.OutOrStdout(), g, o)
		},
	}
	o.addFlags(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	return cmd
}

func runMembers(ctx context.Context, out io.Writer, g *globalOptions, o *listOptions) error {
	c, err := o.dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	members := c.Members()
	offered := make(map[string]int)
	for _, f := range c.Functions() {
		for _, name := range f.Nodes {
			offered[name]++
		}
	}
	shares := cache.Shares(c.View().CachePeers()...)
	rows := make([]memberRow, len(members))
	for i, m := range members {
		rows[i] = memberRow{Member: m, Functions: offered[m.Name], CacheShare: shares[m.Name]}
	}
	if o.json {
		return writeJSON(out, rows)
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tRPC\tSTATE\tSLOTS\tLOAD\tFUNCTIONS\tCACHE")
	for _, r := range rows {
		load := fmt.Sprintf("%d/%d", r.Running, r.Slots)
		if r.Queued > 0 {
			load += fmt.Sprintf(" +%d", r.Queued)
		}
		share := "-"
		if r.CacheBytes > 0 && !r.Gone() {
			share = fmt.Sprintf("%.1f%%", 100*r.CacheShare)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%s\n", r.Name, r.RPC, r.State, r.Slots, load, r.Functions, share)
	}
	return w.Flush()
}

func newFunctionsCmd(g *globalOptions) *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:   "functions",
		Short: "List the functions the grid offers and the nodes that offer each",
		Long: `List the functions offered by the live members the --seed node knows, with
their signatures, whether their results may be cached and the nodes that
offer them. --json prints an array of objects with name, signature, doc,
version, cacheable and nodes.`,
		Example: `  shoal functions
  shoal functions --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.dial(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer c.Close()
			fns := c.Functions()
			out := cmd.OutOrStdout()
			if o.json {
				return writeJSON(out, fns)
			}
			w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIGNATURE\tCACHEABLE\tNODES")
			for _, f := range fns {
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", f.Name, f.Signature, f.Cacheable, strings.Join(f.Nodes, ","))
			}
			return w.Flush()
		},
	}
	o.addFlags(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	return cmd
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
