package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/grid"
)

// submitDetached starts the job on a node, sends it the inputs and prints
// its id.
func submitDetached(ctx context.Context, c *shoal.Client, in *jobInputs, fn string, opts []shoal.Option, stdout, stderr io.Writer) error {
	job, err := in.submit(ctx, c, fn, opts)
	if err == nil && in.err() != nil {
		// A bad line ended the inputs: the job would run on part of
		// them only.
		job.Cancel(context.WithoutCancel(ctx))
		return fmt.Errorf("%w (job %s was canceled)", in.err(), job.ID)
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	fmt.Fprintln(stdout, job.ID)
	fmt.Fprintf(stderr, "job %s runs on %s: shoal jobs wait %s; shoal jobs results %s\n", job.ID, job.Coordinator, job.ID, job.ID)
	return nil
}

type jobsOptions struct {
	clientOptions
	json   bool
	format string
}

func newJobsCmd(g *globalOptions) *cobra.Command {
	o := &jobsOptions{}
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List the grid's jobs; show, wait on, read or cancel one",
		Long: `List the map jobs the live members coordinate (those started with
shoal submit --detach, shoal.Submit in Go, or shoal.job.submit from any
language): id, function, coordinator (the node running it), owner (who
submitted it), state (running, done, failed, canceled), results done of the
total, failures, items/s, and start and end times. --json prints an array
of objects with id, function, owner, coordinator, mode, state, total (-1
while the inputs still come), done, failed, cached, retries,
items_per_second, started_ms, ended_ms, error and per_node.

A job's results stay on its coordinator, readable by any client, for the
node's --job-retention after it ends.`,
		Example: `  shoal jobs
  shoal jobs show 3f9c2a7d1b0e4c55
  shoal jobs wait 3f9c2a7d1b0e4c55
  shoal jobs results 3f9c2a7d1b0e4c55 > results.jsonl
  shoal jobs cancel 3f9c2a7d1b0e4c55`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runJobsList(cmd.Context(), cmd.OutOrStdout(), g, o)
		},
	}
	o.addFlagsTo(cmd.PersistentFlags())
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	cmd.AddCommand(newJobsShowCmd(g, o), newJobsWaitCmd(g, o), newJobsResultsCmd(g, o), newJobsCancelCmd(g, o))
	return cmd
}

