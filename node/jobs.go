package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// jobs runs the map jobs submitted to this node, with the scheduler a
// client runs, over the node's own view of the grid, keeping their results
// on disk under the data directory until the retention time after they
// end.
type jobs struct {
	n         *Node
	dir       string // where each job keeps its files, in a directory of its own
	dirErr    error  // why there is no dir: jobs are then refused
	ownDir    string // a temporary data directory the node made, removed at close
	retention time.Duration
	views     grid.Views // the grid as the jobs see it, refreshed while they run

	queue *memberlist.TransmitLimitedQueue // gossips the jobs' states

	mu        sync.Mutex
	byID      map[string]*nodeJob
	heardJobs map[string]*heardJob // jobs of other nodes, as gossiped
}

// nodeJob is one job this node coordinates, or an attached job a client
// runs and has registered here.
type nodeJob struct {
	dir    string
	store  *resultStore       // nil when attached
	spool  *inputSpool        // nil for a range, whose inputs are closed from the start, or when attached
	cancel context.CancelFunc // nil when attached

	attached  bool
	announced string // the state last gossiped, guarded by jobs.mu

	mu         sync.Mutex
	info       grid.JobInfo
	canceled   bool      // by shoal.job.cancel: an attached job's client is asked to cancel it
	abandoned  bool      // its inputs stopped coming, never closed
	lastReport time.Time // an attached job's latest progress report
	started    time.Time
	changed    chan struct{} // closed and replaced when results arrive or the state changes
}

// initJobs prepares the data directory: cfg.DataDir, or a temporary one.
// Without one the node still serves, refusing jobs with the reason.
func (n *Node) initJobs() {
	j := &jobs{n: n, retention: n.cfg.JobRetention, byID: make(map[string]*nodeJob), heardJobs: make(map[string]*heardJob)}
	// Nothing is queued before memberlist runs and the node's loops
	// start, so NumNodes never sees n.ml unset.
	j.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return n.ml.NumMembers() }, RetransmitMult: 3}
	n.jobs = j
	dir := n.cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "shoal-node-")
		if err != nil {
			j.dirErr = fmt.Errorf("no --data-dir given, and no temporary one could be made: %w", err)
			return
		}
		dir, j.ownDir = tmp, tmp
	}
	j.dir = filepath.Join(dir, "jobs")
	// The jobs of an earlier run of the node are lost with it: their
	// coordinator is gone, and nothing could read them by id any more.
	if old, err := os.ReadDir(j.dir); err == nil && len(old) > 0 {
		n.log.Info("removing the jobs of an earlier run", "dir", j.dir, "jobs", len(old))
		os.RemoveAll(j.dir)
	}
	if err := os.MkdirAll(j.dir, 0o700); err != nil {
		j.dirErr = fmt.Errorf("data directory: %w", err)
	}
}

// loop refreshes the jobs' view of the grid while a detached job runs,
// ends the jobs whose clients went silent, gossips the jobs' states, and
// forgets the jobs ended longer than the retention time ago.
func (j *jobs) loop() {
	t := time.NewTicker(j.n.cfg.Timing.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-j.n.ctx.Done():
			return
		case <-t.C:
		}
		if j.detachedRunning() {
			j.refreshView(j.n.ctx)
		}
		j.loseSilent(time.Now())
		j.announce()
		j.expire(time.Now())
		j.forgetHeard(time.Now())
	}
}

// detachedRunning reports whether a job this node runs itself is running:
// only those need its view of the grid.
func (j *jobs) detachedRunning() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, job := range j.byID {
		job.mu.Lock()
		running := !job.attached && job.info.State == grid.JobRunning
		job.mu.Unlock()
		if running {
			return true
		}
	}
	return false
}

func (j *jobs) refreshView(ctx context.Context) *grid.View {
	v := grid.NewView(j.n.Members(), j.n.Functions(ctx))
	j.views.Set(v)
	return v
}

