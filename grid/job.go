package grid

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/rpc"
)

// The methods of jobs a node coordinates. A client in any language runs a
// map job with them: submit, append inputs in batches (or give a range),
// close the inputs, then read results by index while the job runs and
// after it ends.
const (
	MethodJobSubmit  = "shoal.job.submit"
	MethodJobAppend  = "shoal.job.append"
	MethodJobClose   = "shoal.job.close"
	MethodJobStatus  = "shoal.job.status"
	MethodJobResults = "shoal.job.results"
	MethodJobCancel  = "shoal.job.cancel"
	MethodJobList    = "shoal.job.list"
	// MethodJobAttach registers a job a client runs itself (attached), so
	// that the grid lists it; MethodJobProgress reports its progress, and
	// its reply asks the client to cancel it.
	MethodJobAttach   = "shoal.job.attach"
	MethodJobProgress = "shoal.job.progress"
)

// Job modes.
const (
	JobDetached = "detached" // run by its coordinator, a node
	JobAttached = "attached" // run by a client, registered with a node
)

// InputTimeout is how long a detached job's coordinator waits for more
// inputs, or their close, before it fails the job: its client is gone. A
// client whose inputs are slow to come sends empty appends meanwhile.
const InputTimeout = 20 * time.Second

// AttachTimeout is how long a node waits for an attached job's progress
// report before it lists the job as lost: its client is gone.
const AttachTimeout = 10 * time.Second

// ProgressReply answers shoal.job.progress.
type ProgressReply struct {
	// Cancel asks the client to cancel the job: shoal.job.cancel was
	// called for it.
	Cancel bool `msgpack:"cancel"`
}

// Job states.
const (
	JobRunning  = "running"  // inputs open, or items not all answered
	JobDone     = "done"     // every item has a result (some may be errors)
	JobFailed   = "failed"   // the job could not run on: unknown function, a bad input
	JobCanceled = "canceled" // canceled; the results before remain readable
	JobLost     = "lost"     // its coordinator is gone
)

// Limits of the job methods.
const (
	// MaxAppendItems bounds the inputs one shoal.job.append may carry.
	MaxAppendItems = 65536
	// MaxResultsPerRead bounds the results one shoal.job.results returns.
	MaxResultsPerRead = 65536
)

// JobSpec describes a job to shoal.job.submit.
type JobSpec struct {
	Function string `msgpack:"function"`
	// Range, when given as [start, stop] or [start, stop, step], makes the
	// inputs the integers from start up to, not including, stop, one
	// argument each; the inputs are then closed already. Without it the
	// inputs come by shoal.job.append until shoal.job.close.
	Range []int64 `msgpack:"range,omitempty"`
	// Attempts bounds the tries of an item, the first included (default 3).
	Attempts int `msgpack:"attempts,omitempty"`
	// TimeoutMs bounds each item on the node, in milliseconds (0: none).
	TimeoutMs int64 `msgpack:"timeout_ms,omitempty"`
	// Chunk fixes the items per call (0: sized from each item's cost).
	Chunk int `msgpack:"chunk,omitempty"`
	// NoCache computes every item, even of a cacheable function.
	NoCache bool `msgpack:"no_cache,omitempty"`
	// Hedge re-issues the slowest chunks at the tail to idle nodes.
	Hedge bool `msgpack:"hedge,omitempty"`
	// Owner says who submitted the job (a host name, a program), for
	// listings.
	Owner string `msgpack:"owner,omitempty"`
}

// JobInfo is a job as its coordinator reports it.
type JobInfo struct {
	ID          string `msgpack:"id" json:"id"`
	Function    string `msgpack:"function" json:"function"`
	Owner       string `msgpack:"owner" json:"owner"`
	Coordinator string `msgpack:"coordinator" json:"coordinator"` // the node running it, or an attached job's registered with
	Mode        string `msgpack:"mode" json:"mode"`               // JobDetached or JobAttached
	State       string `msgpack:"state" json:"state"`
	// Total is the number of inputs, -1 while they are still coming.
	Total int64 `msgpack:"total" json:"total"`
	// Done counts the items with a result (Failed of them errors), in
	// input order: results 0 to Done-1 can be read.
	Done           int64   `msgpack:"done" json:"done"`
	Failed         int64   `msgpack:"failed" json:"failed"`
	Cached         int64   `msgpack:"cached" json:"cached"`
	Retries        int64   `msgpack:"retries" json:"retries"`
	ItemsPerSecond float64 `msgpack:"items_per_second" json:"items_per_second"`
	StartedMs      int64   `msgpack:"started_ms" json:"started_ms"`                 // Unix milliseconds
	EndedMs        int64   `msgpack:"ended_ms,omitempty" json:"ended_ms,omitempty"` // 0 while running
	Error          string  `msgpack:"error,omitempty" json:"error,omitempty"`       // why it failed
	// PerNode counts the items each node computed.
	PerNode map[string]int64 `msgpack:"per_node,omitempty" json:"per_node,omitempty"`
	// FailedKinds counts the failed items by error kind (rpc.Kind).
	FailedKinds map[string]int64 `msgpack:"failed_kinds,omitempty" json:"failed_kinds,omitempty"`
	// Failures are the first MaxJobFailures failed items, in the order
	// their results came. Job lists leave them off; a job's status has
	// them.
	Failures []JobFailure `msgpack:"failures,omitempty" json:"failures,omitempty"`
}

