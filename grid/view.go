package grid

import (
	"math/rand/v2"
	"slices"
	"sort"
	"sync"

	"github.com/shoalgrid/shoal/internal/suggest"
)

// View is the grid as one node described it at one moment: its members and
// the functions they offer. It never changes once made, so it can be shared
// freely; a newer View replaces it. The nil *View is empty.
type View struct {
	members   []Member            // sorted by name
	functions []Function          // sorted by name
	member    map[string]int      // name to index in members
	function  map[string]int      // name to index in functions
	offers    map[string][]string // function to the names of the members offering it
}

// NewView makes a View of members and functions (as shoal.members and
// shoal.functions return them). It keeps copies.
func NewView(members []Member, functions []Function) *View {
	v := &View{
		members:   slices.Clone(members),
		functions: slices.Clone(functions),
		member:    make(map[string]int, len(members)),
		function:  make(map[string]int, len(functions)),
		offers:    make(map[string][]string, len(functions)),
	}
	sort.Slice(v.members, func(i, j int) bool { return v.members[i].Name < v.members[j].Name })
	sort.Slice(v.functions, func(i, j int) bool { return v.functions[i].Name < v.functions[j].Name })
	for i, m := range v.members {
		v.member[m.Name] = i
	}
	for i, f := range v.functions {
		v.functions[i].Nodes = slices.Clone(f.Nodes)
		v.function[f.Name] = i
		v.offers[f.Name] = v.functions[i].Nodes
	}
	return v
}

// Members returns every member, sorted by name.
func (v *View) Members() []Member {
	if v == nil {
		return nil
	}
	return slices.Clone(v.members)
}

// Member returns the member called name.
func (v *View) Member(name string) (Member, bool) {
	if v == nil {
		return Member{}, false
	}
	i, ok := v.member[name]
	if !ok {
		return Member{}, false
	}
	return v.members[i], true
}

// Alive returns the alive members, sorted by name.
func (v *View) Alive() []Member {
	if v == nil {
		return nil
	}
	var out []Member
	for _, m := range v.members {
		if m.State == StateAlive {
			out = append(out, m)
		}
	}
	return out
}

// CachePeers returns the names of the members that own keys of the grid
// cache: those offering it memory that have not died or left (a suspect
// member stays, so that a moment's doubt does not move its keys), sorted.
func (v *View) CachePeers() []string {
	if v == nil {
		return nil
	}
	var out []string
	for _, m := range v.members {
		if m.CacheBytes > 0 && !m.Gone() {
			out = append(out, m.Name)
		}
	}
	return out
}

// Functions returns the functions the live members offer, sorted by name.
func (v *View) Functions() []Function {
	if v == nil {
		return nil
	}
	out := slices.Clone(v.functions)
	for i := range out {
		out[i].Nodes = slices.Clone(out[i].Nodes)
	}
	return out
}

// Function returns the grid's description of the function called name.
func (v *View) Function(name string) (Function, bool) {
	if v == nil {
		return Function{}, false
	}
	i, ok := v.function[name]
	if !ok {
		return Function{}, false
	}
	f := v.functions[i]
	f.Nodes = slices.Clone(f.Nodes)
	return f, true
}

// Offering returns the alive members that offer fn and can run it (they
// have slots and an RPC address), sorted by name.
func (v *View) Offering(fn string) []Member {
	if v == nil {
		return nil
	}
	var out []Member
	for _, name := range v.offers[fn] {
		i, ok := v.member[name]
		if !ok {
			continue
		}
		if m := v.members[i]; m.State == StateAlive && m.Slots > 0 && m.RPC != "" {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Candidates returns the members Offering fn from the least loaded for its
// slots to the most (see Member.Load). Members equally loaded come in a
// random order, so that callers routing by a view that is a second old
// spread their calls instead of all picking the same member.
func (v *View) Candidates(fn string) []Member {
	out := v.Offering(fn)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool { return out[i].Load() < out[j].Load() })
	return out
}

// LeastLoaded returns the first of Candidates(fn); false when no alive
// member offers fn.
func (v *View) LeastLoaded(fn string) (Member, bool) {
	c := v.Candidates(fn)
	if len(c) == 0 {
		return Member{}, false
	}
	return c[0], true
}

// GoneSince returns the names of the members that were alive or suspect in
// earlier and are dead, left or absent in v: the members whose work must
// go elsewhere. A member counts however it got there, through suspect or
// not, and is reported once for each pair of views that saw it go.
func (v *View) GoneSince(earlier *View) []string {
	if earlier == nil {
		return nil
	}
	var gone []string
	for _, m := range earlier.members {
		if m.Gone() {
			continue
		}
		if now, ok := v.Member(m.Name); !ok || now.Gone() {
			gone = append(gone, m.Name)
		}
	}
	return gone
}

// Suggest returns the names of the offered functions that fn may be a
// misspelling of, closest first.
func (v *View) Suggest(fn string) []string {
	if v == nil {
		return nil
	}
	names := make([]string, len(v.functions))
	for i, f := range v.functions {
		names[i] = f.Name
	}
	return suggest.Closest(fn, names)
}

// Views holds the latest View of a grid and tells whoever waits when a
// newer one replaces it. A scheduler job reads it through View; a client
// keeps it fresh with Set. The zero value holds the empty View and is
// ready to use; it is safe for concurrent use.
type Views struct {
	mu      sync.Mutex
	view    *View
	changed chan struct{} // closed when view is replaced
}

// View returns the latest View and a channel that is closed once a newer
// View replaces it.
func (vs *Views) View() (*View, <-chan struct{}) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.changed == nil {
		vs.changed = make(chan struct{})
	}
	return vs.view, vs.changed
}

// Set installs v as the latest View and wakes everyone waiting on the
// previous one.
func (vs *Views) Set(v *View) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.view = v
	if vs.changed != nil {
		close(vs.changed)
	}
	vs.changed = make(chan struct{})
}