// loseSilent marks lost the attached jobs whose clients have stopped
// reporting, and fails the detached jobs whose inputs stopped coming
// before they were closed.
func (j *jobs) loseSilent(now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, job := range j.byID {
		if !job.attached && job.spool != nil && job.spool.abandoned(now, grid.InputTimeout) {
			job.mu.Lock()
			running := job.info.State == grid.JobRunning && !job.abandoned
			job.abandoned = true
			job.mu.Unlock()
			if running {
				j.n.log.Warn("job's inputs stopped coming; failing it", "job", job.info.ID, "owner", job.info.Owner)
				job.cancel()
			}
			continue
		}
		job.mu.Lock()
		if job.attached && job.info.State == grid.JobRunning && now.Sub(job.lastReport) > grid.AttachTimeout {
			job.info.State, job.info.EndedMs = grid.JobLost, now.UnixMilli()
			job.info.Error = fmt.Sprintf("its client has not reported for %v", grid.AttachTimeout)
			job.signal()
			j.n.log.Warn("attached job lost", "job", job.info.ID, "owner", job.info.Owner)
		}
		job.mu.Unlock()
	}
}

// maxEndedAttached bounds the ended attached jobs a node keeps listing:
// a client running jobs in a loop all day must not grow its list without
// end. The oldest go first.
const maxEndedAttached = 1000

func (j *jobs) expire(now time.Time) {
	j.mu.Lock()
	var gone []*nodeJob
	var endedAttached []grid.JobInfo
	for id, job := range j.byID {
		info := job.snapshot()
		if info.Ended() && now.Sub(time.UnixMilli(info.EndedMs)) > j.retention {
			delete(j.byID, id)
			gone = append(gone, job)
		} else if info.Ended() && job.attached {
			endedAttached = append(endedAttached, info)
		}
	}
	if extra := len(endedAttached) - maxEndedAttached; extra > 0 {
		sort.Slice(endedAttached, func(a, b int) bool { return endedAttached[a].EndedMs < endedAttached[b].EndedMs })
		for _, info := range endedAttached[:extra] {
			delete(j.byID, info.ID)
		}
	}
	j.mu.Unlock()
	for _, job := range gone {
		job.remove()
	}
}

// close releases every job's files; the jobs have stopped (their
// goroutines are the node's).
func (j *jobs) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, job := range j.byID {
		job.remove()
		delete(j.byID, id)
	}
	if j.ownDir != "" {
		os.RemoveAll(j.ownDir)
	}
}

func (job *nodeJob) remove() {
	if job.attached {
		return
	}
	job.store.close()
	if job.spool != nil {
		job.spool.release()
	}
	os.RemoveAll(job.dir)
}

func (job *nodeJob) snapshot() grid.JobInfo {
	job.mu.Lock()
	defer job.mu.Unlock()
	info := job.info.Clone()
	if secs := job.elapsed().Seconds(); secs > 0 {
		info.ItemsPerSecond = float64(info.Done) / secs
	}
	return info
}

// elapsed is the job's running time so far, or in all once it ended.
func (job *nodeJob) elapsed() time.Duration {
	if job.info.EndedMs != 0 {
		return time.UnixMilli(job.info.EndedMs).Sub(job.started)
	}
	return time.Since(job.started)
}

// signal wakes those waiting for results or a new state.
func (job *nodeJob) signal() {
	close(job.changed)
	job.changed = make(chan struct{})
}

func (j *jobs) get(id string) (*nodeJob, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job := j.byID[id]
	if job == nil {
		return nil, rpc.Errorf(rpc.KindBadArguments, "no job %q on %s (ended jobs are kept for %v)", id, j.n.cfg.Name, j.retention)
	}
	return job, nil
}

// detached returns the detached job with the given id: the ones whose
// inputs and results this node holds.
func (j *jobs) detached(id string) (*nodeJob, error) {
	job, err := j.get(id)
	if err == nil && job.attached {
		return nil, rpc.Errorf(rpc.KindBadArguments, "job %s is attached: it runs in its client (%s), which has its inputs and results", id, job.info.Owner)
	}
	return job, err
}

