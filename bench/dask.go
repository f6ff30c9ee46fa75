package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DaskConfig sizes the dask scenario.
type DaskConfig struct {
	// Binary is the shoal executable the nodes run as `shoal node`.
	Binary string `json:"-"`
	// Workers is Dask's worker processes and Shoal's node processes.
	// Default 2.
	Workers int `json:"workers"`
	// Items is the job's size: square of 0..Items-1. Dask's client.map
	// does a few hundred to a few thousand trivial items a second, so the
	// default is 5,000.
	Items int `json:"items"`
	// Jobs is how many turns each system takes, after an unmeasured
	// warm-up: a Dask job, and shoalJobsPerTurn Shoal jobs; the median job
	// of each counts. Default 3.
	Jobs int `json:"jobs"`
	// Python is the interpreter to run Dask with. Empty: /usr/bin/python3
	// (where Debian's python3-distributed installs), then python3 on the
	// PATH, whichever imports distributed first.
	Python string `json:"python,omitempty"`
}

// DaskReport is the dask scenario's figures: the same square job through
// Dask's client.map and through Shoal's Go API, over as many worker
// processes as node processes, taking turns.
type DaskReport struct {
	// Skipped says why Dask was not measured and how to install it; the
	// other fields are then empty.
	Skipped string `json:"skipped,omitempty"`
	Python  string `json:"python,omitempty"`
	Version string `json:"dask_distributed_version,omitempty"`
	Workers int    `json:"workers"`
	// ThreadsPerWorker is each Dask worker's threads: Dask's own default,
	// the CPUs shared out among the workers.
	ThreadsPerWorker int        `json:"threads_per_worker"`
	Items            int        `json:"items"`
	Dask             DaskSystem `json:"dask"`
	Shoal            DaskSystem `json:"shoal"`
	ShoalVsDask      float64    `json:"shoal_vs_dask"`
}

// DaskSystem is one system's jobs in the dask scenario.
type DaskSystem struct {
	JobSeconds     []float64 `json:"job_seconds"`
	ItemsPerSecond float64   `json:"items_per_second"`
}

// DaskInstallHint is what the report says when Dask is not there.
const DaskInstallHint = "apt-get install -y python3-distributed (Debian, Ubuntu), or pip install distributed"

// daskWarmUpItems is the size of the unmeasured first job of each system.
const daskWarmUpItems = 200

// shoalJobsPerTurn is how many jobs Shoal runs in each of its turns with
// Dask: its jobs take milliseconds, Dask's seconds, and the median of
// more of them is steadier for costing next to nothing.
const shoalJobsPerTurn = 5

// RunDask runs the square job through Dask's client.map on a LocalCluster
// of cfg.Workers worker processes (scheduler and workers on 127.0.0.1, no
// dashboard) and through Shoal's Go API on a grid of as many node
// processes, the two taking turns job by job. Where no Python imports
// distributed, it reports that, with how to install it, and measures
// nothing. Zero fields of cfg take their defaults.
func RunDask(ctx context.Context, cfg DaskConfig, progress io.Writer) (*DaskReport, error) {
	cfg = Config{Dask: cfg}.withDefaults(DefaultConfig()).Dask
	if cfg.Binary == "" {
		return nil, errors.New("bench: the dask scenario needs the shoal binary to start nodes from")
	}
	p := progressLog{progress}
	threads := max(1, (runtime.NumCPU()+cfg.Workers-1)/cfg.Workers)
	report := &DaskReport{Workers: cfg.Workers, Items: cfg.Items, ThreadsPerWorker: threads}
	python, version, err := findDask(ctx, cfg.Python)
	if err != nil {
		report.Skipped = fmt.Sprintf("dask: not measured: %v; to compare, install it: %s", err, DaskInstallHint)
		p.printf("%s", report.Skipped)
		return report, nil
	}
	report.Python, report.Version = python, version

	p.printf("dask: starting a LocalCluster of %d worker process%s (%s, distributed %s)", cfg.Workers, es(cfg.Workers), python, version)
	dask, err := startDask(ctx, python, cfg.Workers, threads)
	if err != nil {
		return nil, err
	}
	defer dask.close()
	p.printf("dask: starting a Shoal grid of %d node process%s", cfg.Workers, es(cfg.Workers))
	g, err := StartGrid(ctx, cfg.Binary, "dask", cfg.Workers)
	if err != nil {
		return nil, err
	}
	defer g.Close()

	squares := make([]int, cfg.Items)
	for i := range squares {
		squares[i] = i
	}
	if err := squareJob(ctx, g.Client, squares[:min(daskWarmUpItems, cfg.Items)]); err != nil {
		return nil, fmt.Errorf("bench: dask: Shoal: %w", err)
	}
	p.printf("dask: warm-up job of %d items", min(daskWarmUpItems, cfg.Items))
	if _, err := dask.job(ctx, min(daskWarmUpItems, cfg.Items)); err != nil {
		return nil, err
	}
	for job := 1; job <= cfg.Jobs; job++ {
		p.printf("dask: job %d of %d on each, %d items", job, cfg.Jobs, cfg.Items)
		for range shoalJobsPerTurn {
			start := time.Now()
			if err := squareJob(ctx, g.Client, squares); err != nil {
				return nil, fmt.Errorf("bench: dask: Shoal: %w", err)
			}
			report.Shoal.JobSeconds = append(report.Shoal.JobSeconds, time.Since(start).Seconds())
		}
		secs, err := dask.job(ctx, cfg.Items)
		if err != nil {
			return nil, err
		}
		report.Dask.JobSeconds = append(report.Dask.JobSeconds, secs)
	}
	for _, s := range []*DaskSystem{&report.Shoal, &report.Dask} {
		s.ItemsPerSecond = Ratio(float64(cfg.Items), Median(s.JobSeconds))
	}
	report.ShoalVsDask = Ratio(report.Shoal.ItemsPerSecond, report.Dask.ItemsPerSecond)
	if err := dask.close(); err != nil {
		p.printf("dask: %v", err)
	}
	return report, g.Close()
}

