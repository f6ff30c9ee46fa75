package node

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// cacheWrite is a computed result waiting to be stored: a single call's
// arguments and result, or a chunk's results with their keys (encoded).
type cacheWrite struct {
	fn     rpc.FunctionInfo
	args   []any
	result any
	ready  []cache.Item
	size   int64 // the bytes of ready's keys and values
}

// maxQueuedBytes bounds the bytes of chunk results waiting in the queue:
// the queue counts entries, and one entry holds a whole chunk's results.
// Beyond it results are dropped and counted, as for a full queue.
const maxQueuedBytes = 32 << 20

// maxCacheBatch bounds how many results one SetMulti carries.
const maxCacheBatch = 128

// cacheWriters is how many goroutines write results to the cache: memcached
// takes one set per round trip, so a few writers keep up with many callers.
const cacheWriters = 4

// newCache builds the node's result cache from its configuration: an
// embedder's cache, memcached, or by default this node's share of the grid
// cache.
func (n *Node) newCache() error {
	switch {
	case n.cfg.Cache != nil:
		n.cache, n.ownsCache = n.cfg.Cache, false
		return nil
	case n.cfg.CacheRing == "gossip" || len(n.cfg.Memcached) > 0:
		mc, err := cache.NewMemcached(cache.MemcachedConfig{Servers: n.cfg.Memcached, Timeout: n.cfg.CacheTimeout, Logger: n.log})
		if err != nil {
			return err
		}
		n.cache, n.memcached = mc, mc
	default:
		local := cache.NewMemory(n.cfg.CacheSize, 0)
		n.peers = cache.NewPeers(cache.PeersConfig{
			Local:       local,
			Transport:   grid.CacheTransport{Stub: grid.Stub{Caller: (*nodeCaller)(n)}, Addr: n.rpcAddrOf},
			Timeout:     n.cfg.CacheTimeout,
			MaxItemSize: local.MaxItemSize(),
			Logger:      n.log,
		})
		n.cache = n.peers
	}
	n.ownsCache = true
	return nil
}

// nodeCaller calls other members through the node's pool, which New makes
// after the cache.
type nodeCaller Node

func (c *nodeCaller) Call(ctx context.Context, addr, method string, result any, args ...any) error {
	return c.pool.Call(ctx, addr, method, result, args...)
}

// rpcAddrOf returns the RPC address of the member named name.
func (n *Node) rpcAddrOf(name string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if v, ok := n.view[name]; ok && v.RPC != "" {
		return v.RPC, true
	}
	return "", false
}

// maxCachedSize is the largest value the node's own cache stores (its
// share of the grid cache's item limit, memcached's item limit), or 0 when
// it does not know (a cache given in Config.Cache). A larger result is not
// queued for the cache at all, only counted: it would be refused there,
// after holding its memory in the queue.
func (n *Node) maxCachedSize() int {
	switch {
	case n.peers != nil:
		return n.peers.Local().MaxItemSize()
	case n.memcached != nil:
		return cache.DefaultMaxItemSize
	}
	return 0
}

// cacheInfo serves shoal.cache: which kind of cache the node writes results
// to, so that clients read them where they are, with its share and
// counters.
func (n *Node) cacheInfo() grid.CacheInfo {
	st := n.cache.Stats()
	info := grid.CacheInfo{Hits: st.Hits, Misses: st.Misses, Stored: st.Stored, Evicted: st.Evicted, Sent: st.Sent,
		Unsent: st.Unsent, Errors: st.Errors}
	for _, s := range st.Servers {
		info.Breakers = append(info.Breakers, grid.Breaker{Server: s.Addr, State: s.Breaker})
	}
	switch {
	case n.peers != nil:
		info.Kind = grid.CacheGrid
		info.Share = n.peers.Shares()[n.cfg.Name]
		info.Capacity = int64(n.cfg.CacheSize)
		entries, bytes := n.peers.Len()
		info.Entries, info.Bytes = int64(entries), int64(bytes)
	case n.memcached != nil:
		info.Kind = grid.CacheMemcached
		info.Servers = n.memcached.Servers()
	default:
		info.Kind = grid.CacheEmbedded
	}
	return info
}

// maxCacheReply bounds the values one shoal.cache.get answers with; the
// keys beyond it are answered as misses.
const maxCacheReply = 16 << 20

// cacheGet serves shoal.cache.get: the values this node holds of the grid
// cache, nil for a key it does not hold.
func (n *Node) cacheGet(ctx context.Context, keys []string) ([][]byte, error) {
	if n.peers == nil {
		return nil, rpc.Errorf(rpc.KindUnavailable, "this node keeps no share of a grid cache (its cache is %s)", n.cacheInfo().Kind)
	}
	found := n.peers.Local().GetMulti(ctx, keys)
	values := make([][]byte, len(keys))
	size := 0
	for i, k := range keys {
		v, ok := found[k]
		if !ok || size+len(v) > maxCacheReply {
			continue
		}
		values[i] = v
		size += len(v)
	}
	return values, nil
}

