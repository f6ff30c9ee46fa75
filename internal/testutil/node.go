package testutil

import (
	"testing"
	"time"
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
	all := []string{"node", "--name", name, "--gossip", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--http", "127.0.0.1:0"}
	timing := false
	for _, a := range args {
		timing = timing || a == "--gossip-timing"
	}
	if !timing {
		all = append(all, "--gossip-timing", "fast")
	}
	if join != "" {
		all = append(all, "--join", join)
	}
	p := Start(t, nil, ShoalBinary(t), append(all, args...)...)
	m := p.WaitForLine(`msg="node started" name=\S+ gossip=(\S+) rpc=(\S+) http=(\S+)`, 30*time.Second)
	return &Node{Process: p, Name: name, Gossip: m[1], RPC: m[2], HTTP: m[3]}
}