// newJobID returns a random job id, unique in the grid for all purposes.
func newJobID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// attachJob registers a job a client runs itself, listing it with this
// node's jobs until the client's reports stop.
func (n *Node) attachJob(ctx context.Context, info grid.JobInfo) (string, error) {
	if info.ID == "" {
		info.ID = newJobID()
	} else if len(info.ID) > 64 {
		return "", rpc.Errorf(rpc.KindBadArguments, "job id of %d bytes; at most 64", len(info.ID))
	}
	if info.Function == "" {
		return "", rpc.Errorf(rpc.KindBadArguments, "attach: the job's function is missing")
	}
	if err := checkAttachedState(info); err != nil {
		return "", err
	}
	info.Bound()
	info.Coordinator, info.Mode = n.cfg.Name, grid.JobAttached
	if info.State == "" {
		info.State = grid.JobRunning
	}
	if info.StartedMs == 0 {
		info.StartedMs = time.Now().UnixMilli()
	}
	j := n.jobs
	j.mu.Lock()
	defer j.mu.Unlock()
	if old := j.byID[info.ID]; old != nil && !old.attached {
		return "", rpc.Errorf(rpc.KindBadArguments, "job %s runs here detached", info.ID)
	}
	j.byID[info.ID] = &nodeJob{attached: true, info: info, lastReport: time.Now(), started: time.UnixMilli(info.StartedMs), changed: make(chan struct{})}
	return info.ID, nil
}

// checkAttachedState refuses a report of an attached job in a state its
// client cannot be in.
func checkAttachedState(info grid.JobInfo) error {
	switch info.State {
	case "", grid.JobRunning, grid.JobDone, grid.JobFailed, grid.JobCanceled:
		return nil
	}
	return rpc.Errorf(rpc.KindBadArguments, "job %.64s reported the state %.64q; an attached job is running, done, failed or canceled", info.ID, info.State)
}

// jobProgress takes an attached job's progress report and answers whether
// its client should cancel it.
func (n *Node) jobProgress(ctx context.Context, report grid.JobInfo) (grid.ProgressReply, error) {
	job, err := n.jobs.get(report.ID)
	if err != nil {
		return grid.ProgressReply{}, err
	}
	if !job.attached {
		return grid.ProgressReply{}, rpc.Errorf(rpc.KindBadArguments, "job %s is detached: it reports to nobody", report.ID)
	}
	if err := checkAttachedState(report); err != nil {
		return grid.ProgressReply{}, err
	}
	report.Bound()
	job.mu.Lock()
	defer job.mu.Unlock()
	job.lastReport = time.Now()
	info := &job.info
	info.Total, info.Done, info.Failed, info.Cached, info.Retries = report.Total, report.Done, report.Failed, report.Cached, report.Retries
	if report.PerNode != nil {
		info.PerNode = report.PerNode
	}
	if report.FailedKinds != nil {
		info.FailedKinds = report.FailedKinds
	}
	if report.Failures != nil {
		info.Failures = report.Failures
	}
	if report.State != "" && report.State != grid.JobRunning {
		info.State, info.Error, info.EndedMs = report.State, report.Error, report.EndedMs
		if info.EndedMs == 0 {
			info.EndedMs = time.Now().UnixMilli()
		}
	} else if info.State == grid.JobLost {
		// It was only slow to report.
		info.State, info.Error, info.EndedMs = grid.JobRunning, "", 0
	}
	job.signal()
	return grid.ProgressReply{Cancel: job.canceled && info.State == grid.JobRunning}, nil
}

