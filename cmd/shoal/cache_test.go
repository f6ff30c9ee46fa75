package main

import (
	"encoding/json"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// TestCacheCommandShowsEachShare runs shoal cache and shoal members against
// two node processes: both list each member's share of the grid cache, the
// shares add up to the whole key space, the entries add up to the results
// a cached job stored, and a member that does not answer makes shoal cache
// say so and exit 1.
func TestCacheCommandShowsEachShare(t *testing.T) {
	t.Parallel()
	// LAN timing: a frozen member stays listed alive for seconds, long
	// enough for shoal cache to ask it (fast timing declares it dead in
	// half a second, and shoal cache asks only live members).
	a := startGridNode(t, "cache-a", "", "--gossip-timing", "lan")
	b := startGridNode(t, "cache-b", a.Gossip, "--gossip-timing", "lan")
	testutil.WaitFor(t, 20*time.Second, "both nodes to see each other", func() bool {
		return len(members(t, a.RPC)) == 2 && len(members(t, b.RPC)) == 2
	})
	if _, stderr, code := runShoal(t, nil, "submit", "--seed", a.RPC, "--range", "0:3000", "square"); code != 0 {
		t.Fatalf("submit: exit %d: %s", code, stderr)
	}
	var rows []cacheRow
	testutil.WaitFor(t, 20*time.Second, "the 3000 results to reach their owners", func() bool {
		stdout, _, code := runShoal(t, nil, "cache", "--seed", a.RPC, "--json")
		rows = nil
		if code != 0 || json.Unmarshal([]byte(stdout), &rows) != nil || len(rows) != 2 {
			return false
		}
		return rows[0].Entries+rows[1].Entries == 3000
	})
	share := 0.0
	for _, r := range rows {
		if r.Kind != "grid" || r.Share < 0.2 || r.Capacity != 64<<20 || r.Bytes <= 0 || r.Entries == 0 || r.Error != "" {
			t.Errorf("row %+v", r)
		}
		share += r.Share
	}
	if math.Abs(share-1) > 1e-9 {
		t.Errorf("the shares add up to %v", share)
	}

	stdout, stderr, code := runShoal(t, nil, "members", "--seed", a.RPC)
	if code != 0 || !strings.Contains(stdout, "CACHE") || strings.Count(stdout, "%") != 2 {
		t.Fatalf("members: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = runShoal(t, nil, "cache", "--seed", a.RPC)
	if code != 0 || !strings.Contains(stdout, "cache-a  grid") || !strings.Contains(stdout, "of 64.0 MiB") {
		t.Fatalf("cache: exit %d\n%s%s", code, stdout, stderr)
	}

	b.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { b.Signal(syscall.SIGCONT) })
	stdout, stderr, code = runShoal(t, nil, "cache", "--seed", a.RPC)
	if code != 1 || !strings.Contains(stdout, "cache-b  (no answer:") || !strings.Contains(stderr, "1 of 2 members did not answer") {
		t.Fatalf("cache with one member frozen: exit %d\n%s%s", code, stdout, stderr)
	}
}