// cacheSet serves shoal.cache.set: it stores values in this node's share
// of the grid cache, wherever the sender thinks keys belong: during a
// change of members the sender's view and this node's may differ for a
// moment, and a value stored is right under its key wherever it lives.
func (n *Node) cacheSet(ctx context.Context, keys []string, values [][]byte) error {
	if n.peers == nil {
		return rpc.Errorf(rpc.KindUnavailable, "this node keeps no share of a grid cache (its cache is %s)", n.cacheInfo().Kind)
	}
	if len(keys) != len(values) {
		return rpc.Errorf(rpc.KindBadArguments, "shoal.cache.set: %d keys but %d values", len(keys), len(values))
	}
	items := make([]cache.Item, 0, len(keys))
	for i, k := range keys {
		if k == "" || values[i] == nil {
			return rpc.Errorf(rpc.KindBadArguments, "shoal.cache.set: item %d has an empty key or no value", i)
		}
		items = append(items, cache.Item{Key: k, Value: values[i]})
	}
	n.peers.Local().SetMulti(ctx, items)
	return nil
}

// resultComputed queues a cacheable function's result for the cache
// writer; the caller has its reply already and never waits for this.
func (n *Node) resultComputed(fn rpc.FunctionInfo, args []any, result any) {
	if !fn.Cacheable {
		return
	}
	n.cacheBacklog.Add(1)
	select {
	case n.cacheWrites <- cacheWrite{fn: fn, args: args, result: result}:
	default:
		n.cacheBacklog.Add(-1)
		n.cacheDropped.Add(1)
	}
}

// storeResults stores a chunk's results. The node's own share of the grid
// cache takes those it owns at once, in the chunk's goroutine after its
// reply is built: that costs less than queueing them, and nothing is
// dropped. The rest (for other owners, memcached or an embedder's cache)
// go through the writers, as one entry of the queue, so that no reply
// waits on another process.
func (n *Node) storeResults(items []cache.Item) {
	if n.peers != nil {
		if items = n.peers.StoreOwned(n.ctx, items); len(items) == 0 {
			return
		}
	}
	var size int64
	for _, it := range items {
		size += int64(len(it.Key) + len(it.Value))
	}
	if n.cacheQueuedBytes.Add(size) > maxQueuedBytes {
		n.cacheQueuedBytes.Add(-size)
		n.cacheDropped.Add(uint64(len(items)))
		return
	}
	n.cacheBacklog.Add(1)
	select {
	case n.cacheWrites <- cacheWrite{ready: items, size: size}:
	default:
		n.cacheBacklog.Add(-1)
		n.cacheQueuedBytes.Add(-size)
		n.cacheDropped.Add(uint64(len(items)))
	}
}

