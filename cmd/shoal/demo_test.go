package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// TestDemoRunsTwiceSecondFromCache runs the README's first command, small,
// with memcached on the PATH and without it (the nodes' grid cache).
func TestDemoRunsTwiceSecondFromCache(t *testing.T) {
	withMemcached := true
	if _, err := exec.LookPath("memcached"); err != nil {
		if os.Getenv("SHOAL_REQUIRE_MEMCACHED") == "1" {
			t.Fatal("memcached is not installed and SHOAL_REQUIRE_MEMCACHED=1")
		}
		withMemcached = false
	}
	cases := []struct {
		name  string
		env   []string
		cache string
	}{
		{"memcached", nil, "cache: memcached on 127.0.0.1:"},
		{"grid-cache", []string{"PATH=" + t.TempDir()}, "cache: the grid cache, in the nodes' memory (local: memcached is not on the PATH"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env == nil && !withMemcached {
				t.Skip("memcached is not installed")
			}
			stdout, stderr, code := runShoal(t, tc.env, "demo", "--nodes", "2", "--items", "300", "--rounds", "5")
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
			}
			for _, want := range []string{
				tc.cache,
				"run 1 (computed): items 300, ok 300, failed 0, cached 0,",
				"run 2 (from the cache): items 300, ok 300, failed 0, cached 300,",
			} {
				if !strings.Contains(stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, stdout)
				}
			}
			if strings.Contains(stdout, "note:") {
				t.Errorf("some results did not reach the cache:\n%s", stdout)
			}
		})
	}
}

// TestDemoKeepServesTheDashboardUntilInterrupted runs `shoal demo --keep`:
// the grid stays up, its first node's dashboard lists the watch jobs with
// their timeouts, and Ctrl-C stops everything with exit status 0.
func TestDemoKeepServesTheDashboardUntilInterrupted(t *testing.T) {
	p := testutil.Start(t, nil, testutil.ShoalBinary(t), "demo", "--keep", "--nodes", "2", "--items", "100", "--rounds", "2",
		"--rpc", "127.0.0.1:0", "--http", "127.0.0.1:0")
	dashboardLine := regexp.MustCompile(`(?m)^dashboard: http://(127\.0\.0\.1:\d+)/$`)
	var addr string
	testutil.WaitFor(t, processTimeout, "the dashboard's address", func() bool {
		m := dashboardLine.FindStringSubmatch(p.Stdout())
		if m != nil {
			addr = m[1]
		}
		return m != nil && strings.Contains(p.Stdout(), "the grid stays up")
	})
	testutil.WaitFor(t, 2*processTimeout, "a watch job listed with its timeouts", func() bool {
		resp, err := http.Get("http://" + addr + "/dashboard/api/snapshot")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s struct {
			Members []struct{ State string }
			Jobs    []struct {
				Function    string
				FailedKinds map[string]int64 `json:"failed_kinds"`
			}
		}
		if json.NewDecoder(resp.Body).Decode(&s) != nil || len(s.Members) != 2 {
			return false
		}
		for _, j := range s.Jobs {
			if j.Function == "sleep" && j.FailedKinds["Timeout"] > 0 {
				return true
			}
		}
		return false
	})
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "/dashboard/static/app.js") {
		t.Fatalf("the dashboard's page: %s\n%s", resp.Status, page)
	}
	p.Signal(syscall.SIGINT)
	if code := p.Wait(processTimeout); code != 0 {
		t.Fatalf("demo --keep exited %d after Ctrl-C\n%s\n%s", code, p.Stdout(), p.Stderr())
	}
	if !strings.Contains(p.Stdout(), "stopped") {
		t.Errorf("the demo did not say it stopped:\n%s", p.Stdout())
	}
}
