package cache

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// localPeers is an in-process transport between Peers caches, beside the
// node tests that run the grid cache over real processes: it lets these
// tests count exactly what went where, and fail or stall one peer.
type localPeers struct {
	mu     sync.Mutex
	held   map[string]*Memory
	down   map[string]bool
	stall  map[string]bool
	asked  map[string]int // requests per peer
	served atomic.Int64
}

func newLocalPeers(names ...string) *localPeers {
	lp := &localPeers{held: map[string]*Memory{}, down: map[string]bool{}, stall: map[string]bool{}, asked: map[string]int{}}
	for _, n := range names {
		lp.held[n] = NewMemory(8<<20, 0)
	}
	return lp
}

func (lp *localPeers) peer(ctx context.Context, name string) (*Memory, error) {
	lp.mu.Lock()
	m, down, stall := lp.held[name], lp.down[name], lp.stall[name]
	lp.asked[name]++
	lp.mu.Unlock()
	if stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if m == nil || down {
		return nil, fmt.Errorf("peer %s is down", name)
	}
	return m, nil
}

func (lp *localPeers) GetFrom(ctx context.Context, peer string, keys []string) ([][]byte, error) {
	m, err := lp.peer(ctx, peer)
	if err != nil {
		return nil, err
	}
	found := m.GetMulti(ctx, keys)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = found[k]
	}
	lp.served.Add(1)
	return out, nil
}

func (lp *localPeers) SetOn(ctx context.Context, peer string, items []Item) error {
	m, err := lp.peer(ctx, peer)
	if err != nil {
		return err
	}
	m.SetMulti(ctx, items)
	return nil
}

func (lp *localPeers) requests(name string) int {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.asked[name]
}

// member returns the Peers cache of the peer called self, holding its keys
// in lp's memory for it.
func (lp *localPeers) member(self string, peers ...string) *Peers {
	p := NewPeers(PeersConfig{Local: lp.held[self], Transport: lp, Timeout: 200 * time.Millisecond, BreakerCooldown: time.Hour})
	p.SetPeers(self, peers...)
	return p
}

func testItems(n int, prefix string) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Key: fmt.Sprintf("%s-%d", prefix, i), Value: []byte(fmt.Sprintf("value of %d", i))}
	}
	return items
}

func itemKeys(items []Item) []string {
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	return keys
}

func TestPeersStoreEachKeyOnItsOwnerOnly(t *testing.T) {
	names := []string{"a", "b", "c"}
	lp := newLocalPeers(names...)
	writer := lp.member("a", names...)
	items := testItems(3000, "k")
	writer.SetMulti(context.Background(), append([]Item(nil), items...))

	client := lp.member("", "c", "b", "a") // any order names the same ring
	total := 0
	for _, name := range names {
		entries, _ := lp.held[name].Len()
		total += entries
		if share := float64(entries) / float64(len(items)); share < 0.2 || share > 0.47 {
			t.Errorf("%s holds %d of %d keys", name, entries, len(items))
		}
	}
	if total != len(items) {
		t.Fatalf("%d entries held in all for %d keys: each key must live on one peer", total, len(items))
	}
	for _, it := range items[:200] {
		owner := client.Owner(it.Key)
		if got := lp.held[owner].GetMulti(context.Background(), []string{it.Key}); string(got[it.Key]) != string(it.Value) {
			t.Fatalf("%s: owner %s holds %q", it.Key, owner, got[it.Key])
		}
	}
	got := client.GetMulti(context.Background(), itemKeys(items))
	if len(got) != len(items) {
		t.Fatalf("found %d of %d", len(got), len(items))
	}
	for _, it := range items {
		if string(got[it.Key]) != string(it.Value) {
			t.Fatalf("%s: %q, want %q", it.Key, got[it.Key], it.Value)
		}
	}
	if st := client.Stats(); st.Hits != uint64(len(items)) || st.Misses != 0 {
		t.Fatalf("client stats %+v", st)
	}
	if st := writer.Stats(); st.Sent+lp.held["a"].Stats().Stored != uint64(len(items)) {
		t.Fatalf("writer sent %d and stored %d of %d", st.Sent, lp.held["a"].Stats().Stored, len(items))
	}
}

func TestPeersStoreOwnedKeepsTheOthersForLater(t *testing.T) {
	names := []string{"a", "b"}
	lp := newLocalPeers(names...)
	p := lp.member("a", names...)
	items := testItems(1000, "s")
	others := p.StoreOwned(context.Background(), append([]Item(nil), items...))
	mine, _ := lp.held["a"].Len()
	if mine+len(others) != len(items) || mine == 0 || len(others) == 0 {
		t.Fatalf("stored %d here, %d left of %d", mine, len(others), len(items))
	}
	for _, it := range others {
		if p.Owner(it.Key) != "b" {
			t.Fatalf("%s left for later but owned by %s", it.Key, p.Owner(it.Key))
		}
	}
	if n, _ := lp.held["b"].Len(); n != 0 || lp.requests("b") != 0 {
		t.Fatalf("StoreOwned reached b: %d entries, %d requests", n, lp.requests("b"))
	}
}