// FlushCache waits until the results queued for the cache so far have been
// written (or given up on), or ctx ends.
func (n *Node) FlushCache(ctx context.Context) error {
	for n.cacheBacklog.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// writeCache stores queued results in batches until the queue is closed
// (Shutdown) or the node closes.
func (n *Node) writeCache() {
	batch := make([]cache.Item, 0, maxCacheBatch)
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	for {
		var w cacheWrite
		var ok bool
		select {
		case <-n.ctx.Done():
			return
		case w, ok = <-n.cacheWrites:
			if !ok {
				return
			}
		}
		batch = batch[:0]
		taken := 0
		var size int64
		for {
			taken++
			size += w.size
			batch = n.appendWrite(batch, w, enc, &buf)
			if len(batch) >= maxCacheBatch {
				break
			}
			select {
			case w, ok = <-n.cacheWrites:
			default:
				ok = false
			}
			if !ok {
				break
			}
		}
		n.cache.SetMulti(n.ctx, batch)
		clear(batch) // hold no results until the next batch
		n.cacheQueuedBytes.Add(-size)
		n.cacheBacklog.Add(-int64(taken))
	}
}

// appendWrite adds w's results to batch: a chunk's as they are, a single
// call's with its key and encoded result.
func (n *Node) appendWrite(batch []cache.Item, w cacheWrite, enc *msgpack.Encoder, buf *bytes.Buffer) []cache.Item {
	if w.ready != nil {
		return append(batch, w.ready...)
	}
	key, err := cache.Key(w.fn.Name, w.fn.Version, w.args...)
	buf.Reset()
	if err == nil {
		err = enc.Encode(w.result)
	}
	if err != nil {
		n.log.Debug("result not cacheable", "function", w.fn.Name, "err", err)
		return batch
	}
	return append(batch, cache.Item{Key: key, Value: bytes.Clone(buf.Bytes())})
}

// followCacheRing points the grid cache at the members that offer it
// memory, or a gossip cache ring at the memcached servers the live members
// offer.
func (n *Node) followCacheRing() {
	if n.peers != nil {
		peers := grid.NewView(n.Members(), nil).CachePeers()
		if n.peers.SetPeers(n.cfg.Name, peers...) {
			n.log.Info("grid cache follows the members", "peers", peers)
		}
		return
	}
	if n.cfg.CacheRing != "gossip" {
		return
	}
	var servers []string
	for _, m := range n.Members() {
		if m.CacheAddr != "" && !m.Gone() {
			servers = append(servers, m.CacheAddr)
		}
	}
	sort.Strings(servers)
	servers = slices.Compact(servers)
	if slices.Equal(servers, n.memcached.Servers()) {
		return
	}
	if err := n.memcached.SetServers(servers...); err != nil {
		n.log.Warn("cache ring not updated", "servers", servers, "err", err)
		return
	}
	n.log.Info("cache ring follows the members", "servers", servers)
}

// cacheCollector reports the cache's counters and its servers' breakers.
type cacheCollector Node

var (
	cacheCountDescs = map[string]*prometheus.Desc{
		"hits":      prometheus.NewDesc("shoal_cache_hits_total", "Cache lookups that found a value.", nil, nil),
		"misses":    prometheus.NewDesc("shoal_cache_misses_total", "Cache lookups that found nothing (errors included).", nil, nil),
		"errors":    prometheus.NewDesc("shoal_cache_errors_total", "Failed requests to a cache server.", nil, nil),
		"stored":    prometheus.NewDesc("shoal_cache_stored_total", "Results stored in the cache.", nil, nil),
		"too_large": prometheus.NewDesc("shoal_cache_too_large_total", "Results not stored for exceeding the item size limit.", nil, nil),
		"dropped":   prometheus.NewDesc("shoal_cache_writes_dropped_total", "Results not stored because the write queue was full.", nil, nil),
		"evicted":   prometheus.NewDesc("shoal_cache_evicted_total", "Entries the in-memory cache dropped to make room.", nil, nil),
		"sent":      prometheus.NewDesc("shoal_cache_sent_total", "Results sent to the members that own them in the grid cache.", nil, nil),
		"unsent":    prometheus.NewDesc("shoal_cache_unsent_total", "Results not sent to the member owning them: it failed, or its breaker was open.", nil, nil),
	}
	cacheServerDesc = prometheus.NewDesc("shoal_cache_server_breaker", "1 for each memcached server, or member owning keys of the grid cache, labelled with its breaker state (closed, open, half-open).", []string{"server", "state"}, nil)
	cacheShareDesc  = prometheus.NewDesc("shoal_cache_share", "The fraction of the grid cache's keys this node owns, by its own member view.", nil, nil)

	cacheBytesDesc   = prometheus.NewDesc("shoal_cache_bytes", "Bytes the in-memory cache holds by its own count: keys, values, free space of its segments, index and bookkeeping.", nil, nil)
	cacheEntriesDesc = prometheus.NewDesc("shoal_cache_entries", "Entries in the in-memory cache.", nil, nil)
)

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range cacheCountDescs {
		ch <- d
	}
	ch <- cacheServerDesc
	ch <- cacheBytesDesc
	ch <- cacheEntriesDesc
	ch <- cacheShareDesc
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	n := (*Node)(c)
	if n.cache == nil {
		return
	}
	st := n.cache.Stats()
	for name, v := range map[string]uint64{
		"hits": st.Hits, "misses": st.Misses, "errors": st.Errors, "stored": st.Stored,
		"too_large": st.TooLarge + n.cacheTooLarge.Load(), "dropped": n.cacheDropped.Load(), "evicted": st.Evicted,
		"sent": st.Sent, "unsent": st.Unsent,
	} {
		ch <- prometheus.MustNewConstMetric(cacheCountDescs[name], prometheus.CounterValue, float64(v))
	}
	if mem, ok := n.cache.(interface{ Len() (entries, bytes int) }); ok {
		entries, bytes := mem.Len()
		ch <- prometheus.MustNewConstMetric(cacheBytesDesc, prometheus.GaugeValue, float64(bytes))
		ch <- prometheus.MustNewConstMetric(cacheEntriesDesc, prometheus.GaugeValue, float64(entries))
	}
	if n.peers != nil {
		ch <- prometheus.MustNewConstMetric(cacheShareDesc, prometheus.GaugeValue, n.peers.Shares()[n.cfg.Name])
	}
	for _, s := range st.Servers {
		ch <- prometheus.MustNewConstMetric(cacheServerDesc, prometheus.GaugeValue, 1, s.Addr, s.Breaker)
	}
}

// CacheStats returns the counters of the node's result cache.
func (n *Node) CacheStats() cache.Stats { return n.cache.Stats() }

// gridCacheBytes is the memory the node offers the grid cache: its
// CacheSize when it keeps a share, else none.
func (n *Node) gridCacheBytes() int64 {
	if n.peers == nil {
		return 0
	}
	return int64(n.cfg.CacheSize)
}