// submit starts a job and returns its id.
func (n *Node) submitJob(ctx context.Context, spec grid.JobSpec) (string, error) {
	j := n.jobs
	if j.dirErr != nil {
		return "", rpc.Errorf(rpc.KindUnavailable, "%s runs no jobs: %v", n.cfg.Name, j.dirErr)
	}
	if n.draining.Load() {
		return "", rpc.Errorf(rpc.KindUnavailable, "%s is leaving the grid", n.cfg.Name)
	}
	src, total, err := rangeOf(spec.Range)
	if err != nil {
		return "", err
	}
	if spec.Attempts < 0 || spec.TimeoutMs < 0 || spec.Chunk < 0 || spec.Chunk > grid.MaxChunkItems {
		return "", rpc.Errorf(rpc.KindBadArguments, "job: attempts, timeout_ms and chunk (at most %d) must not be negative", grid.MaxChunkItems)
	}
	view := j.refreshView(ctx)
	fn, ok := view.Function(spec.Function)
	if !ok {
		return "", rpc.Errorf(rpc.KindUnknownFunction, "no live member offers %q", spec.Function)
	}
	id := newJobID()
	dir := filepath.Join(j.dir, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", rpc.Errorf(rpc.KindUnavailable, "job directory: %v", err)
	}
	store, err := newResultStore(dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", rpc.Errorf(rpc.KindUnavailable, "job store: %v", err)
	}
	job := &nodeJob{dir: dir, store: store, started: time.Now(), changed: make(chan struct{})}
	if src == nil {
		if job.spool, err = newInputSpool(dir); err != nil {
			job.remove()
			return "", rpc.Errorf(rpc.KindUnavailable, "job inputs: %v", err)
		}
		src, total = job.spool, -1
	}
	job.info = grid.JobInfo{ID: id, Function: spec.Function, Owner: spec.Owner, Coordinator: n.cfg.Name, Mode: grid.JobDetached,
		State: grid.JobRunning, Total: total, StartedMs: job.started.UnixMilli(), PerNode: map[string]int64{}}
	opts := scheduler.Options{Ordered: true, Attempts: spec.Attempts, ChunkSize: spec.Chunk, Hedge: spec.Hedge,
		ItemTimeout: time.Duration(spec.TimeoutMs) * time.Millisecond, Version: fn.Version}
	if fn.Cacheable && !spec.NoCache {
		opts.Cache, opts.StoreResults = n.cache, true
	}
	jctx, cancel := context.WithCancel(n.ctx)
	job.cancel = cancel
	j.mu.Lock()
	j.byID[id] = job
	j.mu.Unlock()
	n.log.Info("job started", "job", id, "function", spec.Function, "owner", spec.Owner, "total", total)
	n.goFunc(func() { n.runJob(jctx, job, src, opts) })
	return id, nil
}