func TestPeersMoveAboutOneNthOfTheKeys(t *testing.T) {
	keys := itemKeys(testItems(20000, "m"))
	owners := func(names ...string) map[string]string {
		p := NewPeers(PeersConfig{Transport: newLocalPeers()})
		p.SetPeers("", names...)
		out := make(map[string]string, len(keys))
		for _, k := range keys {
			out[k] = p.Owner(k)
		}
		return out
	}
	three := owners("n1", "n2", "n3")
	four := owners("n1", "n2", "n3", "n4")
	two := owners("n1", "n3")
	moved := func(a, b map[string]string, to string) (n int) {
		for k := range a {
			if a[k] != b[k] {
				n++
				if to != "" && b[k] != to {
					t.Fatalf("%s moved from %s to %s, not to the new peer %s", k, a[k], b[k], to)
				}
			}
		}
		return n
	}
	if f := float64(moved(three, four, "n4")) / float64(len(keys)); math.Abs(f-0.25) > 0.07 {
		t.Errorf("a fourth peer joining moved %.3f of the keys, want about 1/4", f)
	}
	if f := float64(moved(three, two, "")) / float64(len(keys)); math.Abs(f-1.0/3) > 0.08 {
		t.Errorf("one of three leaving moved %.3f of the keys, want about 1/3", f)
	}
	for k := range three {
		if three[k] != "n2" && two[k] != three[k] {
			t.Fatalf("%s moved from %s to %s though its owner stayed", k, three[k], two[k])
		}
	}
	p := NewPeers(PeersConfig{Transport: newLocalPeers()})
	p.SetPeers("", "n1", "n2", "n3")
	sum := 0.0
	for name, s := range p.Shares() {
		if s < 0.2 || s > 0.47 {
			t.Errorf("%s owns %.3f of the key space", name, s)
		}
		sum += s
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Fatalf("shares add up to %v", sum)
	}
}

func TestPeersDeadOrSlowOwnerIsAMiss(t *testing.T) {
	names := []string{"a", "b", "c"}
	lp := newLocalPeers(names...)
	items := testItems(600, "d")
	lp.member("a", names...).SetMulti(context.Background(), append([]Item(nil), items...))
	client := lp.member("", names...)
	lp.mu.Lock()
	lp.down["b"] = true
	lp.stall["c"] = true
	lp.mu.Unlock()

	for round := 0; round < 4; round++ {
		got := client.GetMulti(context.Background(), itemKeys(items))
		for _, it := range items {
			v, ok := got[it.Key]
			if owner := client.Owner(it.Key); ok != (owner == "a") {
				t.Fatalf("round %d: %s (owner %s) found=%v", round, it.Key, owner, ok)
			}
			if ok && string(v) != string(it.Value) {
				t.Fatalf("%s: %q", it.Key, v)
			}
		}
	}
	// Three failures in a row open each breaker: the fourth round asks
	// neither.
	// A store now sends nothing to them either, and counts what it did
	// not send.
	client.SetMulti(context.Background(), testItems(300, "later"))
	if st := client.Stats(); st.Unsent == 0 || st.Unsent+st.Sent != 300 {
		t.Fatalf("300 sent with two owners out: %+v", st)
	}
	if b, c := lp.requests("b"), lp.requests("c"); b != 3+1 || c != 3+1 { // +1: the SetMulti that filled them
		t.Fatalf("requests after the breakers opened: b %d, c %d", b, c)
	}
	st := client.Stats()
	states := map[string]string{}
	for _, s := range st.Servers {
		states[s.Addr] = s.Breaker
	}
	if states["a"] != "closed" || states["b"] != "open" || states["c"] != "open" || st.Errors != 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPeersCallerGivingUpSaysNothingOfThePeer(t *testing.T) {
	lp := newLocalPeers("a")
	lp.stall["a"] = true
	client := lp.member("", "a")
	for i := 1; i <= 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for lp.requests("a") < i { // cancel once the request is out
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		client.GetMulti(ctx, []string{"x"})
	}
	if st := client.Stats(); st.Errors != 0 || st.Servers[0].Breaker != "closed" {
		t.Fatalf("canceled lookups counted against the peer: %+v", st)
	}
}

func TestPeersWithNoPeersMissAndStoreNothing(t *testing.T) {
	p := NewPeers(PeersConfig{Transport: newLocalPeers()})
	if got := p.GetMulti(context.Background(), []string{"a", "b"}); len(got) != 0 {
		t.Fatalf("found %v", got)
	}
	p.SetMulti(context.Background(), testItems(3, "z"))
	if st := p.Stats(); st.Misses != 2 || st.Sent != 0 || st.Unsent != 3 || p.Owner("a") != "" {
		t.Fatalf("stats %+v owner %q", st, p.Owner("a"))
	}
}

func TestPeersSplitLargeStoresAndSkipOversizedValues(t *testing.T) {
	lp := newLocalPeers("a", "b")
	p := NewPeers(PeersConfig{Transport: lp, MaxRequestBytes: 4096, MaxItemSize: 2048})
	p.SetPeers("", "a", "b")
	items := make([]Item, 40)
	for i := range items {
		items[i] = Item{Key: fmt.Sprintf("big-%d", i), Value: make([]byte, 1000)}
	}
	items = append(items, Item{Key: "huge", Value: make([]byte, 4000)})
	p.SetMulti(context.Background(), items)
	st := p.Stats()
	if st.Sent != 40 || st.TooLarge != 1 {
		t.Fatalf("stats %+v", st)
	}
	if reqs := lp.requests("a") + lp.requests("b"); reqs < 10 {
		t.Fatalf("40 KB sent in %d requests of at most 4 KiB", reqs)
	}
	if got := p.GetMulti(context.Background(), itemKeys(items)); len(got) != 40 {
		t.Fatalf("found %d of 40", len(got))
	}
}
