package grid

import (
	"math"

	"github.com/shoalgrid/shoal/rpc"
)

// Member is one member of the grid as a node sees it, as shoal.members
// returns it.
type Member struct {
	Name      string `msgpack:"name" json:"name"`             // unique in the grid
	Gossip    string `msgpack:"gossip" json:"gossip"`         // memberlist address
	RPC       string `msgpack:"rpc" json:"rpc"`               // msgpack-rpc address
	HTTP      string `msgpack:"http" json:"http,omitempty"`   // health and metrics address
	State     string `msgpack:"state" json:"state"`           // StateAlive, StateSuspect, StateDead or StateLeft
	Slots     int    `msgpack:"slots" json:"slots"`           // calls it runs at once
	Running   int    `msgpack:"running" json:"running"`       // calls running, as last gossiped
	Queued    int    `msgpack:"queued" json:"queued"`         // calls waiting for a slot
	Digest    string `msgpack:"digest" json:"digest"`         // names the member's function set
	CacheAddr string `msgpack:"cache" json:"cache,omitempty"` // the memcached it offers, if any
	// CacheBytes is the memory it offers the grid cache; members offering
	// some own a share of its keys. 0 with memcached, or an embedder's cache.
	CacheBytes int64  `msgpack:"cache_bytes" json:"cache_bytes,omitempty"`
	Version    string `msgpack:"version" json:"version"` // its Shoal version
}

// Member states.
const (
	// StateAlive: it answers gossip.
	StateAlive = "alive"
	// StateSuspect: the reporting node's probes of it go unanswered; the
	// grid declares it dead unless it refutes in time.
	StateSuspect = "suspect"
	// StateDead: it stopped answering anyone.
	StateDead = "dead"
	// StateLeft: it said goodbye.
	StateLeft = "left"
)

// Gone reports whether the member has stopped serving: it died or left.
func (m Member) Gone() bool { return m.State == StateDead || m.State == StateLeft }

// Load is the member's work for each of its slots: calls running and
// queued, divided by slots; +Inf for a member with no slots (one that
// gossips no Shoal metadata).
func (m Member) Load() float64 {
	if m.Slots <= 0 {
		return math.Inf(1)
	}
	return float64(m.Running+m.Queued) / float64(m.Slots)
}

// Function is a function offered in the grid and the live members that
// offer it, as shoal.functions returns it.
type Function struct {
	rpc.FunctionInfo `msgpack:",inline"`
	Nodes            []string `msgpack:"nodes" json:"nodes"` // names of the live members offering it
}