func (n *Node) runJob(ctx context.Context, job *nodeJob, src scheduler.Source, opts scheduler.Options) {
	defer job.cancel()
	g := scheduler.Grid{Caller: n.pool, Members: &n.jobs.views}
	var storeErr error
	st, err := scheduler.Run(ctx, g, job.info.Function, src, opts, func(batch []scheduler.Result) {
		if storeErr != nil {
			return
		}
		if storeErr = job.store.append(batch); storeErr != nil {
			job.cancel()
			return
		}
		job.mu.Lock()
		for _, r := range batch {
			job.info.Count(int64(r.Index), r.Node, r.Cached, r.Err)
		}
		job.signal()
		job.mu.Unlock()
	})
	// An ended job holds no descriptors: its inputs are done with, and its
	// results are opened as they are read.
	if err := job.store.close(); err != nil && storeErr == nil {
		storeErr = err
	}
	if job.spool != nil {
		job.spool.release()
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	job.info.EndedMs = time.Now().UnixMilli()
	job.info.Retries = int64(st.Retries)
	switch {
	case storeErr != nil:
		job.info.State, job.info.Error = grid.JobFailed, "storing results: "+storeErr.Error()
	case job.canceled:
		job.info.State = grid.JobCanceled
	case job.abandoned:
		job.info.State = grid.JobFailed
		job.info.Error = fmt.Sprintf("its inputs stopped coming: no shoal.job.append or shoal.job.close for %v (its client is gone?); the results of the %d inputs before are readable",
			grid.InputTimeout, job.info.Done)
	case err != nil && ctx.Err() != nil:
		job.info.State, job.info.Error = grid.JobCanceled, "the coordinator stopped"
	case err != nil:
		job.info.State, job.info.Error = grid.JobFailed, err.Error()
	default:
		job.info.State = grid.JobDone
		job.info.Total = job.info.Done
	}
	job.signal()
	n.log.Info("job ended", "job", job.info.ID, "state", job.info.State, "done", job.info.Done, "failed", job.info.Failed, "err", job.info.Error)
}

// appendJob adds inputs, each an argument array, to a job.
func (n *Node) appendJob(ctx context.Context, id string, inputs []msgpack.RawMessage) (int64, error) {
	job, err := n.jobs.detached(id)
	if err != nil {
		return 0, err
	}
	if job.spool == nil {
		return 0, rpc.Errorf(rpc.KindBadArguments, "job %s takes no inputs: it was given a range", id)
	}
	if len(inputs) > grid.MaxAppendItems {
		return 0, rpc.Errorf(rpc.KindBadArguments, "%d inputs in one append; send at most %d at a time", len(inputs), grid.MaxAppendItems)
	}
	for i, in := range inputs {
		if !isArray(in) {
			return 0, rpc.Errorf(rpc.KindBadArguments, "input %d of the batch is not an argument array", i)
		}
	}
	total, err := job.spool.add(inputs)
	if err != nil {
		return total, rpc.Errorf(rpc.KindBadArguments, "job %s: %v", id, err)
	}
	return total, nil
}

// isArray reports whether b starts a msgpack array.
func isArray(b []byte) bool {
	return len(b) > 0 && (b[0]&0xf0 == 0x90 || b[0] == 0xdc || b[0] == 0xdd)
}

// closeJob ends a job's inputs.
func (n *Node) closeJob(ctx context.Context, id string) (int64, error) {
	job, err := n.jobs.detached(id)
	if err != nil {
		return 0, err
	}
	if job.spool == nil {
		return job.snapshot().Total, nil
	}
	total := job.spool.close()
	job.mu.Lock()
	if job.info.State == grid.JobRunning {
		job.info.Total = total
	}
	job.signal()
	job.mu.Unlock()
	return total, nil
}

func (n *Node) jobStatus(ctx context.Context, id string) (grid.JobInfo, error) {
	job, err := n.jobs.get(id)
	if err != nil {
		return grid.JobInfo{}, err
	}
	return job.snapshot(), nil
}

// rawJobResults is grid.JobResults as the node sends it: each result as
// the store holds it, encoded already.
type rawJobResults struct {
	Results []msgpack.RawMessage `msgpack:"results"`
	Next    int64                `msgpack:"next"`
	End     bool                 `msgpack:"end"`
}

// jobResults returns up to max results from index from, waiting up to
// waitMs for the first while the job runs.
func (n *Node) jobResults(ctx context.Context, id string, from int64, max int, waitMs int64) (rawJobResults, error) {
	job, err := n.jobs.detached(id)
	if err != nil {
		return rawJobResults{}, err
	}
	if from < 0 || max < 0 || waitMs < 0 {
		return rawJobResults{}, rpc.Errorf(rpc.KindBadArguments, "from, max and wait_ms must not be negative")
	}
	max = min(max, grid.MaxResultsPerRead)
	wait := time.NewTimer(time.Duration(min(waitMs, 60_000)) * time.Millisecond)
	defer wait.Stop()
	for {
		job.mu.Lock()
		info, changed := job.info, job.changed
		job.mu.Unlock()
		stored := job.store.stored()
		if from < stored || info.Ended() {
			raw, err := job.store.read(from, max, 4<<20)
			if err != nil {
				return rawJobResults{}, rpc.Errorf(rpc.KindUnavailable, "reading job %s: %v", id, err)
			}
			if raw == nil {
				raw = []msgpack.RawMessage{} // an empty array on the wire, never nil
			}
			page := rawJobResults{Results: raw, Next: from + int64(len(raw))}
			page.End = info.Ended() && page.Next >= stored
			return page, nil
		}
		select {
		case <-changed:
		case <-wait.C:
			return rawJobResults{Results: []msgpack.RawMessage{}, Next: from}, nil
		case <-ctx.Done():
			return rawJobResults{}, ctx.Err()
		}
	}
}

// cancelJob stops a job: its chunks in flight are canceled on the nodes.
func (n *Node) cancelJob(ctx context.Context, id string) (grid.JobInfo, error) {
	job, err := n.jobs.get(id)
	if err != nil {
		return grid.JobInfo{}, err
	}
	job.mu.Lock()
	running := job.info.State == grid.JobRunning
	if running {
		job.canceled = true
	}
	job.mu.Unlock()
	if running {
		n.log.Info("job canceled", "job", id, "attached", job.attached)
		if job.attached {
			// Its client cancels it on its next report.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 2*grid.AttachTimeout)
			defer cancel()
		} else {
			job.cancel()
		}
		// The job ends once the nodes have been told; wait so that the
		// caller sees it ended.
		for {
			info := job.snapshot()
			if info.Ended() {
				return info, nil
			}
			job.mu.Lock()
			changed := job.changed
			job.mu.Unlock()
			select {
			case <-changed:
			case <-ctx.Done():
				return job.snapshot(), nil
			}
		}
	}
	return job.snapshot(), nil
}

// listJobs returns the jobs this node coordinates, oldest first, then
// those it has heard of by gossip.
func (n *Node) listJobs(ctx context.Context) []grid.JobInfo {
	n.jobs.mu.Lock()
	all := make([]*nodeJob, 0, len(n.jobs.byID))
	for _, job := range n.jobs.byID {
		all = append(all, job)
	}
	n.jobs.mu.Unlock()
	out := make([]grid.JobInfo, len(all))
	for i, job := range all {
		out[i] = job.snapshot().Summary()
	}
	out = append(out, n.jobs.heardList()...)
	sort.Slice(out, func(a, b int) bool {
		if out[a].StartedMs != out[b].StartedMs {
			return out[a].StartedMs < out[b].StartedMs
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// rangeOf returns the source of a range of integers and its length, or a
// nil source without a range.
func rangeOf(r []int64) (scheduler.Source, int64, error) {
	if len(r) == 0 {
		return nil, 0, nil
	}
	if len(r) != 2 && len(r) != 3 {
		return nil, 0, rpc.Errorf(rpc.KindBadArguments, "range: want [start, stop] or [start, stop, step], got %d numbers", len(r))
	}
	start, stop, step := r[0], r[1], int64(1)
	if len(r) == 3 {
		step = r[2]
	}
	var n uint64
	switch {
	case step == 0:
		return nil, 0, rpc.Errorf(rpc.KindBadArguments, "range: step must not be 0")
	case step > 0 && stop > start:
		n = (uint64(stop) - uint64(start) + uint64(step) - 1) / uint64(step)
	case step < 0 && stop < start:
		n = (uint64(start) - uint64(stop) + uint64(-step) - 1) / uint64(-step)
	}
	if n > math.MaxInt64 {
		return nil, 0, rpc.Errorf(rpc.KindBadArguments, "range: more than %d items", int64(math.MaxInt64))
	}
	return &rangeSource{next: start, left: int64(n), step: step}, int64(n), nil
}

// rangeSource gives the integers of a range, one argument each.
type rangeSource struct {
	next, left, step int64
}

func (s *rangeSource) Next(buf []byte) ([]byte, error) {
	if s.left == 0 {
		return buf, io.EOF
	}
	v := s.next
	s.left--
	s.next = int64(uint64(s.next) + uint64(s.step)) // two's complement: never past the last item's value
	buf = append(buf, 0x91)                         // an array of one
	switch {
	case v >= 0 && v < 128:
		return append(buf, byte(v)), nil
	case v < 0 && v >= -32:
		return append(buf, byte(int8(v))), nil
	default:
		buf = append(buf, 0xd3)
		return binary.BigEndian.AppendUint64(buf, uint64(v)), nil
	}
}

// jobError puts an item's error as the wire carries it.
func jobError(err error) *grid.JobError {
	var e *rpc.Error
	if errors.As(err, &e) {
		return &grid.JobError{Kind: string(e.Kind), Message: e.Message}
	}
	return &grid.JobError{Kind: string(rpc.KindRemote), Message: err.Error()}
}
