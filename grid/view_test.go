package grid_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

func member(name, state string, slots, running, queued int) grid.Member {
	return grid.Member{Name: name, RPC: name + ":7373", State: state, Slots: slots, Running: running, Queued: queued}
}

func function(name string, nodes ...string) grid.Function {
	return grid.Function{FunctionInfo: rpc.FunctionInfo{Name: name}, Nodes: nodes}
}

func names(ms []grid.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func TestOfferingIsAliveMembersThatCanRun(t *testing.T) {
	v := grid.NewView([]grid.Member{
		member("e", grid.StateAlive, 2, 0, 0),
		member("a", grid.StateAlive, 2, 0, 0),
		member("s", grid.StateSuspect, 2, 0, 0),
		member("d", grid.StateDead, 2, 0, 0),
		member("l", grid.StateLeft, 2, 0, 0),
		member("z", grid.StateAlive, 0, 0, 0),         // no metadata: no slots
		{Name: "n", State: grid.StateAlive, Slots: 1}, // no RPC address
	}, []grid.Function{function("square", "e", "a", "s", "d", "l", "z", "n", "ghost"), function("cube", "a")})
	if got := names(v.Offering("square")); !slices.Equal(got, []string{"a", "e"}) {
		t.Fatalf("Offering(square) = %v, want [a e]", got)
	}
	if got := names(v.Offering("nope")); len(got) != 0 {
		t.Fatalf("Offering(nope) = %v", got)
	}
	if got := names(v.Alive()); !slices.Equal(got, []string{"a", "e", "n", "z"}) {
		t.Fatalf("Alive() = %v", got)
	}
	if got := names(v.Members()); !slices.Equal(got, []string{"a", "d", "e", "l", "n", "s", "z"}) {
		t.Fatalf("Members() not sorted by name: %v", got)
	}
	if f, ok := v.Function("cube"); !ok || !slices.Equal(f.Nodes, []string{"a"}) {
		t.Fatalf("Function(cube) = %+v, %v", f, ok)
	}
	if _, ok := v.Member("ghost"); ok {
		t.Fatal("a member that is not listed was found")
	}
}

func TestCandidatesLeastLoadedFirstTiesShuffled(t *testing.T) {
	v := grid.NewView([]grid.Member{
		member("busy", grid.StateAlive, 2, 2, 2), // 2 per slot
		member("half", grid.StateAlive, 4, 2, 0), // 0.5 per slot
		member("idle1", grid.StateAlive, 1, 0, 0),
		member("idle2", grid.StateAlive, 8, 0, 0),
	}, []grid.Function{function("f", "busy", "half", "idle1", "idle2")})
	firsts := map[string]int{}
	for range 200 {
		c := names(v.Candidates("f"))
		if len(c) != 4 || c[2] != "half" || c[3] != "busy" {
			t.Fatalf("Candidates = %v: want the idle two, then half, then busy", c)
		}
		firsts[c[0]]++
		if best, ok := v.LeastLoaded("f"); !ok || (best.Name != "idle1" && best.Name != "idle2") {
			t.Fatalf("LeastLoaded = %v, %v", best.Name, ok)
		}
	}
	if firsts["idle1"] == 0 || firsts["idle2"] == 0 {
		t.Fatalf("equally loaded members were not both chosen first in 200 tries: %v", firsts)
	}
	if _, ok := v.LeastLoaded("nope"); ok {
		t.Fatal("LeastLoaded found a member for a function nobody offers")
	}
}

func TestGoneSinceCountsEveryWayOut(t *testing.T) {
	view := func(states map[string]string) *grid.View {
		var ms []grid.Member
		for name, st := range states {
			ms = append(ms, member(name, st, 1, 0, 0))
		}
		return grid.NewView(ms, nil)
	}
	cases := []struct {
		name          string
		before, after map[string]string
		gone          []string
	}{
		{"alive to dead", map[string]string{"a": grid.StateAlive}, map[string]string{"a": grid.StateDead}, []string{"a"}},
		{"alive to left", map[string]string{"a": grid.StateAlive}, map[string]string{"a": grid.StateLeft}, []string{"a"}},
		{"alive to unlisted", map[string]string{"a": grid.StateAlive, "b": grid.StateAlive}, map[string]string{"b": grid.StateAlive}, []string{"a"}},
		{"suspect to dead", map[string]string{"a": grid.StateSuspect}, map[string]string{"a": grid.StateDead}, []string{"a"}},
		{"suspect to unlisted", map[string]string{"a": grid.StateSuspect}, map[string]string{}, []string{"a"}},
		{"alive to suspect is not gone", map[string]string{"a": grid.StateAlive}, map[string]string{"a": grid.StateSuspect}, nil},
		{"suspect back to alive", map[string]string{"a": grid.StateSuspect}, map[string]string{"a": grid.StateAlive}, nil},
		{"dead stays dead", map[string]string{"a": grid.StateDead}, map[string]string{"a": grid.StateDead}, nil},
		{"dead is forgotten", map[string]string{"a": grid.StateDead}, map[string]string{}, nil},
		{"newcomer", map[string]string{}, map[string]string{"a": grid.StateAlive}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := view(tc.after).GoneSince(view(tc.before)); !slices.Equal(got, tc.gone) {
				t.Fatalf("GoneSince = %v, want %v", got, tc.gone)
			}
		})
	}
	// The path alive -> suspect -> dead, seen one view at a time, reports
	// the member once, at its death.
	alive, suspect, dead := view(map[string]string{"a": grid.StateAlive}), view(map[string]string{"a": grid.StateSuspect}), view(map[string]string{"a": grid.StateDead})
	if g1, g2 := suspect.GoneSince(alive), dead.GoneSince(suspect); len(g1) != 0 || !slices.Equal(g2, []string{"a"}) {
		t.Fatalf("alive -> suspect: %v, suspect -> dead: %v", g1, g2)
	}
	if got := alive.GoneSince(nil); got != nil {
		t.Fatalf("GoneSince(nil) = %v", got)
	}
}

