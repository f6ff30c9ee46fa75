package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/shoalgrid/shoal/internal/breaker"
	"github.com/shoalgrid/shoal/internal/testutil"
)

var ctx = context.Background()

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startServers(t *testing.T, n int) ([]*testutil.Memcached, []string) {
	t.Helper()
	var procs []*testutil.Memcached
	var addrs []string
	for i := 0; i < n; i++ {
		m := testutil.StartMemcached(t)
		procs = append(procs, m)
		addrs = append(addrs, m.Addr)
	}
	return procs, addrs
}

func newMemcached(t *testing.T, cfg MemcachedConfig) *Memcached {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	m, err := NewMemcached(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func items(n int, prefix string) ([]Item, []string) {
	var its []Item
	var keys []string
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		its = append(its, Item{Key: k, Value: []byte("value of " + k)})
		keys = append(keys, k)
	}
	return its, keys
}

func TestKeyIsDeterministicAndValid(t *testing.T) {
	k1, err := Key("square", "1", 7)
	if err != nil {
		t.Fatal(err)
	}
	same := []struct {
		name string
		a, b []any
	}{
		{"int types", []any{7}, []any{int64(7)}},
		{"uint8", []any{7}, []any{uint8(7)}},
		{"map order", []any{map[string]any{"a": 1, "b": []any{1, 2}}}, []any{map[string]any{"b": []any{1, 2}, "a": 1}}},
		{"nested maps", []any{map[string]any{"x": map[string]int{"p": 1, "q": 2}}}, []any{map[string]any{"x": map[string]int{"q": 2, "p": 1}}}},
		{"struct and map", []any{struct {
			A int
			B string
		}{1, "x"}}, []any{map[string]any{"B": "x", "A": 1}}},
	}
	for _, tc := range same {
		a, _ := Key("f", "1", tc.a...)
		b, _ := Key("f", "1", tc.b...)
		if a != b {
			t.Errorf("%s: keys differ", tc.name)
		}
	}
	different := []struct {
		name   string
		fn, v  string
		args   []any
		versus []any
	}{
		{"value", "square", "1", []any{7}, []any{8}},
		{"float vs int", "square", "1", []any{7}, []any{7.0}},
		{"string vs bytes", "echo", "1", []any{"x"}, []any{[]byte("x")}},
		{"arity", "add", "1", []any{1, 2}, []any{[]any{1, 2}}},
	}
	for _, tc := range different {
		a, _ := Key(tc.fn, tc.v, tc.args...)
		b, _ := Key(tc.fn, tc.v, tc.versus...)
		if a == b {
			t.Errorf("%s: keys are equal", tc.name)
		}
	}
	if k2, _ := Key("square", "2", 7); k2 == k1 {
		t.Error("version does not change the key")
	}
	if k3, _ := Key("Square", "1", 7); k3 == k1 {
		t.Error("function name case does not change the key")
	}
	for _, name := range []string{"square", "has space", "tab\tand\nnewline", strings.Repeat("long", 200), "ünïcödé", ""} {
		k, err := Key(name, "v", "x")
		if err != nil {
			t.Fatal(err)
		}
		if !legalKey(k) {
			t.Errorf("key %q for function %q is not a legal memcached key", k, name)
		}
	}
	if _, err := Key("f", "1", make(chan int)); err == nil {
		t.Error("unencodable argument accepted")
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMemoryConcurrentUse(t *testing.T) {
	m := NewMemory(1<<20, 0)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			its, keys := items(200, fmt.Sprintf("g%d", g))
			m.SetMulti(ctx, its)
			if got := m.GetMulti(ctx, keys); len(got) != len(keys) {
				t.Errorf("goroutine %d found %d of %d", g, len(got), len(keys))
			}
		}(g)
	}
	wg.Wait()
}

func TestMemcachedRoundTripThroughThreeServers(t *testing.T) {
	procs, addrs := startServers(t, 3)
	c := newMemcached(t, MemcachedConfig{Servers: addrs})
	its, keys := items(300, "rt")
	c.SetMulti(ctx, its)
	got := c.GetMulti(ctx, append(keys, "absent"))
	if len(got) != 300 {
		t.Fatalf("found %d of 300", len(got))
	}
	for _, it := range its {
		if !bytes.Equal(got[it.Key], it.Value) {
			t.Fatalf("%s = %q", it.Key, got[it.Key])
		}
	}
	st := c.Stats()
	if st.Hits != 300 || st.Misses != 1 || st.Stored != 300 || st.Errors != 0 || len(st.Servers) != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Each server holds the keys ketama gives it, as any libmemcached
	// client configured for weighted ketama would look for them.
	for _, p := range procs {
		direct := memcache.New(p.Addr)
		var mine []string
		for _, k := range keys {
			if a, _ := c.sel.PickServer(k); a.String() == p.Addr {
				mine = append(mine, k)
			}
		}
		found, err := direct.GetMulti(mine)
		if err != nil || len(found) != len(mine) || len(mine) < 50 {
			t.Fatalf("%s holds %d of its %d keys: %v", p.Addr, len(found), len(mine), err)
		}
		// Values carry the format header.
		for _, it := range found {
			if _, ok := unwrap(it.Value); !ok {
				t.Fatalf("%s: value without the format header", it.Key)
			}
		}
	}
}

func TestUnknownFormatIsAMiss(t *testing.T) {
	p := testutil.StartMemcached(t)
	c := newMemcached(t, MemcachedConfig{Servers: []string{p.Addr}})
	raw := memcache.New(p.Addr)
	if err := raw.Set(&memcache.Item{Key: "old", Value: []byte{0xC5, 0x00, 'x'}}); err != nil {
		t.Fatal(err)
	}
	if got := c.GetMulti(ctx, []string{"old"}); len(got) != 0 {
		t.Fatalf("a value in another format was read: %v", got)
	}
}

func TestKeyMovementWithRealServers(t *testing.T) {
	_, addrs := startServers(t, 5)
	c := newMemcached(t, MemcachedConfig{Servers: addrs[:4]})
	its, keys := items(2000, "mv")
	c.SetMulti(ctx, its)
	// With a fifth server, the keys it now owns miss; the rest still hit.
	if err := c.SetServers(addrs...); err != nil {
		t.Fatal(err)
	}
	found := len(c.GetMulti(ctx, keys))
	lost := 2000 - found
	t.Logf("adding a fifth server: %d of 2000 keys (%.1f%%) moved", lost, float64(lost)/20)
	if lost < 300 || lost > 500 {
		t.Fatalf("%d keys moved, want about 400", lost)
	}
	// Removing it again brings every key back to where it was stored.
	if err := c.SetServers(addrs[:4]...); err != nil {
		t.Fatal(err)
	}
	if got := len(c.GetMulti(ctx, keys)); got != 2000 {
		t.Fatalf("after removing the fifth server found %d of 2000", got)
	}
}

func TestOversizedValues(t *testing.T) {
	p := testutil.StartMemcached(t)
	small := testutil.StartMemcached(t, "-I", "512k")
	c := newMemcached(t, MemcachedConfig{Servers: []string{p.Addr}})
	c.SetMulti(ctx, []Item{{Key: "big", Value: make([]byte, 2<<20)}, {Key: "ok", Value: []byte("fine")}})
	if st := c.Stats(); st.TooLarge != 1 || st.Stored != 1 || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A server with a smaller limit than configured refuses; that is
	// counted as too large, not as a failing server.
	s := newMemcached(t, MemcachedConfig{Servers: []string{small.Addr}})
	for i := 0; i < 5; i++ {
		s.SetMulti(ctx, []Item{{Key: fmt.Sprintf("big%d", i), Value: make([]byte, 700<<10)}})
	}
	st := s.Stats()
	if st.TooLarge != 5 || st.Errors != 0 || st.Servers[0].Breaker != string(breaker.Closed) {
		t.Fatalf("stats %+v", st)
	}
	if got := s.GetMulti(ctx, []string{"big0"}); len(got) != 0 {
		t.Fatal("refused value found")
	}
}

func TestServerKilledMidRun(t *testing.T) {
	procs, addrs := startServers(t, 3)
	c := newMemcached(t, MemcachedConfig{Servers: addrs, BreakerThreshold: 2, BreakerCooldown: 200 * time.Millisecond})
	its, keys := items(600, "kill")
	c.SetMulti(ctx, its)
	victim := procs[1]
	var onVictim int
	for _, k := range keys {
		if a, _ := c.sel.PickServer(k); a.String() == victim.Addr {
			onVictim++
		}
	}
	victim.Stop()

	// Callers keep working: the dead server's keys are misses.
	for i := 0; i < 3; i++ {
		start := time.Now()
		got := c.GetMulti(ctx, keys)
		if len(got) != 600-onVictim {
			t.Fatalf("round %d found %d, want %d", i, len(got), 600-onVictim)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("a lookup with a dead server took %v", d)
		}
	}
	st := c.Stats()
	if st.Errors == 0 || breakerOf(st, victim.Addr) != string(breaker.Open) {
		t.Fatalf("breaker did not open: %+v", st)
	}
	errorsWhenOpen := st.Errors
	c.GetMulti(ctx, keys)
	if c.Stats().Errors != errorsWhenOpen {
		t.Fatal("an open breaker still sent requests")
	}

	// The server comes back (empty); after the cooldown a probe closes the
	// breaker and its keys can be stored and found again.
	victim.Start()
	testutil.WaitFor(t, 10*time.Second, "the breaker to close", func() bool {
		c.GetMulti(ctx, keys[:50])
		return breakerOf(c.Stats(), victim.Addr) == string(breaker.Closed)
	})
	c.SetMulti(ctx, its)
	if got := c.GetMulti(ctx, keys); len(got) != 600 {
		t.Fatalf("after recovery found %d of 600", len(got))
	}
}

func breakerOf(st Stats, addr string) string {
	for _, s := range st.Servers {
		if s.Addr == addr {
			return s.Breaker
		}
	}
	return ""
}

func TestMemcachedConcurrentUse(t *testing.T) {
	_, addrs := startServers(t, 3)
	c := newMemcached(t, MemcachedConfig{Servers: addrs})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			its, keys := items(100, fmt.Sprintf("conc%d", g))
			for round := 0; round < 5; round++ {
				c.SetMulti(ctx, its)
				if got := c.GetMulti(ctx, keys); len(got) != len(keys) {
					t.Errorf("goroutine %d round %d found %d of %d; stats %+v", g, round, len(got), len(keys), c.Stats())
					return
				}
				if g == 0 && round == 2 {
					c.SetServers(addrs...) // a rebuild with the same list while others read
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestIllegalKeysAreMisses(t *testing.T) {
	p := testutil.StartMemcached(t)
	c := newMemcached(t, MemcachedConfig{Servers: []string{p.Addr}})
	c.SetMulti(ctx, []Item{{Key: "good", Value: []byte("v")}})
	got := c.GetMulti(ctx, []string{"good", "has space", strings.Repeat("k", 300)})
	if len(got) != 1 || c.Stats().Misses != 2 {
		t.Fatalf("got %v, stats %+v", keysOf(got), c.Stats())
	}
}

// A memcached server that is killed and restarted on the same port is used
// again within one breaker cooldown of coming back: the probe must not go
// out on one of the connections pooled before the kill, which the restart
// left dead.
func TestRestartedServerBackWithinOneProbe(t *testing.T) {
	p := testutil.StartMemcached(t)
	const cooldown = time.Second
	c := newMemcached(t, MemcachedConfig{Servers: []string{p.Addr}, BreakerThreshold: 2, BreakerCooldown: cooldown})
	its, keys := items(20, "restart")
	c.SetMulti(ctx, its)
	// Lookups in parallel leave several idle connections in the pool.
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 20; round++ {
				c.GetMulti(ctx, keys)
			}
		}()
	}
	wg.Wait()

	p.Stop()
	testutil.WaitFor(t, 10*time.Second, "the breaker to open", func() bool {
		c.GetMulti(ctx, keys[:1])
		return breakerOf(c.Stats(), p.Addr) == string(breaker.Open)
	})
	p.Start()
	restarted := time.Now()
	probe := []Item{{Key: "after-restart", Value: []byte("stored after the restart")}}
	deadline := restarted.Add(30 * time.Second)
	for {
		c.SetMulti(ctx, probe)
		if got := c.GetMulti(ctx, []string{"after-restart"}); bytes.Equal(got["after-restart"], probe[0].Value) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted server was not used again within %v; stats %+v", time.Since(restarted), c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	back := time.Since(restarted)
	t.Logf("restarted server used again %v after the restart (breaker cooldown %v)", back, cooldown)
	if back > 3*cooldown {
		t.Fatalf("the restarted server took %v to come back, more than three cooldowns of %v", back, cooldown)
	}
}
