package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// listJobs runs shoal jobs --json against seed.
func listJobs(t *testing.T, seed string) map[string]grid.JobInfo {
	t.Helper()
	out, stderr, code := runShoal(t, nil, "jobs", "--json", "--seed", seed)
	if code != 0 {
		t.Fatalf("shoal jobs exited %d: %s", code, stderr)
	}
	var list []grid.JobInfo
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("shoal jobs --json: %v\n%s", err, out)
	}
	jobs := make(map[string]grid.JobInfo)
	for _, j := range list {
		jobs[j.ID] = j
	}
	return jobs
}

// sleepInputs writes n lines of ms, the sleep function's argument.
func sleepInputs(t *testing.T, n, ms int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sleeps")
	if err := os.WriteFile(path, []byte(strings.Repeat(strconv.Itoa(ms)+"\n", n)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Jobs that belong to the grid, on one grid of three node processes: a
// detached job outlives its client and is read from another node; every
// node lists attached and detached jobs; another terminal cancels both
// kinds; a coordinator killed leaves its job lost, as every node lists it.
func TestGridJobs(t *testing.T) {
	a := startGridNode(t, "a", "")
	b := startGridNode(t, "b", a.Gossip)
	c := startGridNode(t, "c", a.Gossip)
	nodes := []*gridNode{a, b, c}
	for _, n := range nodes {
		awaitState(t, nodes, n.Name, grid.StateAlive, 10*time.Second)
	}

	t.Run("detached job outlives its client", func(t *testing.T) {
		const items = 100_000
		submit := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--detach", "--range", "0:"+strconv.Itoa(items), "square", "--seed", a.RPC)
		m := submit.WaitForLine(`job ([0-9a-f]+) runs on (\w+)`, processTimeout)
		syscall.Kill(submit.Pid(), syscall.SIGKILL) // it may have exited already
		id := m[1]
		_, stderr, code := testutil.Run(t, time.Minute, nil, testutil.ShoalBinary(t), "jobs", "wait", id, "--seed", c.RPC)
		if code != 0 || !strings.Contains(stderr, "done: items 100000, ok 100000, failed 0") {
			t.Fatalf("shoal jobs wait exited %d:\n%s", code, stderr)
		}
		out, stderr, code := testutil.Run(t, time.Minute, nil, testutil.ShoalBinary(t), "jobs", "results", id, "--seed", b.RPC)
		if code != 0 {
			t.Fatalf("shoal jobs results exited %d:\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != items {
			t.Fatalf("%d results for %d inputs", len(lines), items)
		}
		for i, l := range lines {
			if l != strconv.Itoa(i*i) {
				t.Fatalf("result %d is %q, want %d", i, l, i*i)
			}
		}
		info := listJobs(t, b.RPC)[id]
		if info.State != grid.JobDone || info.Mode != grid.JobDetached || info.Coordinator != m[2] || info.Done != items || info.Total != items {
			t.Errorf("listed as %+v", info)
		}
	})

	t.Run("attached and detached jobs listed and canceled from anywhere", func(t *testing.T) {
		sleeps := sleepInputs(t, 5000, 20)
		attached := testutil.Start(t, nil, testutil.ShoalBinary(t), "submit", "--input", sleeps, "--no-cache", "sleep", "--seed", a.RPC)
		out, stderr, code := runShoal(t, nil, "submit", "--detach", "--input", sleeps, "--no-cache", "sleep", "--seed", b.RPC)
		if code != 0 {
			t.Fatalf("submit --detach exited %d: %s", code, stderr)
		}
		detachedID := strings.TrimSpace(out)
		var attachedID string
		for _, n := range nodes {
			testutil.WaitFor(t, 10*time.Second, "both jobs listed through "+n.Name, func() bool {
				jobs := listJobs(t, n.RPC)
				attachedID = ""
				for id, j := range jobs {
					if j.Mode == grid.JobAttached && j.State == grid.JobRunning && j.Function == "sleep" {
						attachedID = id
					}
				}
				d := jobs[detachedID]
				return attachedID != "" && d.Mode == grid.JobDetached && d.State == grid.JobRunning
			})
		}
		for _, id := range []string{detachedID, attachedID} {
			out, stderr, code := runShoal(t, nil, "jobs", "cancel", id, "--seed", c.RPC)
			var info grid.JobInfo
			if code != 0 || json.Unmarshal([]byte(out), &info) != nil {
				t.Fatalf("shoal jobs cancel %s exited %d: %s%s", id, code, out, stderr)
			}
			if info.State != grid.JobCanceled || info.Done >= 5000 {
				t.Errorf("after cancel: %+v", info)
			}
		}
		if code := attached.Wait(processTimeout); code != 1 || !strings.Contains(attached.Stderr(), "canceled through the grid") {
			t.Errorf("the attached job's submit exited %d:\n%s", code, attached.Stderr())
		}
		// No work is left on any node.
		for _, n := range nodes {
			testutil.WaitFor(t, 10*time.Second, n.Name+" idle", func() bool {
				ms := members(t, n.RPC)
				return ms[n.Name].Running == 0 && ms[n.Name].Queued == 0
			})
		}
	})

	t.Run("a killed coordinator's job is lost on every node", func(t *testing.T) {
		// Submitted straight to c, so that c coordinates it.
		pool := rpc.NewPool(rpc.ClientConfig{})
		defer pool.Close()
		stub := grid.Stub{Caller: pool}
		ctx := context.Background()
		if _, err := stub.SubmitJob(ctx, c.RPC, grid.JobSpec{Function: "sleep", Range: []int64{20, 100000, 0}}); err == nil {
			t.Fatal("a range with step 0 was taken")
		}
		// sleep(ms) of 50, 51, ...: slow enough to be running at the kill.
		id, err := stub.SubmitJob(ctx, c.RPC, grid.JobSpec{Function: "sleep", Range: []int64{50, 100050}, NoCache: true, Owner: "test"})
		if err != nil {
			t.Fatal(err)
		}
		// Every node lists the jobs it has heard of by gossip too; a and b
		// must have heard of this one, with results, before c goes.
		for _, n := range []*gridNode{a, b} {
			testutil.WaitFor(t, 10*time.Second, n.Name+" to have heard of the job's results", func() bool {
				jobs, _ := stub.Jobs(ctx, n.RPC)
				for _, j := range jobs {
					if j.ID == id && j.Done > 0 {
						return true
					}
				}
				return false
			})
		}
		c.Signal(syscall.SIGKILL)
		killed := time.Now()
		for _, n := range []*gridNode{a, b} {
			testutil.WaitFor(t, 20*time.Second, n.Name+" to list the job lost", func() bool {
				return listJobsQuiet(testutil.ShoalBinary(t), n.RPC)[id].State == grid.JobLost
			})
		}
		info := listJobs(t, a.RPC)[id]
		t.Logf("the job was listed lost %v after its coordinator's kill: %+v", time.Since(killed).Round(10*time.Millisecond), info)
		if info.Coordinator != "c" || info.Done <= 0 || !strings.Contains(info.Error, "its coordinator c is dead") {
			t.Errorf("lost job listed as %+v", info)
		}
		_, stderr, code := runShoal(t, nil, "jobs", "wait", id, "--seed", a.RPC)
		if code != 1 || !strings.Contains(stderr, "lost") {
			t.Errorf("shoal jobs wait on a lost job exited %d:\n%s", code, stderr)
		}
	})
}

// listJobsQuiet is listJobs for a grid with a member just killed: shoal
// jobs then exits 1, naming the member that did not answer, after printing
// the jobs of the others.
func listJobsQuiet(bin, seed string) map[string]grid.JobInfo {
	out, _ := exec.Command(bin, "jobs", "--json", "--seed", seed).Output()
	var list []grid.JobInfo
	json.Unmarshal(out, &list)
	jobs := make(map[string]grid.JobInfo)
	for _, j := range list {
		jobs[j.ID] = j
	}
	return jobs
}
