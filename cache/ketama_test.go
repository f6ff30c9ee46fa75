package cache

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
)

// TestPlacementMatchesLibmemcached checks the selector against vectors
// that libmemcached itself produced in weighted ketama mode
// (testdata/ketama/gen.sh).
func TestPlacementMatchesLibmemcached(t *testing.T) {
	files, err := filepath.Glob("testdata/ketama/*.tsv")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vector files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			sc.Scan()
			servers := strings.Fields(strings.TrimPrefix(sc.Text(), "# servers:"))
			sel, err := NewSelector(servers...)
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for sc.Scan() {
				key, want, ok := strings.Cut(sc.Text(), "\t")
				if !ok {
					t.Fatalf("bad line %q", sc.Text())
				}
				addr, err := sel.PickServer(key)
				if err != nil || addr.String() != want {
					t.Fatalf("key %q: picked %v (%v), libmemcached picks %s", key, addr, err, want)
				}
				checked++
			}
			if checked < 1000 {
				t.Fatalf("only %d vectors", checked)
			}
		})
	}
}

func TestSelectorReturnsOneAddrPerServer(t *testing.T) {
	sel, err := NewSelector("127.0.0.1:21001", "127.0.0.1:21002", "127.0.0.1:21003")
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(map[string]any)
	for i := 0; i < 1000; i++ {
		a, err := sel.PickServer(fmt.Sprintf("k%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := addrs[a.String()]; ok && prev != any(a) {
			t.Fatalf("two net.Addr values for %s", a)
		}
		addrs[a.String()] = a
	}
	if len(addrs) != 3 {
		t.Fatalf("keys went to %d servers", len(addrs))
	}
	// Rebuilding keeps the values of servers that stay.
	before, _ := sel.PickServer("k1")
	if err := sel.SetServers("127.0.0.1:21001", "127.0.0.1:21002", "127.0.0.1:21003", "127.0.0.1:21004"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		a, _ := sel.PickServer(fmt.Sprintf("k%d", i))
		if a.String() == before.String() && any(a) != any(before) {
			t.Fatal("a server kept after a rebuild changed its net.Addr value")
		}
	}
}

func TestSelectorErrors(t *testing.T) {
	for _, servers := range [][]string{{"nohost"}, {"a:0"}, {"a:1", "a:1"}, {"a:x"}} {
		if _, err := NewSelector(servers...); err == nil {
			t.Errorf("servers %v accepted", servers)
		}
	}
	empty, err := NewSelector()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.PickServer("k"); err != memcache.ErrNoServers {
		t.Errorf("empty selector: %v", err)
	}
}

// moved counts keys whose server differs between two server lists.
func moved(t *testing.T, from, to []string, keys int) int {
	t.Helper()
	a, err := NewSelector(from...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSelector(to...)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; i < keys; i++ {
		k := fmt.Sprintf("key-%d", i)
		x, _ := a.PickServer(k)
		y, _ := b.PickServer(k)
		if x.String() != y.String() {
			n++
		}
	}
	return n
}

func TestAddingAFifthServerMovesAboutAFifth(t *testing.T) {
	four := []string{"127.0.0.1:21001", "127.0.0.1:21002", "127.0.0.1:21003", "127.0.0.1:21004"}
	five := append(append([]string(nil), four...), "127.0.0.1:21005")
	const keys = 100_000
	add := moved(t, four, five, keys)
	remove := moved(t, five, four, keys)
	t.Logf("adding a fifth server moved %.1f%% of keys; removing it moved %.1f%%", 100*float64(add)/keys, 100*float64(remove)/keys)
	// Only keys that now belong to the new server may move: about a fifth,
	// and with 160 points per server the share stays within 15%..25%.
	for _, n := range []int{add, remove} {
		if f := float64(n) / keys; f < 0.15 || f > 0.25 {
			t.Fatalf("%.1f%% of keys moved, want about 20%%", 100*f)
		}
	}
	// And every key that moved went to (or came from) the fifth server.
	a, _ := NewSelector(four...)
	b, _ := NewSelector(five...)
	for i := 0; i < keys; i++ {
		k := fmt.Sprintf("key-%d", i)
		x, _ := a.PickServer(k)
		y, _ := b.PickServer(k)
		if x.String() != y.String() && y.String() != "127.0.0.1:21005" {
			t.Fatalf("key %s moved between old servers: %s -> %s", k, x, y)
		}
	}
}
