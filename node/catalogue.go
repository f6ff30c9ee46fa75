package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/flight"
	"github.com/shoalgrid/shoal/rpc"
)

// catalogue is what the node knows of the grid's functions: each member's
// function list, filed by the digest the member gossips, fetched once per
// digest with shoal.describe.
type catalogue struct {
	fetches flight.Group[string, []rpc.FunctionInfo] // one fetch per digest at a time

	mu       sync.Mutex
	byDigest map[string][]rpc.FunctionInfo
}

func (c *catalogue) lookup(digest string) ([]rpc.FunctionInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fns, ok := c.byDigest[digest]
	return fns, ok
}

func (c *catalogue) knows(digest string) bool {
	_, ok := c.lookup(digest)
	return ok
}

// file keeps fns under their own digest: the member may have registered a
// function since it gossiped the digest asked for, and other members still
// share that one.
func (c *catalogue) file(fns []rpc.FunctionInfo) {
	c.mu.Lock()
	c.byDigest[functionDigest(fns)] = fns
	c.mu.Unlock()
}

// functionsOf returns a member's function list, fetching it the first time
// its digest is seen. Members with the same function set share one fetch.
func (n *Node) functionsOf(ctx context.Context, m grid.Member) ([]rpc.FunctionInfo, error) {
	if m.Name == n.cfg.Name {
		return n.srv.Functions(), nil
	}
	if fns, ok := n.catalogue.lookup(m.Digest); ok {
		return fns, nil
	}
	return n.catalogue.fetches.Do(ctx, m.Digest, func() ([]rpc.FunctionInfo, error) {
		if fns, ok := n.catalogue.lookup(m.Digest); ok {
			return fns, nil // fetched while this caller waited to fetch
		}
		fns, err := n.stub.Describe(ctx, m.RPC)
		if err == nil {
			n.catalogue.file(fns)
		}
		return fns, err
	})
}

// Functions returns the functions offered by the live members, with the
// nodes that offer each, sorted by name.
func (n *Node) Functions(ctx context.Context) []grid.Function {
	byName := make(map[string]*grid.Function)
	for _, m := range n.Members() {
		if m.State != grid.StateAlive {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fns, err := n.functionsOf(fctx, m)
		cancel()
		if err != nil {
			n.log.Warn("could not fetch a member's functions", "name", m.Name, "err", err)
			continue
		}
		for _, f := range fns {
			g := byName[f.Name]
			if g == nil {
				g = &grid.Function{FunctionInfo: f}
				byName[f.Name] = g
			}
			g.Nodes = append(g.Nodes, m.Name)
		}
	}
	out := make([]grid.Function, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
