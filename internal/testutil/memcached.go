package testutil

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/shoalgrid/shoal/internal/local"
)

// Memcached is a memcached process started for a test on 127.0.0.1.
type Memcached struct {
	*local.Memcached
	t testing.TB
}

// StartMemcached starts memcached on a free port (TCP only), with extra
// command-line args (for example "-I", "512k"), and stops it when the test
// ends. Without a memcached binary the test is skipped, unless
// SHOAL_REQUIRE_MEMCACHED=1 (as CI sets), when it fails.
func StartMemcached(t testing.TB, extra ...string) *Memcached {
	t.Helper()
	lm, err := local.NewMemcached(64, extra...)
	if errors.Is(err, local.ErrNoMemcached) {
		if os.Getenv("SHOAL_REQUIRE_MEMCACHED") == "1" {
			t.Fatal("memcached is not installed and SHOAL_REQUIRE_MEMCACHED=1: apt-get install -y memcached")
		}
		t.Skip("memcached is not installed; apt-get install -y memcached (scripts/test.sh does) to run this test")
	}
	if err != nil {
		t.Fatal(err)
	}
	m := &Memcached{Memcached: lm, t: t}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// Start (re)starts the process on the same port and waits until it accepts
// connections.
func (m *Memcached) Start() {
	m.t.Helper()
	if err := m.Memcached.Start(context.Background()); err != nil {
		m.t.Fatal(err)
	}
}