// MaxJobFailures bounds the failed items a JobInfo lists.
const MaxJobFailures = 100

// maxFailureMessage bounds the bytes of a listed failure's message.
const maxFailureMessage = 300

// JobFailure is a failed item of a job.
type JobFailure struct {
	Index   int64  `msgpack:"index" json:"index"`
	Kind    string `msgpack:"kind" json:"kind"`
	Message string `msgpack:"message" json:"message"`
}

// Count adds one item's outcome to the job's counts: Done, Failed with
// FailedKinds and Failures, Cached, or PerNode for the node that
// computed it.
func (j *JobInfo) Count(index int64, node string, cached bool, err error) {
	j.Done++
	switch {
	case err != nil:
		j.Failed++
		e := rpc.ErrorOf(err)
		if j.FailedKinds == nil {
			j.FailedKinds = make(map[string]int64)
		}
		j.FailedKinds[string(e.Kind)]++
		if len(j.Failures) < MaxJobFailures {
			j.Failures = append(j.Failures, JobFailure{Index: index, Kind: string(e.Kind), Message: truncate(e.Message, maxFailureMessage)})
		}
	case cached:
		j.Cached++
	default:
		if j.PerNode == nil {
			j.PerNode = make(map[string]int64)
		}
		j.PerNode[node]++
	}
}

// Bounds of what a client's report of an attached job may hold; Bound
// trims a report to them, so that no client can grow a node's job list,
// or the dashboards that show it, at will.
const (
	maxReportedNodes  = 1024 // PerNode entries
	maxReportedKinds  = 32   // FailedKinds entries
	maxReportedName   = 256  // bytes of a name: node, function, owner, kind
	maxReportedError  = 1024 // bytes of Error
	maxReportedFields = 64   // bytes of a kind or a state
)

// Bound trims a job's info, as a client reported it, to what a node
// keeps: at most MaxJobFailures failures of bounded messages, a few dozen
// kinds and a thousand nodes, names of at most 256 bytes.
func (j *JobInfo) Bound() {
	j.Function = truncate(j.Function, maxReportedName)
	j.Owner = truncate(j.Owner, maxReportedName)
	j.Error = truncate(j.Error, maxReportedError)
	j.State = truncate(j.State, maxReportedFields)
	j.PerNode = boundCounts(j.PerNode, maxReportedNodes, maxReportedName)
	j.FailedKinds = boundCounts(j.FailedKinds, maxReportedKinds, maxReportedFields)
	j.Failures = j.Failures[:min(len(j.Failures), MaxJobFailures)]
	for i := range j.Failures {
		j.Failures[i].Kind = truncate(j.Failures[i].Kind, maxReportedFields)
		j.Failures[i].Message = truncate(j.Failures[i].Message, maxFailureMessage)
	}
}

// boundCounts keeps at most n entries of counts (the largest), with keys
// of at most keyBytes.
func boundCounts(counts map[string]int64, n, keyBytes int) map[string]int64 {
	if len(counts) == 0 {
		return counts
	}
	keys := slices.Collect(maps.Keys(counts))
	sort.Slice(keys, func(a, b int) bool { return counts[keys[a]] > counts[keys[b]] })
	out := make(map[string]int64, min(len(keys), n))
	for _, k := range keys[:min(len(keys), n)] {
		out[truncate(k, keyBytes)] += counts[k]
	}
	return out
}

// truncate cuts s to at most n bytes, on a character boundary, marking the
// cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

// Clone returns a copy of the job's info that shares no map or slice
// with it.
func (j JobInfo) Clone() JobInfo {
	j.PerNode = maps.Clone(j.PerNode)
	j.FailedKinds = maps.Clone(j.FailedKinds)
	j.Failures = slices.Clone(j.Failures)
	return j
}

// Summary returns the job's info without what a listing leaves off: its
// Failures.
func (j JobInfo) Summary() JobInfo {
	j.Failures = nil
	return j.Clone()
}

// Ended reports whether the job will change no more.
func (j JobInfo) Ended() bool { return j.State != JobRunning }

// JobResult is one item's outcome, as shoal.job.results returns it.
type JobResult struct {
	Index    int64              `msgpack:"index"`
	Value    msgpack.RawMessage `msgpack:"value"`           // nil when Error is set
	Error    *JobError          `msgpack:"error,omitempty"` // the item's error
	Node     string             `msgpack:"node"`            // that computed it; "" when cached
	Attempts int                `msgpack:"attempts"`
	Cached   bool               `msgpack:"cached"`
}

