package testutil

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/local"
)

// Node is a `shoal node` process and the addresses it logged.
type Node struct {
	*Process
	Name, Gossip, RPC, HTTP string
}

// StartNode runs `shoal node` named name on free ports of 127.0.0.1, with
// fast gossip timing unless args say otherwise, joined through join when it
// is not empty, and kills it when the test ends.
func StartNode(t testing.TB, name, join string, args ...string) *Node {
	t.Helper()
	p := Start(t, nil, ShoalBinary(t), local.NodeArgs(name, join, args...)...)
	m := p.WaitForLine(local.StartedLine.String(), 30*time.Second)
	return &Node{Process: p, Name: name, Gossip: m[1], RPC: m[2], HTTP: m[3]}
}
