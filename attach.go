package shoal

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/scheduler"
)

// reportInterval is how often a job the client runs reports its progress
// to the node it is registered with, well within grid.AttachTimeout. A job
// over before its first report is never registered.
const reportInterval = 500 * time.Millisecond

// attachment registers a job the client runs (attached) with a node of the
// grid, so that `shoal jobs` lists it and another process can cancel it,
// and reports its progress there. It costs the job nothing: registering
// and reporting happen on a goroutine of their own, and a node that cannot
// be reached only leaves the job unlisted.
type attachment struct {
	c      *Client
	info   JobInfo // as registered; the counts below are its progress
	cancel context.CancelFunc

	canceledByGrid atomic.Bool // a node relayed shoal.job.cancel
	everRegistered bool        // by report, which alone reads it

	mu    sync.Mutex
	tally JobInfo       // the counts of the results so far
	id    string        // given by the node registering the job
	final *JobInfo      // the job's end, once known
	ended chan struct{} // closed with final
}

// attach starts registering the job of fn with a node; cancel cancels the
// job when shoal.job.cancel asks for it.
func (c *Client) attach(fn string, total int, cancel context.CancelFunc) *attachment {
	a := &attachment{c: c, cancel: cancel, ended: make(chan struct{}), info: JobInfo{
		Function: fn, Owner: jobOwner(), Mode: grid.JobAttached,
		State: grid.JobRunning, Total: int64(total), StartedMs: time.Now().UnixMilli(),
	}}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		a.report()
	}()
	return a
}

// count adds a batch of results to the job's progress.
func (a *attachment) count(batch []scheduler.Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range batch {
		a.tally.Count(int64(r.Index), r.Node, r.Cached, r.Err)
	}
}

// finish records the job's end; the last report carries it. Close waits
// for it (at most a second).
func (a *attachment) finish(st scheduler.Stats, err error) {
	info := a.progress()
	info.Retries = int64(st.Retries)
	info.Total = info.Done
	info.EndedMs = time.Now().UnixMilli()
	switch {
	case a.canceledByGrid.Load():
		info.State = grid.JobCanceled
	case err != nil && (err == context.Canceled || err == context.DeadlineExceeded):
		info.State, info.Error = grid.JobCanceled, err.Error()
	case err != nil:
		info.State, info.Error = grid.JobFailed, err.Error()
	default:
		info.State = grid.JobDone
	}
	a.mu.Lock()
	a.final = &info
	close(a.ended)
	a.mu.Unlock()
}

func (a *attachment) progress() JobInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	info := a.info
	info.ID = a.id
	info.Done, info.Failed, info.Cached = a.tally.Done, a.tally.Failed, a.tally.Cached
	t := a.tally.Clone()
	info.PerNode, info.FailedKinds, info.Failures = t.PerNode, t.FailedKinds, t.Failures
	return info
}

// report registers the job and reports its progress until it ends; when
// the node it is registered with stops answering, it registers the job
// with another under the same id.
func (a *attachment) report() {
	addr := ""
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	for {
		var final *JobInfo
		select {
		case <-a.c.ctx.Done():
		case <-a.ended:
		case <-t.C:
		}
		a.mu.Lock()
		final = a.final
		a.mu.Unlock()
		// The last report goes out even as the client closes.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(a.c.ctx), time.Second)
		info := a.progress()
		if final != nil {
			info = *final
			info.ID = a.progress().ID
		}
		if addr == "" && final != nil && !a.everRegistered {
			// Over before its first report: not worth listing. A loop
			// of small jobs leaves the nodes' lists alone.
			cancel()
			return
		}
		if addr == "" {
			addr = a.register(ctx, info)
			a.everRegistered = a.everRegistered || addr != ""
		} else if reply, err := a.c.stub.JobProgress(ctx, addr, info); err != nil {
			a.c.log.Debug("attached job's report failed; registering it elsewhere", "job", info.ID, "node", addr, "err", err)
			addr = a.register(ctx, info)
		} else if reply.Cancel && a.canceledByGrid.CompareAndSwap(false, true) {
			a.c.log.Info("job canceled through the grid", "job", info.ID)
			a.cancel()
		}
		cancel()
		if final != nil || a.c.ctx.Err() != nil {
			return
		}
	}
}

// register registers the job with a live member, the one the client last
// read its view from first, and returns its address ("" if none took it).
func (a *attachment) register(ctx context.Context, info JobInfo) string {
	members := append([]grid.Member(nil), a.c.view().Alive()...) // the view's own is not to be reordered
	if last := a.c.answered.Load(); last != nil {
		for i, m := range members {
			if m.RPC == *last {
				members[0], members[i] = members[i], members[0]
			}
		}
	}
	for _, m := range members {
		id, err := a.c.stub.AttachJob(ctx, m.RPC, info)
		if err == nil {
			a.mu.Lock()
			a.id = id
			a.mu.Unlock()
			return m.RPC
		}
		if ctx.Err() != nil {
			break
		}
	}
	return ""
}
