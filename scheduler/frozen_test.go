package scheduler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// The tests in this file pin down what a job does about a node that is
// frozen (stopped, wedged, cut off): it takes calls and answers nothing.

// hang returns when its call's context ends, so a call to it ends when the
// job gives it up; fakeCall.canceled may miss a context that ended just
// as the call returned.

// wrongly answers every item x with x*10+1: a value the job must never
// deliver, for the late answers of calls it gave up.
var wrongly = answer(func(x int) itemResult { return value(x*10 + 1) })

// early is how much less than d a fake node may see a call run when the job
// gave it d: the job's clock starts when it sends the call, the node's
// when the call reaches it.
func early(d time.Duration) time.Duration { return d * 9 / 10 }

// TestFakeCallDeadline pins down the time a call gets before it is given
// up as lost: a frozen node whose view never changes holds its chunks
// until their time is up, and then they go to another node, the late
// answers ignored; a call gets no time limit until something tells a slow
// item from a lost call (an answered call or ItemTimeout); each retry
// doubles the time, and items whose every try ran out fail with Timeout.
func TestFakeCallDeadline(t *testing.T) {
	t.Run("frozen node the view shows alive", func(t *testing.T) {
		// Long enough for the steps below: frozen's calls must not run out
		// before a finishes the rest, nor a's retries before a is released.
		const floor = time.Second
		g := newFakeGrid()
		releaseFrozen, releaseA := make(chan struct{}), make(chan struct{})
		g.add("frozen", g.held(releaseFrozen, wrongly))
		g.add("a", after(time.Millisecond, times10))
		g.setView(member("a", 2), member("frozen", 1)) // a has room for all of frozen's items
		const n, chunk = 40, 2
		j := g.start(t, context.Background(), n, scheduler.Options{ChunkSize: chunk, MinCallTimeout: floor})
		testutil.WaitFor(t, awaitTimeout, "frozen to hold two chunks and a to finish the rest", func() bool {
			return len(running(g.callsTo("frozen"))) == 2 && j.delivered.Load() == n-2*chunk
		})
		held := itemsOf(g.callsTo("frozen"))
		g.set("a", when(releaseA, times10)) // a keeps what it gets until frozen has answered

		testutil.WaitFor(t, awaitTimeout, "frozen's items to be sent to a", func() bool {
			return sameItems(itemsOf(running(g.callsTo("a"))), held)
		})
		for _, c := range g.callsTo("frozen") {
			if c.ctx.Err() == nil {
				t.Errorf("frozen's call with %v still runs after its items went to a", c.items)
				continue
			}
			if waited := c.canceled.Sub(c.start); waited < early(floor) {
				t.Errorf("frozen's call with %v given up after %v, before MinCallTimeout %v", c.items, waited, floor)
			} else {
				t.Logf("frozen's call with %v given up after %v", c.items, waited)
			}
		}
		close(releaseFrozen) // its late answers, with wrong values
		testutil.WaitFor(t, awaitTimeout, "frozen to answer", func() bool { return len(running(g.callsTo("frozen"))) == 0 })
		close(releaseA)
		results, st, err := j.wait(t)
		if err != nil {
			t.Fatal(err)
		}
		checkTimes10(t, results)
		for _, i := range held {
			if r := results[i]; r.Node != "a" || r.Attempts != 2 {
				t.Errorf("item %d, held by frozen, delivered from %q after %d attempts", i, r.Node, r.Attempts)
			}
		}
		if st.PerNode["frozen"] != 0 || st.Retries != len(held) || st.OK != n {
			t.Errorf("stats %+v", st)
		}
	})

	t.Run("no time limit before anything is measured", func(t *testing.T) {
		const floor = 20 * time.Millisecond
		g := newFakeGrid()
		g.add("a", hang)
		g.setView(member("a", 1))
		j := g.start(t, context.Background(), 1, scheduler.Options{MinCallTimeout: floor})
		testutil.WaitFor(t, awaitTimeout, "the call to be sent", func() bool { return len(g.callsTo("a")) == 1 })
		// An absence: nothing announces it, so give the job many times
		// the floor to show it.
		select {
		case <-j.done:
			t.Fatal("the job ended while its only call was unanswered")
		case <-time.After(25 * floor):
		}
		if calls := g.callsTo("a"); len(calls) != 1 || calls[0].ctx.Err() != nil {
			t.Fatalf("a slow first item was given up with nothing measured: %d calls, the first %v", len(calls), calls[0].ctx.Err())
		}
		j.cancel()
		if _, _, err := j.wait(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	})

	t.Run("ItemTimeout bounds a call before anything is measured", func(t *testing.T) {
		const floor, item = 100 * time.Millisecond, 50 * time.Millisecond
		g := newFakeGrid()
		g.add("a", script(hang, times10))
		g.setView(member("a", 1))
		results, st, err := g.run(t, context.Background(), 1, scheduler.Options{ItemTimeout: item, MinCallTimeout: floor})
		if err != nil {
			t.Fatal(err)
		}
		checkTimes10(t, results)
		calls := g.callsTo("a")
		if len(calls) != 2 || results[0].Attempts != 2 || st.Retries != 1 {
			t.Fatalf("%d calls, %d attempts, stats %+v; want the lost call retried once", len(calls), results[0].Attempts, st)
		}
		// MinCallTimeout, plus ItemTimeout for the item and for one chunk
		// ahead of it in its slot.
		if waited, want := calls[0].end.Sub(calls[0].start), floor+2*item; waited < early(want) {
			t.Fatalf("the lost call was given up after %v, before %v", waited, want)
		}
	})

	t.Run("every try runs out", func(t *testing.T) {
		const floor, item = 40 * time.Millisecond, 10 * time.Millisecond
		g := newFakeGrid()
		g.add("a", hang)
		g.setView(member("a", 1))
		results, st, err := g.run(t, context.Background(), 1, scheduler.Options{ItemTimeout: item, MinCallTimeout: floor, Attempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		r := results[0]
		if !errors.Is(r.Err, rpc.ErrTimeout) || r.Attempts != 3 || st.Failed != 1 {
			t.Fatalf("item: %+v, stats %+v; want a Timeout after 3 attempts", r, st)
		}
		calls := g.callsTo("a")
		if len(calls) != 3 {
			t.Fatalf("%d calls, want 3", len(calls))
		}
		base := floor + 2*item
		for k, c := range calls {
			waited, want := c.end.Sub(c.start), base<<k
			t.Logf("try %d given up after %v", k+1, waited)
			if waited < early(want) {
				t.Errorf("try %d given up after %v, before %v", k+1, waited, want)
			}
		}
	})
}

// TestFakeSuspectIsHedged pins down a node the view shows suspect: its
// chunks in flight are re-issued to another node at once, without waiting
// for the grid to declare it dead, while its own calls go on, since it may
// refute the suspicion; whichever copy answers first is delivered, once.
func TestFakeSuspectIsHedged(t *testing.T) {
	for _, first := range []string{"suspect", "copy"} {
		t.Run(first+" answers first", func(t *testing.T) {
			a, b := member("a", 1), member("b", 1)
			g := newFakeGrid()
			releaseA, releaseB := make(chan struct{}), make(chan struct{})
			g.add("a", g.held(releaseA, times10))
			g.add("b", times10)
			g.setView(a, b)
			const n, chunk = 40, 2
			j := g.start(t, context.Background(), n, scheduler.Options{ChunkSize: chunk})
			testutil.WaitFor(t, awaitTimeout, "a to hold two chunks and b to finish the rest", func() bool {
				return len(running(g.callsTo("a"))) == 2 && j.delivered.Load() == n-2*chunk
			})
			held := itemsOf(g.callsTo("a"))
			g.set("b", g.held(releaseB, times10))

			suspect := time.Now()
			g.install(t, viewOf(inState(a, grid.StateSuspect), b))
			testutil.WaitFor(t, awaitTimeout, "a's items to be re-issued to b", func() bool {
				return sameItems(itemsOf(running(g.callsTo("b"))), held)
			})
			for _, c := range running(g.callsTo("b")) {
				if d := c.start.Sub(suspect); d > 250*time.Millisecond {
					t.Errorf("b got %v %v after a turned suspect", c.items, d)
				}
			}
			for _, c := range g.callsTo("a") {
				if c.ctx.Err() != nil {
					t.Errorf("a's call with %v canceled while a is only suspect", c.items)
				}
			}

			winner := "a"
			if first == "suspect" {
				close(releaseA)
				testutil.WaitFor(t, awaitTimeout, "a's answers to be delivered", func() bool { return j.delivered.Load() == n })
				close(releaseB)
			} else {
				winner = "b"
				close(releaseB)
				testutil.WaitFor(t, awaitTimeout, "b's answers to be delivered", func() bool { return j.delivered.Load() == n })
				close(releaseA)
			}
			results, st, err := j.wait(t)
			if err != nil {
				t.Fatal(err)
			}
			checkTimes10(t, results)
			for _, i := range held {
				if r := results[i]; r.Node != winner || r.Attempts != 1 {
					t.Errorf("item %d delivered from %q after %d attempts; want %s's answer, one attempt", i, r.Node, r.Attempts, winner)
				}
			}
			if st.Reissued != 2 || st.Retries != 0 || st.OK != n {
				t.Errorf("stats %+v; want a's 2 chunks re-issued and no retries", st)
			}
		})
	}
}
