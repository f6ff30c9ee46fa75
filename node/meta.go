package node

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/rpc"
)

// metaLimit is memberlist's bound on node metadata.
const metaLimit = 512

// meta is what a node tells the grid about itself in gossip. Keys are short
// to stay well within memberlist's 512 bytes.
type meta struct {
	RPC        string `msgpack:"r"`
	HTTP       string `msgpack:"h,omitempty"`
	Slots      int    `msgpack:"s"`
	Running    int    `msgpack:"lr"`
	Queued     int    `msgpack:"lq"`
	Cache      string `msgpack:"c,omitempty"`
	CacheBytes int64  `msgpack:"cb,omitempty"` // bytes offered to the grid cache
	Digest     string `msgpack:"d"`
	Version    string `msgpack:"v"`
	Leaving    bool   `msgpack:"x,omitempty"` // set just before a graceful leave
}

func (m meta) encode() ([]byte, error) {
	b, err := msgpack.Marshal(&m)
	if err != nil {
		return nil, err
	}
	if len(b) > metaLimit {
		return nil, fmt.Errorf("node: metadata is %d bytes, over memberlist's %d (shorten the addresses)", len(b), metaLimit)
	}
	return b, nil
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, fmt.Errorf("node: member has no metadata (not a Shoal node?)")
	}
	err := msgpack.Unmarshal(b, &m)
	return m, err
}

// functionDigest names a function set: equal sets, whatever their order,
// give equal digests, and a change of name, signature, version or
// cacheability gives another.
func functionDigest(fns []rpc.FunctionInfo) string {
	sorted := append([]rpc.FunctionInfo(nil), fns...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\n", f.Name, f.Signature, f.Version, strconv.FormatBool(f.Cacheable))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// currentMeta is the metadata the node would gossip now.
func (n *Node) currentMeta() meta {
	running, queued := n.exec.Load()
	return meta{
		RPC:        n.RPCAddr(),
		HTTP:       n.HTTPAddr(),
		Slots:      n.exec.Slots(),
		Running:    running,
		Queued:     queued,
		Cache:      n.cfg.CacheAddr,
		CacheBytes: n.gridCacheBytes(),
		Digest:     functionDigest(n.srv.Functions()),
		Version:    n.version,
		Leaving:    n.draining.Load(),
	}
}

// announce gossips the node's current metadata if it changed, waiting at
// most timeout for the broadcast to go out.
func (n *Node) announce(timeout time.Duration) {
	m := n.currentMeta()
	n.metaMu.Lock()
	changed := m != n.lastMeta
	n.lastMeta = m
	n.metaMu.Unlock()
	if changed {
		if err := n.ml.UpdateNode(timeout); err != nil {
			n.log.Debug("metadata update not confirmed", "err", err)
		}
	}
}

// gossipLoad announces changes of load and function set, at most once per
// Timing.LoadInterval, and forgets long-gone members.
func (n *Node) gossipLoad() {
	t := time.NewTicker(n.cfg.Timing.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.forgetGone()
		n.announce(n.cfg.Timing.LoadInterval)
	}
}

// metaDelegate hands memberlist the node's metadata.
type metaDelegate Node

// NodeMeta hands memberlist the metadata last announced.
func (d *metaDelegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	n.metaMu.Lock()
	m := n.lastMeta
	n.metaMu.Unlock()
	b, err := m.encode()
	if err != nil || len(b) > limit {
		n.log.Error("metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}

// NotifyMsg takes the jobs other nodes gossip.
func (d *metaDelegate) NotifyMsg(b []byte) {
	n := (*Node)(d)
	if len(b) > 1 && b[0] == msgJob && n.jobs != nil {
		n.jobs.heard(b[1:])
	}
}

// GetBroadcasts adds the states of this node's jobs to gossip.
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	n := (*Node)(d)
	if n.jobs == nil || n.jobs.queue == nil {
		return nil
	}
	return n.jobs.queue.GetBroadcasts(overhead, limit)
}

// LocalState has no state beyond the metadata to exchange.
func (d *metaDelegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState has nothing to merge.
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool) {}
