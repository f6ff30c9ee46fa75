package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/rpc"
)

type submitOptions struct {
	clientOptions
	rangeSpec   string
	input       string
	format      string
	summaryJSON string
	attempts    int
	retries     int // --attempts under its old name
	timeout     time.Duration
	chunk       int
	noCache     bool
	hedge       bool
}

func newSubmitCmd(g *globalOptions) *cobra.Command {
	o := &submitOptions{}
	cmd := &cobra.Command{
		Use:   "submit [flags] FUNC",
		Short: "Run a map job: apply FUNC to many inputs across the grid",
		Long: `Apply FUNC to every input across the grid's nodes and print the results in
input order, one JSON value per line.

Inputs come from --range A:B[:STEP] (the integers from A up to, not
including, B; one argument each) or from --input FILE (or - for stdin): one
JSON value per line, an array being the argument list and anything else a
single argument; blank lines are skipped.

With --format records each line is an object with index, result or error,
cached, node and attempts. A failed item prints null in the default format,
and its error goes to stderr with its index.

stderr shows a progress bar on a terminal (nothing of it in a pipe) and a
final summary line; --summary-json FILE writes the same as an object with
items, ok, failed, cached, retries, reissued, seconds, items_per_second and
per_node (items computed by each node).

An item that fails for a retryable reason (a lost node, a broken
connection, a timeout, an overloaded node) is tried again, on another node
when there is one, up to --attempts tries in all; retries in the summary
counts the tries beyond each item's first.

Exit status: 0 when every item succeeded, 2 when some failed, 1 when the job
could not run (no node answered, unknown function, a bad input line), 130
when interrupted (Ctrl-C cancels the job on every node).`,
		Example: `  shoal submit --range 0:100000 square
  shoal submit --range 0:1000 --format records --summary-json sum.json fib
  printf '[1,2]\n[3,4]\n' | shoal submit --input - add`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSubmit(cmd, g, o, args[0])
		},
	}
	o.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.rangeSpec, "range", "", "inputs A:B[:STEP]: the integers from A up to, not including, B")
	f.StringVar(&o.input, "input", "", "inputs from FILE, one JSON value per line (- for stdin)")
	f.StringVar(&o.format, "format", "values", "output: values (one JSON result per line) or records (objects with index, result or error, cached, node, attempts)")
	f.StringVar(&o.summaryJSON, "summary-json", "", "write the summary as a JSON object to FILE (see above for its fields)")
	f.IntVar(&o.attempts, "attempts", 3, "tries per item in all, the first included, for retryable failures (lost node, timeout, overloaded)")
	f.IntVar(&o.retries, "retries", 3, "the old name of --attempts")
	f.MarkDeprecated("retries", "it counted tries, not retries; use --attempts")
	f.DurationVar(&o.timeout, "timeout", 0, "per item; the function's context ends on the node too (0: none)")
	f.IntVar(&o.chunk, "chunk", 0, "items per call (0: sized from each item's measured cost)")
	f.BoolVar(&o.noCache, "no-cache", false, "compute every item, even for cacheable functions")
	f.BoolVar(&o.hedge, "hedge", false, "re-issue the slowest chunks at the tail of the job to idle nodes")
	return cmd
}

// summary is the job's summary, as --summary-json writes it.
type summary struct {
	Items       int            `json:"items"`
	OK          int            `json:"ok"`
	Failed      int            `json:"failed"`
	Cached      int            `json:"cached"`
	Retries     int            `json:"retries"`
	Reissued    int            `json:"reissued"`
	Seconds     float64        `json:"seconds"`
	ItemsPerSec float64        `json:"items_per_second"`
	PerNode     map[string]int `json:"per_node"`
}

