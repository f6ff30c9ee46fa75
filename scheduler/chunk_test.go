package scheduler_test

import (
	"context"
	"testing"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/scheduler"
)

// TestFakeChunksNeverExceedTheNodeMaximum asks for chunks twice as large
// as a node accepts: every chunk sent must hold at most grid.MaxChunkItems
// (the fake node decodes requests as a real one does, so a larger chunk
// would fail), and the job must still complete.
func TestFakeChunksNeverExceedTheNodeMaximum(t *testing.T) {
	g := newFakeGrid()
	g.add("a", times10)
	g.setView(member("a", 1))
	n := grid.MaxChunkItems + 10
	results, st, err := g.run(t, context.Background(), n, scheduler.Options{ChunkSize: 2 * grid.MaxChunkItems})
	if err != nil {
		t.Fatal(err)
	}
	checkTimes10(t, results)
	largest := 0
	for _, c := range g.callsTo("a") {
		largest = max(largest, len(c.items))
	}
	if largest != grid.MaxChunkItems || st.OK != n {
		t.Errorf("largest chunk %d items, want %d; %d of %d items OK", largest, grid.MaxChunkItems, st.OK, n)
	}
}
