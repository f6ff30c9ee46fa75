package shoal

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// JobInfo is a job as the node coordinating it reports it: see
// grid.JobInfo.
type JobInfo = grid.JobInfo

// Job is a map job a node of the grid coordinates: it runs there, not in
// the client, and outlives the client that submitted it. Any client of the
// grid can find it by id (Client.Job), wait on it, read its results and
// cancel it.
type Job struct {
	c           *Client
	ID          string // the job's id, unique in the grid
	Coordinator string // the name of the node running it
	addr        string // the coordinator's RPC address
	lost        *JobInfo
}

// ErrJobLost is the error of reading the results of a job whose
// coordinator is gone: they were on it.
var ErrJobLost = errors.New("shoal: job lost with its coordinator")

// ErrJobCanceled is the error of a job the client runs when another
// process canceled it through the grid (shoal jobs cancel).
var ErrJobCanceled = errors.New("shoal: job canceled through the grid (shoal jobs cancel)")

// appendBatch bounds the inputs sent in one shoal.job.append, by count and
// by encoded size.
const (
	appendBatchItems = 8192
	appendBatchBytes = 1 << 20
)

// SubmitRange starts a job of fn over the integers from start up to, not
// including, stop, by step (one argument each), on the least loaded node
// offering fn, and returns once it runs there.
func (c *Client) SubmitRange(ctx context.Context, fn string, start, stop, step int64, opts ...Option) (*Job, error) {
	return c.submit(ctx, fn, []int64{start, stop, step}, nil, opts)
}

// Submit starts a job of fn over inputs (each an Args of arguments, or a
// single argument, as for Map) on the least loaded node offering fn, sends
// it the inputs in batches as they come, and returns once they are all
// sent: the job runs on, whatever becomes of the client.
func Submit[In any](ctx context.Context, c *Client, fn string, inputs iter.Seq[In], opts ...Option) (*Job, error) {
	return c.submit(ctx, fn, nil, func(send func(msgpack.RawMessage) error) error {
		var enc argEncoder
		for in := range inputs {
			b, err := appendInput(&enc, nil, &in)
			if err != nil {
				return err
			}
			if err := send(b); err != nil {
				return err
			}
		}
		return nil
	}, opts)
}

func (c *Client) submit(ctx context.Context, fn string, span []int64, feed func(send func(msgpack.RawMessage) error) error, opts []Option) (*Job, error) {
	o, err := readOptions(opts)
	if err != nil {
		return nil, err
	}
	view := c.view()
	if _, ok := view.Function(fn); !ok {
		return nil, unknownFunction(view, fn)
	}
	spec := grid.JobSpec{Function: fn, Range: span, Attempts: o.sched.Attempts, Chunk: o.sched.ChunkSize,
		TimeoutMs: o.sched.ItemTimeout.Milliseconds(), NoCache: o.noCache, Hedge: o.sched.Hedge, Owner: jobOwner()}
	var job *Job
	for _, m := range view.Candidates(fn) {
		var id string
		if id, err = c.stub.SubmitJob(ctx, m.RPC, spec); err == nil {
			job = &Job{c: c, ID: id, Coordinator: m.Name, addr: m.RPC}
			break
		}
		if ctx.Err() != nil || !retryElsewhere(err) {
			break
		}
	}
	if job == nil {
		return nil, fmt.Errorf("shoal: submitting a job of %s: %w", fn, err)
	}
	if feed == nil {
		return job, nil
	}
	var batch []msgpack.RawMessage
	size := 0
	var appendMu sync.Mutex // the keepalive's appends and the batches'
	lastAppend := time.Now()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		appendMu.Lock()
		defer appendMu.Unlock()
		_, err := c.stub.AppendJob(ctx, job.addr, job.ID, batch)
		batch, size, lastAppend = batch[:0], 0, time.Now()
		return err
	}
	// While the inputs are slow to come, empty appends tell the
	// coordinator that the client lives: it fails a job whose inputs
	// stop for grid.InputTimeout without being closed.
	keepalive := make(chan struct{})
	var kept sync.WaitGroup
	kept.Add(1)
	go func() {
		defer kept.Done()
		t := time.NewTicker(grid.InputTimeout / 4)
		defer t.Stop()
		for {
			select {
			case <-keepalive:
				return
			case <-t.C:
			}
			appendMu.Lock()
			if time.Since(lastAppend) >= grid.InputTimeout/4 {
				c.stub.AppendJob(ctx, job.addr, job.ID, nil)
				lastAppend = time.Now()
			}
			appendMu.Unlock()
		}
	}()
	err = feed(func(in msgpack.RawMessage) error {
		batch = append(batch, in)
		size += len(in)
		if len(batch) >= appendBatchItems || size >= appendBatchBytes {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	close(keepalive)
	kept.Wait()
	if err == nil {
		_, err = c.stub.CloseJob(ctx, job.addr, job.ID)
	}
	if err != nil {
		// A job whose inputs could not all be sent would run on a part
		// of them: stop it, and say so.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		c.stub.CancelJob(cctx, job.addr, job.ID)
		return nil, fmt.Errorf("shoal: sending the inputs of job %s to %s: %w (the job was canceled)", job.ID, job.Coordinator, err)
	}
	return job, nil
}

// jobOwner names this process in job listings: host and process id.
func jobOwner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s (pid %d)", host, os.Getpid())
}

// Jobs lists the jobs every live member coordinates, oldest first. A
// member that does not answer within the context's time is left out and
// named in the error, which comes with the jobs of the others.
func (c *Client) Jobs(ctx context.Context) ([]JobInfo, error) {
	all, err := c.stub.GridJobs(ctx, c.view().Alive())
	if err != nil {
		return all, fmt.Errorf("shoal: listing jobs: %w", err)
	}
	return all, nil
}

// Job finds the job with the given id on the live members.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	jobs, err := c.Jobs(ctx)
	for _, info := range jobs {
		if info.ID != id {
			continue
		}
		job := &Job{c: c, ID: id, Coordinator: info.Coordinator}
		m, ok := c.view().Member(info.Coordinator)
		if info.State == grid.JobLost || !ok || m.Gone() {
			job.lost = &info
			return job, nil
		}
		job.addr = m.RPC
		return job, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shoal: no job %q found: %w", id, err)
	}
	return nil, fmt.Errorf("shoal: no job %q on any live member (ended jobs are kept for the nodes' --job-retention)", id)
}

