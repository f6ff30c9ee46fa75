package node

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/dashboard"
	"github.com/shoalgrid/shoal/grid"
)

// dashboardSource is the node as its dashboard reads the grid: its own
// member view, every live member's shoal.stats and the grid-wide job list.
type dashboardSource Node

var _ dashboard.Source = (*dashboardSource)(nil)

// newDashboard makes the node's dashboard, served on its HTTP port.
func (n *Node) newDashboard() (*dashboard.Dashboard, error) {
	return dashboard.New(dashboard.Config{
		Source: (*dashboardSource)(n), Node: n.cfg.Name, Token: n.cfg.RPC.Token,
		CheckToken: n.srv.CheckToken,
		Hosts:      n.ownNames(),
	})
}

// ownNames are the names this node may be reached by: its --advertise
// host, the machine's host name and its fully qualified form.
func (n *Node) ownNames() []string {
	var names []string
	if n.cfg.Advertise != "" {
		names = append(names, n.cfg.Advertise)
	}
	if host, err := os.Hostname(); err == nil {
		names = append(names, host)
		if short, _, ok := strings.Cut(host, "."); ok {
			names = append(names, short)
		}
	}
	return names
}

// recordLoad adds the members' load to the dashboard's history once a
// second until the node stops.
func (n *Node) recordLoad() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n.dash.RecordLoad(time.Now(), n.Members())
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Read implements dashboard.Source.
func (s *dashboardSource) Read(ctx context.Context) dashboard.Reading {
	n := (*Node)(s)
	r := dashboard.Reading{Members: n.Members(), Stats: map[string]grid.NodeStats{}}
	var live []grid.Member
	for _, m := range r.Members {
		if !m.Gone() {
			live = append(live, m)
		}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, m := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st grid.NodeStats
			var err error
			if m.Name == n.cfg.Name {
				st = n.stats()
			} else {
				st, err = n.stub.Stats(ctx, m.RPC)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("%s (%s) did not report its counters: %v", m.Name, m.RPC, err))
				return
			}
			r.Stats[m.Name] = st
		}()
	}
	jobs, err := n.stub.GridJobs(ctx, live)
	wg.Wait()
	r.Jobs = jobs
	if err != nil {
		r.Problems = append(r.Problems, "the job list is incomplete: "+err.Error())
	}
	return r
}

// find returns a job of the grid-wide list and the RPC address of its
// coordinator, "" when the coordinator cannot answer (the job is lost).
func (s *dashboardSource) find(ctx context.Context, id string) (grid.JobInfo, string, error) {
	n := (*Node)(s)
	var live []grid.Member
	for _, m := range n.Members() {
		if !m.Gone() {
			live = append(live, m)
		}
	}
	jobs, err := n.stub.GridJobs(ctx, live)
	for _, info := range jobs {
		if info.ID != id {
			continue
		}
		addr, ok := n.rpcAddrOf(info.Coordinator)
		if info.State == grid.JobLost || !ok {
			return info, "", nil
		}
		return info, addr, nil
	}
	if err != nil {
		return grid.JobInfo{}, "", fmt.Errorf("job %s not found; some members did not answer: %w", id, err)
	}
	return grid.JobInfo{}, "", fmt.Errorf("%w: %s", dashboard.ErrNoJob, id)
}

// JobStatus implements dashboard.Source.
func (s *dashboardSource) JobStatus(ctx context.Context, id string) (grid.JobInfo, error) {
	n := (*Node)(s)
	if job, err := n.jobs.get(id); err == nil {
		return job.snapshot(), nil
	}
	info, addr, err := s.find(ctx, id)
	if err != nil || addr == "" {
		return info, err
	}
	return n.stub.JobStatus(ctx, addr, id)
}

// CancelJob implements dashboard.Source.
func (s *dashboardSource) CancelJob(ctx context.Context, id string) (grid.JobInfo, error) {
	n := (*Node)(s)
	if _, err := n.jobs.get(id); err == nil {
		return n.cancelJob(ctx, id)
	}
	info, addr, err := s.find(ctx, id)
	if err != nil || addr == "" {
		return info, err // a lost job runs nowhere to be canceled
	}
	return n.stub.CancelJob(ctx, addr, id)
}