// check refuses flags that cannot make a job, before anything runs.
func (o *submitOptions) check(cmd *cobra.Command) error {
	if cmd.Flags().Changed("retries") {
		if cmd.Flags().Changed("attempts") {
			return errors.New("give --attempts only: --retries is its old name")
		}
		if o.retries < 1 {
			return fmt.Errorf("--retries %d: an item needs at least 1 attempt (--retries counted tries; it is now --attempts)", o.retries)
		}
		o.attempts = o.retries
	}
	switch {
	case o.format != "values" && o.format != "records":
		return fmt.Errorf("--format %q: want values or records", o.format)
	case o.attempts < 1:
		return fmt.Errorf("--attempts %d: an item needs at least 1 attempt (the default is 3)", o.attempts)
	case o.chunk < 0:
		return fmt.Errorf("--chunk %d: want a number of items per call, or 0 to size chunks by item cost", o.chunk)
	case o.timeout < 0:
		return fmt.Errorf("--timeout %v: want a positive duration, or 0 for none", o.timeout)
	}
	return nil
}

func runSubmit(cmd *cobra.Command, g *globalOptions, o *submitOptions, fn string) (err error) {
	ctx, stdin, stdout, stderr := cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	if err := o.check(cmd); err != nil {
		return err
	}
	inputs, err := o.inputs(stdin)
	if err != nil {
		return err
	}
	// An unwritable summary file is found out before the job runs, not
	// after; a job that does not get to write it leaves no empty file.
	var summaryFile *os.File
	summaryWritten := false
	if o.summaryJSON != "" {
		_, statErr := os.Stat(o.summaryJSON)
		if summaryFile, err = os.OpenFile(o.summaryJSON, os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return fmt.Errorf("--summary-json: %w", err)
		}
		created := os.IsNotExist(statErr)
		defer func() {
			summaryFile.Close()
			if !summaryWritten && created {
				os.Remove(o.summaryJSON)
			}
		}()
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	c, err := o.dial(ctx, g)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer c.Close()

	opts := []shoal.Option{shoal.WithAttempts(o.attempts), shoal.WithTimeout(o.timeout), shoal.WithChunkSize(o.chunk)}
	if o.noCache {
		opts = append(opts, shoal.WithoutCache())
	}
	if o.hedge {
		opts = append(opts, shoal.WithHedging())
	}
	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions(len(inputs), progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription(fn), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		opts = append(opts, shoal.WithProgress(func(done, total int) { bar.Set(done) }))
	}
	var st shoal.Stats
	opts = append(opts, shoal.WithStats(&st))

	out := bufio.NewWriterSize(stdout, 64<<10)
	w := &orderedWriter{out: out, records: o.format == "records", pending: make(map[int]shoal.Item[any])}
	var failures []shoal.Item[any]
	var jobErr error
	for it, err := range shoal.Stream[shoal.Args, any](ctx, c, fn, inputs, opts...) {
		if err != nil {
			jobErr = err
			break
		}
		if it.Err != nil {
			failures = append(failures, it)
		}
		if err := w.add(it); err != nil {
			return err
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if jobErr != nil {
		if errors.Is(jobErr, context.Canceled) {
			fmt.Fprintln(stderr, "shoal: job canceled")
			return &exitError{code: 130}
		}
		if errors.Is(jobErr, rpc.ErrUnknownFunction) {
			return fmt.Errorf("%w\n(`shoal functions` lists what the grid offers)", jobErr)
		}
		return jobErr
	}

	sum := summary{Items: st.Items, OK: st.OK, Failed: st.Failed, Cached: st.Cached, Retries: st.Retries,
		Reissued: st.Reissued, Seconds: st.Wall.Seconds(), PerNode: st.PerNode}
	if sum.Seconds > 0 {
		sum.ItemsPerSec = float64(sum.Items) / sum.Seconds
	}
	for k, it := range failures {
		if k == 20 {
			fmt.Fprintf(stderr, "... and %d more failed items\n", len(failures)-k)
			break
		}
		fmt.Fprintf(stderr, "item %d: %v\n", it.Index, it.Err)
	}
	fmt.Fprintf(stderr, "items %d, ok %d, failed %d, cached %d, retries %d, %.3fs, %.0f items/s\n",
		sum.Items, sum.OK, sum.Failed, sum.Cached, sum.Retries, sum.Seconds, sum.ItemsPerSec)
	if summaryFile != nil {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := summaryFile.Truncate(0); err != nil {
			return fmt.Errorf("--summary-json: %w", err)
		}
		if _, err := summaryFile.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("--summary-json: %w", err)
		}
		summaryWritten = true
	}
	if sum.Failed > 0 {
		return &exitError{code: 2}
	}
	return nil
}

// inputs reads the job's inputs from --range or --input.
func (o *submitOptions) inputs(stdin io.Reader) ([]shoal.Args, error) {
	switch {
	case o.rangeSpec != "" && o.input != "":
		return nil, errors.New("give --range or --input, not both")
	case o.rangeSpec != "":
		return parseRange(o.rangeSpec)
	case o.input != "":
		r := stdin
		if o.input != "-" {
			f, err := os.Open(o.input)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r = f
		}
		return readInputs(r)
	}
	return nil, errors.New("no inputs: give --range A:B[:STEP] or --input FILE")
}

func parseRange(spec string) ([]shoal.Args, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("--range %q: want A:B or A:B:STEP", spec)
	}
	var nums [3]int64
	nums[2] = 1
	for i, p := range parts {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--range %q: %q is not an integer", spec, p)
		}
		nums[i] = n
	}
	a, b, step := nums[0], nums[1], nums[2]
	if step == 0 {
		return nil, fmt.Errorf("--range %q: STEP may not be 0", spec)
	}
	if (step > 0 && a >= b) || (step < 0 && a <= b) {
		return nil, fmt.Errorf("--range %q holds no integers: A:B counts from A up to, not including, B (for a count down give a negative STEP, as in %d:%d:-1)", spec, a, b)
	}
	var out []shoal.Args
	for x := a; (step > 0 && x < b) || (step < 0 && x > b); x += step {
		out = append(out, shoal.Args{x})
		if len(out) > 100_000_000 {
			return nil, fmt.Errorf("--range %q: more than 100,000,000 items", spec)
		}
	}
	return out, nil
}