// JobError is a failed item's error, as rpc.Error puts it on the wire.
type JobError struct {
	Kind    string `msgpack:"kind"`
	Message string `msgpack:"message"`
}

// JobResults is a page of a job's results, in input order.
type JobResults struct {
	Results []JobResult `msgpack:"results"`
	// Next is the index to read from next.
	Next int64 `msgpack:"next"`
	// End is true once Next is past the last result the job will have.
	End bool `msgpack:"end"`
}

// SubmitJob starts a job on the node at addr (shoal.job.submit) and
// returns its id.
func (s Stub) SubmitJob(ctx context.Context, addr string, spec JobSpec) (string, error) {
	var id string
	err := s.Caller.Call(ctx, addr, MethodJobSubmit, &id, &spec)
	return id, err
}

// AppendJob sends inputs, each an encoded argument array, to the job
// (shoal.job.append) and returns how many inputs the job has now.
func (s Stub) AppendJob(ctx context.Context, addr, id string, inputs []msgpack.RawMessage) (int64, error) {
	var n int64
	err := s.Caller.Call(ctx, addr, MethodJobAppend, &n, id, inputs)
	return n, err
}

// CloseJob ends the job's inputs (shoal.job.close) and returns their
// number.
func (s Stub) CloseJob(ctx context.Context, addr, id string) (int64, error) {
	var n int64
	err := s.Caller.Call(ctx, addr, MethodJobClose, &n, id)
	return n, err
}

// JobStatus returns the job's state (shoal.job.status).
func (s Stub) JobStatus(ctx context.Context, addr, id string) (JobInfo, error) {
	var info JobInfo
	err := s.Caller.Call(ctx, addr, MethodJobStatus, &info, id)
	return info, err
}

// JobResults reads up to max results from index from (shoal.job.results),
// waiting up to waitMs milliseconds for the first of them while the job
// runs.
func (s Stub) JobResults(ctx context.Context, addr, id string, from int64, max int, waitMs int64) (JobResults, error) {
	var page JobResults
	err := s.Caller.Call(ctx, addr, MethodJobResults, &page, id, from, max, waitMs)
	return page, err
}

// CancelJob cancels the job (shoal.job.cancel): its work stops on every
// node.
func (s Stub) CancelJob(ctx context.Context, addr, id string) (JobInfo, error) {
	var info JobInfo
	err := s.Caller.Call(ctx, addr, MethodJobCancel, &info, id)
	return info, err
}

// AttachJob registers a job the client runs (shoal.job.attach) and
// returns its id: info.ID when given (a job moving to another node),
// else a new one.
func (s Stub) AttachJob(ctx context.Context, addr string, info JobInfo) (string, error) {
	var id string
	err := s.Caller.Call(ctx, addr, MethodJobAttach, &id, &info)
	return id, err
}

// JobProgress reports an attached job's progress (shoal.job.progress).
func (s Stub) JobProgress(ctx context.Context, addr string, info JobInfo) (ProgressReply, error) {
	var reply ProgressReply
	err := s.Caller.Call(ctx, addr, MethodJobProgress, &reply, &info)
	return reply, err
}

// Jobs lists the jobs the node at addr coordinates (shoal.job.list).
func (s Stub) Jobs(ctx context.Context, addr string) ([]JobInfo, error) {
	var jobs []JobInfo
	err := s.Caller.Call(ctx, addr, MethodJobList, &jobs)
	return jobs, err
}

// GridJobs lists the jobs the members coordinate, asking each of them
// (shoal.job.list), oldest first. A job is its coordinator's to report;
// the others' reports count only for a coordinator that does not answer
// (a lost job's). The members that do not answer are named in the error,
// which comes with the jobs of the others.
func (s Stub) GridJobs(ctx context.Context, members []Member) ([]JobInfo, error) {
	type reported struct {
		JobInfo
		reporter string // the member that listed it
	}
	var (
		mu   sync.Mutex
		byID = make(map[string]reported)
		errs []error
		wg   sync.WaitGroup
	)
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jobs, err := s.Jobs(ctx, m.RPC)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", m.Name, m.RPC, err))
				return
			}
			for _, info := range jobs {
				if prev, ok := byID[info.ID]; !ok || (info.Coordinator == m.Name && prev.Coordinator != prev.reporter) {
					byID[info.ID] = reported{JobInfo: info, reporter: m.Name}
				}
			}
		}()
	}
	wg.Wait()
	all := make([]JobInfo, 0, len(byID))
	for _, r := range byID {
		all = append(all, r.JobInfo)
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].StartedMs != all[b].StartedMs {
			return all[a].StartedMs < all[b].StartedMs
		}
		return all[a].ID < all[b].ID
	})
	return all, errors.Join(errs...)
}