// Status returns the job's state and counts.
func (j *Job) Status(ctx context.Context) (JobInfo, error) {
	if j.lost != nil {
		return *j.lost, nil
	}
	return j.c.stub.JobStatus(ctx, j.addr, j.ID)
}

// Wait waits until the job has ended (done, failed or canceled) and
// returns its final state, calling progress, when not nil, each time the
// count of results grows.
func (j *Job) Wait(ctx context.Context, progress func(JobInfo)) (JobInfo, error) {
	last := int64(-1)
	for {
		info, err := j.Status(ctx)
		if err != nil {
			return info, err
		}
		if progress != nil && info.Done != last {
			progress(info)
			last = info.Done
		}
		if info.Ended() {
			return info, nil
		}
		// Waits on the coordinator until a result arrives or the job
		// ends, rather than polling.
		if _, err := j.c.stub.JobResults(ctx, j.addr, j.ID, info.Done, 0, 1000); err != nil {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Cancel stops the job: its work stops on every node, and the results
// before remain readable. It returns the job's final state.
func (j *Job) Cancel(ctx context.Context) (JobInfo, error) {
	if j.lost != nil {
		return *j.lost, nil // nothing runs it any more
	}
	return j.c.stub.CancelJob(ctx, j.addr, j.ID)
}

// Results yields the job's results in input order, from the first,
// waiting for each while the job runs, until the last it will have. Values
// are the encoded results; decode them with msgpack.Unmarshal.
func (j *Job) Results(ctx context.Context) iter.Seq2[Item[msgpack.RawMessage], error] {
	return func(yield func(Item[msgpack.RawMessage], error) bool) {
		if j.lost != nil {
			yield(Item[msgpack.RawMessage]{}, fmt.Errorf("%w: %s", ErrJobLost, j.lost.Error))
			return
		}
		for from := int64(0); ; {
			page, err := j.c.stub.JobResults(ctx, j.addr, j.ID, from, grid.MaxResultsPerRead, 10_000)
			if err != nil {
				yield(Item[msgpack.RawMessage]{Index: int(from)}, err)
				return
			}
			for _, r := range page.Results {
				it := Item[msgpack.RawMessage]{Index: int(r.Index), Value: r.Value, Node: r.Node, Attempts: r.Attempts, Cached: r.Cached}
				if r.Error != nil {
					it.Value = nil
					it.Err = &rpc.Error{Kind: rpc.Kind(r.Error.Kind), Message: r.Error.Message}
				}
				if !yield(it, nil) {
					return
				}
			}
			from = page.Next
			if page.End {
				return
			}
		}
	}
}
