package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"math/big"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/vmihailenco/msgpack/v5"
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
	detach      bool
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
single argument; blank lines are skipped. Inputs are read as the job goes,
never held whole: results start before the input ends, and the job runs in
the same memory whatever its size. A bad line (not JSON, or two values on
one line) ends the input: the items before it finish and print, and the
command exits 1 naming the line.

With --format records each line is an object with index, result or error,
cached, node and attempts. A failed item prints null in the default format,
and its error goes to stderr with its index.

stderr shows a progress bar on a terminal (nothing of it in a pipe; a
count without a total for --input) and a final summary line;
--summary-json FILE writes the same as an object with items, ok, failed,
cached, retries, reissued, seconds, items_per_second and per_node (items
computed by each node).

An item that fails for a retryable reason (a lost node, a broken
connection, a timeout, an overloaded node) is tried again, on another node
when there is one, up to --attempts tries in all; retries in the summary
counts the tries beyond each item's first.

With --detach the job runs on a node (the least loaded offering FUNC),
which keeps its results on disk: the command sends the inputs, prints the
job's id on stdout and exits 0, and the job runs on whatever becomes of it.
shoal jobs lists, waits on, reads and cancels it from any terminal.

Exit status: 0 when every item succeeded, 2 when some failed, 1 when the job
could not run (no node answered, unknown function, a bad input line), 130
when interrupted (Ctrl-C cancels the job on every node).`,
		Example: `  shoal submit --range 0:100000 square
  shoal submit --range 0:1000 --format records --summary-json sum.json fib
  printf '[1,2]\n[3,4]\n' | shoal submit --input - add
  shoal submit --detach --range 0:1000000 square`,
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
	f.BoolVar(&o.detach, "detach", false, "run the job on a node of the grid, not in this command: send it the inputs, print the job's id and exit (see shoal jobs)")
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
	if o.detach {
		for _, name := range []string{"format", "summary-json"} {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("--%s does not go with --detach: the results stay on the node (shoal jobs results, shoal jobs wait)", name)
			}
		}
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
	in, err := o.inputs(stdin)
	if err != nil {
		return err
	}
	defer in.close()
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

	opts := []shoal.Option{shoal.WithAttempts(o.attempts), shoal.WithTimeout(o.timeout), shoal.WithChunkSize(o.chunk), shoal.InOrder()}
	if o.noCache {
		opts = append(opts, shoal.WithoutCache())
	}
	if o.hedge {
		opts = append(opts, shoal.WithHedging())
	}
	if o.detach {
		return submitDetached(ctx, c, in, fn, opts, stdout, stderr)
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	bar := terminalBar(stderr, in.total, fn)
	// Each batch of results is flushed as it is printed, so that results
	// show while the input is still coming.
	opts = append(opts, shoal.WithProgress(func(done, _ int) {
		if bar != nil {
			bar.Set(done)
		}
		out.Flush() // an error sticks, and the next write reports it
	}))
	var st shoal.Stats
	opts = append(opts, shoal.WithStats(&st))

	w := &resultWriter{out: out, records: o.format == "records"}
	var failures []shoal.Item[msgpack.RawMessage] // the first few, to print
	failed := 0
	jobErr, writeErr := in.run(ctx, c, fn, opts, func(it shoal.Item[msgpack.RawMessage]) error {
		if it.Err != nil {
			if failed++; len(failures) < maxFailuresShown {
				failures = append(failures, it)
			}
		}
		return w.write(it)
	})
	if bar != nil {
		bar.Finish()
	}
	if jobErr == nil && ctx.Err() != nil {
		// Ctrl-C while the input waited ends the input, and a job of the
		// inputs before it can finish cleanly: it is still not the job
		// asked for.
		jobErr = ctx.Err()
	}
	if writeErr != nil {
		return writeErr
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if jobErr != nil {
		if errors.Is(jobErr, shoal.ErrJobCanceled) {
			return jobErr // by shoal jobs cancel: the results before it printed
		}
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
	for _, it := range failures {
		fmt.Fprintf(stderr, "item %d: %v\n", it.Index, it.Err)
	}
	if failed > len(failures) {
		fmt.Fprintf(stderr, "... and %d more failed items\n", failed-len(failures))
	}
	fmt.Fprintf(stderr, "items %d, ok %d, failed %d, cached %d, retries %d, %.3fs, %.0f items/s\n",
		sum.Items, sum.OK, sum.Failed, sum.Cached, sum.Retries, sum.Seconds, sum.ItemsPerSec)
	if err := in.err(); err != nil {
		// The items before the bad input ran and printed; the job is
		// still not what was asked for.
		return err
	}
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

// terminalBar is a progress bar of total items (-1: unknown) on w when w
// is a terminal, and nil otherwise: a pipe gets none of it.
func terminalBar(w io.Writer, total int64, description string) *progressbar.ProgressBar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(description), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}

// maxFailuresShown bounds the failed items whose errors stderr lists.
const maxFailuresShown = 20

// jobInputs are a job's inputs, read as the job goes.
type jobInputs struct {
	total int64 // how many, or -1 when unknown
	// run runs the job over the inputs, handing each result in input
	// order to each; it returns the job's error, and each's.
	run func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option, each func(shoal.Item[msgpack.RawMessage]) error) (jobErr, eachErr error)
	// submit starts the job on a node, sending it the inputs.
	submit func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option) (*shoal.Job, error)
	// err returns why the inputs ended early (a bad line), once run or
	// submit has returned.
	err   func() error
	close func()
}

// inputs opens the job's inputs from --range or --input.
func (o *submitOptions) inputs(stdin io.Reader) (*jobInputs, error) {
	switch {
	case o.rangeSpec != "" && o.input != "":
		return nil, errors.New("give --range or --input, not both")
	case o.rangeSpec != "":
		r, err := parseRange(o.rangeSpec)
		if err != nil {
			return nil, err
		}
		total := int64(-1)
		if r.count <= math.MaxInt64 {
			total = int64(r.count)
		}
		return &jobInputs{
			total: total,
			run: func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option, each func(shoal.Item[msgpack.RawMessage]) error) (error, error) {
				if total >= 0 && total <= math.MaxInt {
					opts = append(opts[:len(opts):len(opts)], shoal.WithTotal(int(total)))
				}
				return runOver(ctx, c, fn, r.all(), opts, each, func() {})
			},
			submit: func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option) (*shoal.Job, error) {
				if stop, ok := r.stop(); ok {
					return c.SubmitRange(ctx, fn, r.start, stop, r.step, opts...)
				}
				return shoal.Submit(ctx, c, fn, r.all(), opts...) // a range reaching past the ends of int64
			},
			err:   func() error { return nil },
			close: func() {},
		}, nil
	case o.input != "":
		r := stdin
		var file *os.File
		if o.input != "-" {
			f, err := os.Open(o.input)
			if err != nil {
				return nil, err
			}
			r, file = f, f
		}
		lines := startReading(r)
		return &jobInputs{
			total: -1,
			run: func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option, each func(shoal.Item[msgpack.RawMessage]) error) (error, error) {
				return runOver(ctx, c, fn, lines.seq(ctx), opts, each, lines.stop)
			},
			submit: func(ctx context.Context, c *shoal.Client, fn string, opts []shoal.Option) (*shoal.Job, error) {
				return shoal.Submit(ctx, c, fn, lines.seq(ctx), opts...)
			},
			err: lines.err,
			close: func() {
				lines.stop()
				if file != nil {
					file.Close()
				}
			},
		}, nil
	}
	return nil, errors.New("no inputs: give --range A:B[:STEP] or --input FILE")
}

// runOver runs fn over inputs in input order, handing each result to
// each; stopInputs tells inputs to end when the job ends first.
func runOver[In any](ctx context.Context, c *shoal.Client, fn string, inputs iter.Seq[In], opts []shoal.Option, each func(shoal.Item[msgpack.RawMessage]) error, stopInputs func()) (jobErr, eachErr error) {
	for it, err := range shoal.StreamSeq[In, msgpack.RawMessage](ctx, c, fn, inputs, opts...) {
		if err != nil {
			jobErr = err
		} else {
			eachErr = each(it)
		}
		if jobErr != nil || eachErr != nil {
			stopInputs() // before StreamSeq waits for inputs to return
			break
		}
	}
	return jobErr, eachErr
}

// intRange is the integers of --range: count of them, from start by step.
type intRange struct {
	start, step int64
	count       uint64
}

// stop returns the end of the range as the grid's job methods take it,
// past the last integer by one step, and false when that would wrap past
// the ends of int64.
func (r intRange) stop() (int64, bool) {
	if r.count == 0 {
		return r.start, true
	}
	end := new(big.Int).Mul(new(big.Int).SetUint64(r.count), big.NewInt(r.step))
	end.Add(end, big.NewInt(r.start))
	return end.Int64(), end.IsInt64()
}

// all yields the range's integers. They are computed from their position,
// so that none wraps past the ends of int64.
func (r intRange) all() iter.Seq[int64] {
	return func(yield func(int64) bool) {
		x := uint64(r.start)
		for k := uint64(0); k < r.count; k++ {
			if !yield(int64(x)) {
				return
			}
			x += uint64(r.step) // two's complement: a negative step counts down
		}
	}
}

func parseRange(spec string) (intRange, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return intRange{}, fmt.Errorf("--range %q: want A:B or A:B:STEP", spec)
	}
	var nums [3]int64
	nums[2] = 1
	for i, p := range parts {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil {
			return intRange{}, fmt.Errorf("--range %q: %q is not an integer", spec, p)
		}
		nums[i] = n
	}
	a, b, step := nums[0], nums[1], nums[2]
	if step == 0 {
		return intRange{}, fmt.Errorf("--range %q: STEP may not be 0", spec)
	}
	if (step > 0 && a >= b) || (step < 0 && a <= b) {
		return intRange{}, fmt.Errorf("--range %q holds no integers: A:B counts from A up to, not including, B (for a count down give a negative STEP, as in %d:%d:-1)", spec, a, b)
	}
	// The distance and the step's size as unsigned numbers: neither
	// overflows, however far apart A and B are.
	var dist, size uint64
	if step > 0 {
		dist, size = uint64(b)-uint64(a), uint64(step)
	} else {
		dist, size = uint64(a)-uint64(b), -uint64(step)
	}
	return intRange{start: a, step: step, count: (dist-1)/size + 1}, nil
}

// inputBatch bounds the inputs the reader hands over at once.
const inputBatch = 256

// lineReader reads JSON inputs on a goroutine of its own, so that a job
// goes on while its input waits (a pipe, a terminal), and hands them over
// in batches: each batch goes out when full or when the reader is about
// to wait for more input, so an input is never held back while the reader
// waits.
type lineReader struct {
	batches  chan []shoal.Args
	done     chan struct{} // closed by stop: the job wants no more
	stopOnce sync.Once
	readErr  error // set before batches is closed
}

func startReading(r io.Reader) *lineReader {
	l := &lineReader{batches: make(chan []shoal.Args, 4), done: make(chan struct{})}
	go l.read(r)
	return l
}

// stop tells the reader the job wants no more. A reader waiting for input
// returns when it gets some, or with the process.
func (l *lineReader) stop() { l.stopOnce.Do(func() { close(l.done) }) }

// err returns why the input ended early. Call it only once seq has
// returned because the input ended (the job ended without an error):
// the reader sets it before it closes batches.
func (l *lineReader) err() error { return l.readErr }

// seq yields the inputs until they end, the job stops them or ctx ends.
func (l *lineReader) seq(ctx context.Context) iter.Seq[shoal.Args] {
	return func(yield func(shoal.Args) bool) {
		for {
			var batch []shoal.Args
			var ok bool
			select {
			case batch, ok = <-l.batches:
			case <-l.done:
				return
			case <-ctx.Done():
				return
			}
			if !ok {
				return
			}
			for _, args := range batch {
				if !yield(args) {
					return
				}
			}
		}
	}
}

// read decodes one JSON value per line from r, with one decoder. At a bad
// line it stops, the inputs before it handed over.
func (l *lineReader) read(r io.Reader) {
	defer close(l.batches)
	var batch []shoal.Args
	send := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case l.batches <- batch:
			batch = nil
			return true
		case <-l.done:
			return false
		}
	}
	counter := &newlineCounter{r: r, beforeRead: send}
	dec := json.NewDecoder(counter)
	dec.UseNumber()
	unsure, mark := false, 0 // the last value's line went on past what was read, from line mark
	defer func() {
		if l.readErr != nil {
			send()
		}
	}()
	for {
		if unsure {
			// Read up to the next value and see whether a newline came
			// before it.
			if dec.More() && counter.newlines-bytes.Count(bufferedBytes(dec), []byte{'\n'}) == mark {
				l.readErr = moreThanOne(counter.lineOfNext(dec))
				return
			}
			unsure = false
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			var syntax *json.SyntaxError
			switch {
			case err == io.EOF:
				send()
			case errors.Is(err, errStopped):
			case counter.readErr != nil && !errors.As(err, &syntax):
				l.readErr = fmt.Errorf("reading inputs: %w", counter.readErr)
			default:
				l.readErr = fmt.Errorf("input line %d: not a JSON literal (strings need quotes: '\"text\"'): %v", counter.lineOfNext(dec), err)
			}
			return
		}
		// The value must end its line.
		switch newlines, more := leadingSpace(dec.Buffered()); {
		case newlines == 0 && more:
			l.readErr = moreThanOne(counter.lineOfLast(dec))
			return
		case newlines == 0:
			unsure, mark = true, counter.newlines-bytes.Count(bufferedBytes(dec), []byte{'\n'})
		}
		v, err := fromJSON(v)
		if err != nil {
			l.readErr = fmt.Errorf("input line %d: %w", counter.lineOfLast(dec), err)
			return
		}
		if list, ok := v.([]any); ok {
			batch = append(batch, shoal.Args(list))
		} else {
			batch = append(batch, shoal.Args{v})
		}
		if len(batch) >= inputBatch && !send() {
			return
		}
	}
}

func moreThanOne(line int) error {
	return fmt.Errorf("input line %d: more than one JSON value on the line; put each input on a line of its own (an array for several arguments)", line)
}

// bufferedBytes returns what dec has read and not yet decoded.
func bufferedBytes(dec *json.Decoder) []byte {
	b, _ := io.ReadAll(dec.Buffered())
	return b
}

// errStopped ends the reading of inputs the job no longer wants.
var errStopped = errors.New("the job wants no more inputs")

// leadingSpace reads the white space that starts r (a decoder's buffered
// input): how many newlines it holds, and whether anything follows it.
func leadingSpace(r io.Reader) (newlines int, more bool) {
	br, ok := r.(io.ByteReader)
	if !ok {
		return 0, false
	}
	for {
		c, err := br.ReadByte()
		switch {
		case err != nil:
			return newlines, false
		case c == '\n':
			newlines++
		case c == ' ' || c == '\t' || c == '\r':
		default:
			return newlines, true
		}
	}
}

// newlineCounter counts the lines a decoder has read, and calls
// beforeRead before each read, which may wait: the inputs decoded so far
// go out first.
type newlineCounter struct {
	r          io.Reader
	beforeRead func() bool // false: the job wants no more
	newlines   int
	readErr    error
}

func (c *newlineCounter) Read(p []byte) (int, error) {
	if !c.beforeRead() {
		return 0, errStopped
	}
	n, err := c.r.Read(p)
	c.newlines += bytes.Count(p[:n], []byte{'\n'})
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}

// lineOfNext returns the line on which the first value dec has not
// decoded yet starts.
func (c *newlineCounter) lineOfNext(dec *json.Decoder) int {
	ahead := bufferedBytes(dec)
	newlines, _ := leadingSpace(bytes.NewReader(ahead))
	return 1 + c.newlines - bytes.Count(ahead, []byte{'\n'}) + newlines
}

// lineOfLast returns the line on which the value dec decoded last ends.
func (c *newlineCounter) lineOfLast(dec *json.Decoder) int {
	return 1 + c.newlines - bytes.Count(bufferedBytes(dec), []byte{'\n'})
}