func TestViewIsImmutable(t *testing.T) {
	ms := []grid.Member{member("a", grid.StateAlive, 1, 0, 0)}
	fns := []grid.Function{function("f", "a")}
	v := grid.NewView(ms, fns)
	ms[0].State = grid.StateDead
	fns[0].Nodes[0] = "b"
	got := v.Members()
	got[0].Name = "changed"
	f, _ := v.Function("f")
	f.Nodes[0] = "changed"
	v.Functions()[0].Nodes[0] = "changed"
	if m, _ := v.Member("a"); m.State != grid.StateAlive || len(v.Offering("f")) != 1 {
		t.Fatalf("the view changed with the slices it was made from or handed out: %+v, %v", m, v.Offering("f"))
	}
}

func TestNilViewIsEmpty(t *testing.T) {
	var v *grid.View
	if v.Members() != nil || v.Alive() != nil || v.Offering("f") != nil || v.Candidates("f") != nil || v.Suggest("f") != nil {
		t.Fatal("a nil view is not empty")
	}
	if _, ok := v.LeastLoaded("f"); ok {
		t.Fatal("a nil view has a least loaded member")
	}
}

func TestSuggest(t *testing.T) {
	v := grid.NewView(nil, []grid.Function{function("square"), function("sha256"), function("sleep")})
	if got := v.Suggest("squre"); !slices.Equal(got, []string{"square"}) {
		t.Fatalf("Suggest(squre) = %v", got)
	}
	if got := v.Suggest("square"); got != nil && len(got) != 0 {
		t.Fatalf("a known name suggested %v", got)
	}
}

func TestViewsWakesWaitersOnSet(t *testing.T) {
	var vs grid.Views
	v0, changed := vs.View()
	if v0 != nil {
		t.Fatal("a new Views holds a view")
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-changed
		}()
	}
	select {
	case <-changed:
		t.Fatal("changed before any Set")
	default:
	}
	next := grid.NewView([]grid.Member{member("a", grid.StateAlive, 1, 0, 0)}, nil)
	vs.Set(next)
	wg.Wait() // every waiter woke
	got, changedAgain := vs.View()
	if got != next {
		t.Fatal("View does not return what Set installed")
	}
	select {
	case <-changedAgain:
		t.Fatal("the new channel is already closed")
	default:
	}
}