// readInputs reads one JSON value per line; an array is the argument list.
func readInputs(r io.Reader) ([]shoal.Args, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var out []shoal.Args
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		v, err := parseJSONArg(text)
		if err != nil {
			return nil, fmt.Errorf("input line %d: %w", line, err)
		}
		if list, ok := v.([]any); ok {
			out = append(out, shoal.Args(list))
		} else {
			out = append(out, shoal.Args{v})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading inputs: %w", err)
	}
	return out, nil
}

// orderedWriter prints results in input order as soon as every earlier
// one is in.
type orderedWriter struct {
	out     *bufio.Writer
	records bool
	next    int
	pending map[int]shoal.Item[any]
}

type record struct {
	Index    int    `json:"index"`
	Result   any    `json:"result,omitempty"`
	Error    string `json:"error,omitempty"`
	Cached   bool   `json:"cached"`
	Node     string `json:"node,omitempty"`
	Attempts int    `json:"attempts"`
}

func (w *orderedWriter) add(it shoal.Item[any]) error {
	w.pending[it.Index] = it
	for {
		it, ok := w.pending[w.next]
		if !ok {
			return nil
		}
		delete(w.pending, w.next)
		w.next++
		var v any = jsonValue(it.Value)
		if w.records {
			r := record{Index: it.Index, Cached: it.Cached, Node: it.Node, Attempts: it.Attempts}
			if it.Err != nil {
				r.Error = rpc.ErrorOf(it.Err).Error()
			} else {
				r.Result = v
			}
			v = r
		} else if it.Err != nil {
			v = nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			b = []byte(strconv.Quote(fmt.Sprintf("unprintable result: %v", err)))
		}
		w.out.Write(b)
		w.out.WriteByte('\n')
	}
}
