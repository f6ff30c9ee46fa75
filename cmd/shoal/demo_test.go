package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
