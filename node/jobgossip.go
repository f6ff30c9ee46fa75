package node

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
)

// Every node tells the grid, by gossip, of the jobs it coordinates or has
// attached: when one starts, as it progresses, when it ends. The others
// keep what they last heard, so that when a coordinator dies or leaves,
// every live node lists its running jobs as lost, with the results they
// had, instead of nobody listing them at all.

// msgJob starts a gossiped job message; the rest is a grid.JobInfo.
const msgJob byte = 'j'

// heardJob is a job another node coordinates, as last gossiped.
type heardJob struct {
	info  grid.JobInfo
	heard time.Time
}

// jobBroadcast is one job's latest state on its way through gossip; a
// newer one of the same job replaces it.
type jobBroadcast struct {
	id  string
	msg []byte
}

func (b *jobBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(*jobBroadcast)
	return ok && o.id == b.id
}
func (b *jobBroadcast) Message() []byte { return b.msg }
func (b *jobBroadcast) Finished()       {}

// announce gossips the jobs whose state or count changed since last
// announced.
func (j *jobs) announce() {
	if j.queue == nil {
		return
	}
	j.mu.Lock()
	var changed []grid.JobInfo
	for _, job := range j.byID {
		info := job.snapshot()
		key := fmt.Sprintf("%s %d %d", info.State, info.Done, info.Total)
		if job.announced != key {
			job.announced = key
			changed = append(changed, info)
		}
	}
	j.mu.Unlock()
	for _, info := range changed {
		// The rest could outgrow a gossip packet.
		info.PerNode, info.Failures = nil, nil
		b, err := msgpack.Marshal(&info)
		if err != nil {
			continue
		}
		j.queue.QueueBroadcast(&jobBroadcast{id: info.ID, msg: append([]byte{msgJob}, b...)})
	}
}

// heard records a job another node gossiped.
func (j *jobs) heard(msg []byte) {
	var info grid.JobInfo
	if err := msgpack.Unmarshal(msg, &info); err != nil || info.ID == "" || info.Coordinator == j.n.cfg.Name {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if own := j.byID[info.ID]; own != nil {
		return // an attached job that moved here from that node
	}
	j.heardJobs[info.ID] = &heardJob{info: info, heard: time.Now()}
}

// coordinatorGone marks lost the running jobs of a member that died or
// left: nobody will finish them, and their results on it are gone.
func (j *jobs) coordinatorGone(name, state string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, h := range j.heardJobs {
		if h.info.Coordinator == name && h.info.State == grid.JobRunning {
			h.info.State, h.info.EndedMs = grid.JobLost, time.Now().UnixMilli()
			h.info.Error = fmt.Sprintf("its coordinator %s is %s; %d results had been reported", name, state, h.info.Done)
			j.n.log.Warn("job lost with its coordinator", "job", h.info.ID, "coordinator", name, "done", h.info.Done)
		}
	}
}

// heardList returns the jobs of other nodes as last heard, and those of
// gone coordinators as lost: clients listing the grid's jobs prefer what a
// job's coordinator says, and take these where it cannot say.
func (j *jobs) heardList() []grid.JobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]grid.JobInfo, 0, len(j.heardJobs))
	for _, h := range j.heardJobs {
		out = append(out, h.info)
	}
	return out
}

// forgetHeard drops the jobs heard of that ended longer than the
// retention time ago, or that nobody has mentioned for that long.
func (j *jobs) forgetHeard(now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, h := range j.heardJobs {
		since := h.heard
		if h.info.EndedMs != 0 {
			since = time.UnixMilli(h.info.EndedMs)
		}
		if now.Sub(since) > j.retention {
			delete(j.heardJobs, id)
		}
	}
}