func runJobsList(ctx context.Context, out io.Writer, g *globalOptions, o *jobsOptions) error {
	c, err := o.dial(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	jobs, listErr := c.Jobs(lctx)
	if o.json {
		if jobs == nil {
			jobs = []shoal.JobInfo{}
		}
		if err := writeJSON(out, jobs); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tFUNCTION\tCOORDINATOR\tOWNER\tSTATE\tDONE\tFAILED\tITEMS/S\tSTARTED\tENDED")
		for _, j := range jobs {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0f\t%s\t%s\n", j.ID, j.Function, j.Coordinator, j.Owner, j.State,
				progressText(j), j.Failed, j.ItemsPerSecond, clock(j.StartedMs), clock(j.EndedMs))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if listErr != nil {
		return fmt.Errorf("%w\n(the jobs above are those of the members that answered)", listErr)
	}
	return nil
}

// progressText is "done/total", or "done/?" while the inputs still come.
func progressText(j shoal.JobInfo) string {
	if j.Total < 0 {
		return fmt.Sprintf("%d/?", j.Done)
	}
	return fmt.Sprintf("%d/%d", j.Done, j.Total)
}

// clock prints Unix milliseconds as local time, "-" for none.
func clock(ms int64) string {
	if ms == 0 {
		return "-"
	}
	t := time.UnixMilli(ms)
	if time.Since(t) < 24*time.Hour {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04")
}

// findJob dials the grid and finds the job with the given id.
func (o *jobsOptions) findJob(ctx context.Context, g *globalOptions, id string) (*shoal.Client, *shoal.Job, error) {
	c, err := o.dial(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	job, err := c.Job(fctx, id)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("%w\n(shoal jobs lists the jobs there are)", err)
	}
	return c, job, nil
}

func newJobsShowCmd(g *globalOptions, o *jobsOptions) *cobra.Command {
	return jobInfoCmd(g, o, "show ID", "Print a job's state and counts as JSON", "", (*shoal.Job).Status)
}

// jobInfoCmd is a command that does act to the job named and prints the
// job's state it returns as JSON.
func jobInfoCmd(g *globalOptions, o *jobsOptions, use, short, long string, act func(*shoal.Job, context.Context) (shoal.JobInfo, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, job, err := o.findJob(ctx, g, args[0])
			if err != nil {
				return err
			}
			defer c.Close()
			info, err := act(job, ctx)
			if err != nil {
				return err
			}
			return writeJSON(cmd.OutOrStdout(), info)
		},
	}
}

func newJobsWaitCmd(g *globalOptions, o *jobsOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a job to end, with a progress bar on a terminal",
		Long: `Wait until the job has ended, showing its progress on stderr when that is a
terminal, then print its summary line. Exit status as shoal submit's: 0
when every item succeeded, 2 when some failed, 1 when the job failed or was
canceled; 130 when interrupted (the job runs on).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			c, job, err := o.findJob(ctx, g, args[0])
			if err != nil {
				return err
			}
			defer c.Close()
			stderr := cmd.ErrOrStderr()
			bar := terminalBar(stderr, -1, job.ID)
			info, err := job.Wait(ctx, func(info shoal.JobInfo) {
				if bar != nil {
					bar.ChangeMax64(info.Total)
					bar.Set64(info.Done)
				}
			})
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return interrupted(ctx, err)
			}
			return jobEnded(stderr, info)
		},
	}
}

// jobEnded prints the summary of an ended job and returns its exit status.
func jobEnded(stderr io.Writer, info shoal.JobInfo) error {
	secs := 0.0
	if info.EndedMs > 0 {
		secs = float64(info.EndedMs-info.StartedMs) / 1000
	}
	fmt.Fprintf(stderr, "job %s %s: items %d, ok %d, failed %d, cached %d, retries %d, %.3fs, %.0f items/s\n",
		info.ID, info.State, info.Done, info.Done-info.Failed, info.Failed, info.Cached, info.Retries, secs, info.ItemsPerSecond)
	switch info.State {
	case grid.JobDone:
		if info.Failed > 0 {
			return &exitError{code: 2}
		}
		return nil
	case grid.JobFailed:
		return fmt.Errorf("job %s failed: %s", info.ID, info.Error)
	default:
		return fmt.Errorf("job %s was %s", info.ID, info.State)
	}
}

func newJobsResultsCmd(g *globalOptions, o *jobsOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "results ID",
		Short: "Print a job's results in input order, as shoal submit does",
		Long: `Print the job's results in input order, one JSON value per line (or, with
--format records, objects with index, result or error, cached, node and
attempts), as shoal submit prints them, waiting for each while the job
runs. Exit status as shoal jobs wait's.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.format != "values" && o.format != "records" {
				return fmt.Errorf("--format %q: want values or records", o.format)
			}
			ctx, stop := interruptible(cmd.Context())
			defer stop()
			c, job, err := o.findJob(ctx, g, args[0])
			if err != nil {
				return err
			}
			defer c.Close()
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			w := &resultWriter{out: out, records: o.format == "records"}
			stderr := cmd.ErrOrStderr()
			shown := 0
			for it, err := range job.Results(ctx) {
				if err != nil {
					out.Flush()
					return interrupted(ctx, err)
				}
				if it.Err != nil && shown < maxFailuresShown {
					shown++
					fmt.Fprintf(stderr, "item %d: %v\n", it.Index, it.Err)
				}
				if err := w.write(it); err != nil {
					return err
				}
			}
			if err := out.Flush(); err != nil {
				return err
			}
			info, err := job.Status(ctx)
			if err != nil {
				return err
			}
			return jobEnded(stderr, info)
		},
	}
	cmd.Flags().StringVar(&o.format, "format", "values", "output: values (one JSON result per line) or records (objects with index, result or error, cached, node, attempts)")
	return cmd
}

func newJobsCancelCmd(g *globalOptions, o *jobsOptions) *cobra.Command {
	return jobInfoCmd(g, o, "cancel ID", "Cancel a job: its work stops on every node",
		`Cancel the job: its coordinator stops sending work and cancels the calls in
flight on every node. The results it had stay readable. Prints the job's
final state as JSON.`, (*shoal.Job).Cancel)
}
