package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal/grid"
)

// cacheRow is a member's cache as `shoal cache --json` prints it.
type cacheRow struct {
	Name string `json:"name"`
	RPC  string `json:"rpc"`
	grid.CacheInfo
	Error string `json:"error,omitempty"`
}

// cacheAskTimeout bounds asking each member: a frozen one is reported, not
// waited for.
const cacheAskTimeout = 3 * time.Second

func newCacheCmd(g *globalOptions) *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Show each live member's result cache: its share of the grid cache, what it holds, hits and misses",
		Long: `Ask every live member the --seed node knows about its result cache and print
one row each: the kind of cache (grid: the nodes' memory caches form one
cache, each key owned by one member; memcached; embedded: a cache its
embedder gave it, which clients cannot read), its share of the grid cache's
keys, the entries and bytes it holds of its capacity (--cache-size), and
its counters since it started: lookups it answered with a value (hits) and
without (misses), values stored in its share, evicted to make room, and
results it computed and sent to the members owning them.

--json prints an array of objects with name, rpc, kind, servers, share,
capacity, bytes, entries, hits, misses, stored, evicted, sent and, for a
member that did not answer, error. The command exits 1 if a member did not
answer within 3 seconds.`,
		Example: `  shoal cache
  shoal cache --seed 127.0.0.1:7374 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCache(cmd.Context(), cmd.OutOrStdout(), g, o)
		},
	}
	o.addFlags(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	return cmd
}

func runCache(ctx context.Context, out io.Writer, g *globalOptions, o *listOptions) error {
	c, err := o.dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, cacheAskTimeout)
	defer cancel()
	answers := c.CacheInfo(ctx)
	rows := make([]cacheRow, len(answers))
	failed := 0
	for i, a := range answers {
		rows[i] = cacheRow{Name: a.Member.Name, RPC: a.Member.RPC, CacheInfo: a.Info}
		if a.Err != nil {
			rows[i].Error = a.Err.Error()
			failed++
		}
	}
	if o.json {
		err = writeJSON(out, rows)
	} else {
		err = writeCacheTable(out, rows)
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d members did not answer", failed, len(rows))
	}
	return nil
}

func writeCacheTable(out io.Writer, rows []cacheRow) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSHARE\tENTRIES\tHELD\tHITS\tMISSES\tSTORED\tEVICTED\tSENT")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s\t(no answer: %s)\n", r.Name, r.Error)
			continue
		}
		share, held := "-", "-"
		if r.Kind == grid.CacheGrid {
			share = fmt.Sprintf("%.1f%%", 100*r.Share)
			held = mebibytes(r.Bytes) + " of " + mebibytes(r.Capacity)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\n", r.Name, r.Kind, share, r.Entries, held,
			r.Hits, r.Misses, r.Stored, r.Evicted, r.Sent)
	}
	return w.Flush()
}

// mebibytes formats a byte count for people.
func mebibytes(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
}