func es(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}

// findDask returns the first interpreter, of python or else the default
// ones, that imports distributed, with distributed's version.
func findDask(ctx context.Context, python string) (string, string, error) {
	candidates := []string{python}
	if python == "" {
		candidates = []string{"/usr/bin/python3", "python3"}
	}
	var errs []string
	for _, c := range candidates {
		probe, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(probe, c, "-c", "import distributed; print(distributed.__version__)").CombinedOutput()
		cancel()
		if err == nil {
			return c, strings.TrimSpace(string(out)), nil
		}
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		why := err.Error()
		if bytes.Contains(out, []byte("No module named")) {
			why = "no module distributed"
		}
		errs = append(errs, c+": "+why)
	}
	return "", "", fmt.Errorf("no Python here imports distributed (%s)", strings.Join(errs, "; "))
}

// daskScript serves square jobs on a LocalCluster: it prints a line when
// the cluster is up, then for each line it reads (a number of items) runs
// client.map(square, range(n)) and gathers the results, and prints the
// job's seconds, measured inside Python so that the pipe to this process
// is not counted. It ends, closing the cluster, when its input does.
// pure=False gives each job's tasks fresh keys, so no job finds another's
// results still held by the cluster (and spares Dask hashing arguments).
const daskScript = `
import json, logging, sys, time

def square(x):
    return x * x

def main():
    workers, threads = int(sys.argv[1]), int(sys.argv[2])
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(workers)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        n = int(line)
        start = time.perf_counter()
        futures = client.map(square, range(n), pure=False)
        out = client.gather(futures)
        seconds = time.perf_counter() - start
        del futures
        print(json.dumps({"seconds": seconds, "items": len(out), "last": out[-1]}), flush=True)
    client.close()
    cluster.close()

if __name__ == "__main__":
    main()
`

// daskProcess is the Python process running daskScript, with its cluster.
type daskProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at its end
	stderr *outputBuffer
	dir    string
	// busy is set while a job is asked for and not answered: closing then
	// kills Python at once rather than waiting for the job.
	busy bool
}

func startDask(ctx context.Context, python string, workers, threads int) (*daskProcess, error) {
	dir, err := os.MkdirTemp("", "shoal-bench-dask-")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "shoal_bench_dask.py")
	if err := os.WriteFile(script, []byte(daskScript), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &daskProcess{dir: dir, lines: make(chan string, 1), stderr: &outputBuffer{}}
	d.cmd = exec.Command(python, script, strconv.Itoa(workers), strconv.Itoa(threads))
	d.cmd.Dir = dir
	d.cmd.Stderr = d.stderr
	ownGroup(d.cmd)
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: dask: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		close(d.lines)
	}()
	var ready struct {
		Ready bool `json:"ready"`
	}
	if err := d.reply(ctx, 2*time.Minute, &ready); err != nil || !ready.Ready {
		d.close()
		return nil, fmt.Errorf("bench: dask: the cluster did not start: %v", err)
	}
	return d, nil
}

// job runs one job of n items and returns its seconds.
func (d *daskProcess) job(ctx context.Context, n int) (float64, error) {
	d.busy = true
	if _, err := fmt.Fprintf(d.stdin, "%d\n", n); err != nil {
		return 0, fmt.Errorf("bench: dask: %w: %s", err, d.stderr.tail())
	}
	var res struct {
		Seconds float64 `json:"seconds"`
		Items   int     `json:"items"`
		Last    int     `json:"last"`
	}
	// A slow machine's Dask may take a millisecond or more an item.
	if err := d.reply(ctx, time.Minute+time.Duration(n)*10*time.Millisecond, &res); err != nil {
		return 0, err
	}
	d.busy = false
	if res.Items != n || res.Last != (n-1)*(n-1) || res.Seconds <= 0 {
		return 0, fmt.Errorf("bench: dask: a job of %d items returned %d results, the last %d, in %vs", n, res.Items, res.Last, res.Seconds)
	}
	return res.Seconds, nil
}

// reply reads the script's next line into v.
func (d *daskProcess) reply(ctx context.Context, timeout time.Duration, v any) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-d.lines:
		if !ok {
			return fmt.Errorf("bench: dask: Python ended: %s", d.stderr.tail())
		}
		if err := json.Unmarshal([]byte(line), v); err != nil {
			return fmt.Errorf("bench: dask: %q: %w", line, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("bench: dask: no answer within %v: %s", timeout, d.stderr.tail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close ends the script's input, so that it closes its cluster and exits;
// what is still running after a while (Python and the worker processes it
// started) is killed.
func (d *daskProcess) close() error {
	if d.cmd == nil {
		return nil
	}
	d.stdin.Close()
	if d.busy {
		killGroup(d.cmd)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		killGroup(d.cmd)
		err = fmt.Errorf("bench: dask: Python did not exit within 30s and was killed: %v", <-done)
	}
	killGroup(d.cmd) // any worker left behind
	for range d.lines {
	}
	os.RemoveAll(d.dir)
	d.cmd = nil
	return err
}

// outputBuffer keeps the first 64 KiB a process writes to it, so that a
// chatty process cannot fill memory, and may be read while it is written.
type outputBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *outputBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := 64<<10 - o.b.Len(); room > 0 {
		o.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// tail returns the last 2,000 bytes kept, trimmed.
func (o *outputBuffer) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.TrimSpace(tail(o.b.String(), 2000))
}
