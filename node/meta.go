package node

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/rpc"
)

// metaLimit is memberlist's bound on node metadata.
const metaLimit = 512

// meta is what a node tells the grid about itself in gossip. Keys are short
// to stay well within memberlist's 512 bytes.
type meta struct {
	RPC     string `msgpack:"r"`
	HTTP    string `msgpack:"h,omitempty"`
	Slots   int    `msgpack:"s"`
	Running int    `msgpack:"lr"`
	Queued  int    `msgpack:"lq"`
	Cache   string `msgpack:"c,omitempty"`
	Digest  string `msgpack:"d"`
	Version string `msgpack:"v"`
	Leaving bool   `msgpack:"x,omitempty"` // set just before a graceful leave
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
