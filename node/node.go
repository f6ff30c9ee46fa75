// Package node runs one peer of a Shoal grid: a memberlist gossip member
// beside an RPC server whose user functions run on a bounded executor, and
// an HTTP endpoint for health, readiness, Prometheus metrics and the member
// list.
//
//	n, err := node.New(node.DefaultConfig())
//	n.Register("square", func(x int) int { return x * x }, rpc.Cacheable())
//	err = n.Start(ctx)            // listens, gossips, joins cfg.Join
//	defer n.Shutdown(context.Background())
//
// Besides the rpc package's built-ins, a node serves shoal.members (every
// member it knows, with state and load) and shoal.functions (the functions
// the grid offers and which nodes offer each).
//
// Membership comes from memberlist. Its callbacks only queue events; one
// goroutine owned by the node handles them, so nothing calls back into
// memberlist from inside a callback.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/rpc"
	"github.com/shoalgrid/shoal/scheduler"
)

// Member is one member of the grid as a node sees it.
type Member struct {
	Name      string `msgpack:"name" json:"name"`             // unique in the grid
	Gossip    string `msgpack:"gossip" json:"gossip"`         // memberlist address
	RPC       string `msgpack:"rpc" json:"rpc"`               // msgpack-rpc address
	HTTP      string `msgpack:"http" json:"http,omitempty"`   // health and metrics address
	State     string `msgpack:"state" json:"state"`           // alive, suspect, dead or left
	Slots     int    `msgpack:"slots" json:"slots"`           // calls it runs at once
	Running   int    `msgpack:"running" json:"running"`       // calls running, as last gossiped
	Queued    int    `msgpack:"queued" json:"queued"`         // calls waiting for a slot
	Digest    string `msgpack:"digest" json:"digest"`         // names the member's function set
	CacheAddr string `msgpack:"cache" json:"cache,omitempty"` // the memcached it offers, if any
	Version   string `msgpack:"version" json:"version"`       // its Shoal version
}

// Member states.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
)

// GridFunction is a function offered in the grid and the live nodes that
// offer it, as shoal.functions returns.
type GridFunction struct {
	rpc.FunctionInfo `msgpack:",inline"`
	Nodes            []string `msgpack:"nodes" json:"nodes"` // names of the live members offering it
}

// Node is one peer of a grid. Make it with New, register functions, Start
// it, and stop it with Shutdown (graceful) or Close.
type Node struct {
	cfg     Config
	version string
	log     *slog.Logger
	srv     *rpc.Server
	exec    *Executor
	pool    *rpc.Pool
	metrics *metrics

	rpcListener  net.Listener
	httpListener net.Listener
	httpServer   *http.Server
	ml           *memberlist.Memberlist

	cache        cache.Cache
	memcached    *cache.Memcached // the cache, when it is memcached
	ownsCache    bool
	cacheWrites  chan cacheWrite
	cacheDropped atomic.Uint64
	cacheBacklog atomic.Int64 // results queued or being written
	cacheWriter  sync.WaitGroup
	closeWrites  sync.Once

	events chan memberEvent
	resync atomic.Bool        // set when the event queue overflowed
	ctx    context.Context    // ends when the node closes
	stop   context.CancelFunc // ends ctx, stopping the node's goroutines
	wg     sync.WaitGroup     // the node's goroutines

	started  atomic.Bool
	ready    atomic.Bool
	draining atomic.Bool
	stopOnce sync.Once

	metaMu   sync.Mutex
	lastMeta meta // what NodeMeta hands memberlist

	gossipAddr string

	mu        sync.Mutex
	view      map[string]*viewMember        // every member seen, by name
	described map[string][]rpc.FunctionInfo // function lists by digest
	fetching  map[string]chan struct{}      // digests being described
}

// viewMember is a member as the event loop last saw it. memberlist's own
// Members() hands out pointers it goes on writing to, which is a data
// race, so the node keeps this copy instead.
type viewMember struct {
	Member
	since        time.Time // when it was last seen joining, updating or leaving
	suspectUntil time.Time // this node suspects it until then, unless it is declared dead first
	leaving      bool      // it announced a graceful leave
}

func leavingFlag(node *memberlist.Node) bool {
	md, err := decodeMeta(node.Meta)
	return err == nil && md.Leaving
}

type memberEvent struct {
	kind memberlist.NodeEventType
	node memberlist.Node
}

// New checks cfg and returns a node that is not yet listening. version is
// the Shoal version it advertises.
func New(cfg Config, version string) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		version:     version,
		log:         cfg.Logger,
		exec:        NewExecutor(cfg.Slots, cfg.QueueSize),
		events:      make(chan memberEvent, 1024),
		cacheWrites: make(chan cacheWrite, cfg.CacheQueue),
		view:        make(map[string]*viewMember),
		described:   make(map[string][]rpc.FunctionInfo),
		fetching:    make(map[string]chan struct{}),
	}
	n.ctx, n.stop = context.WithCancel(context.Background())
	if err := n.newCache(); err != nil {
		return nil, err
	}
	n.metrics = newMetrics(n)
	rpcCfg := cfg.RPC
	rpcCfg.Admit = func(ctx context.Context, fn rpc.FunctionInfo) (func(), error) {
		return n.exec.Acquire(ctx)
	}
	rpcCfg.Observe = n.metrics.observeCall
	rpcCfg.Completed = n.resultComputed
	n.srv = rpc.NewServer(rpcCfg)
	if err := n.srv.RegisterSystem("shoal.members", func() []Member { return n.Members() },
		rpc.WithDoc("every member this node knows, with state and load")); err != nil {
		return nil, err
	}
	if err := n.srv.RegisterSystem("shoal.functions", func(ctx context.Context) []GridFunction { return n.Functions(ctx) },
		rpc.WithDoc("the functions the grid offers and the live nodes that offer each")); err != nil {
		return nil, err
	}
	if err := n.srv.RegisterSystem("shoal.cache", n.cacheServers,
		rpc.WithDoc("the memcached servers this node writes results to; none for an in-memory cache")); err != nil {
		return nil, err
	}
	if err := n.srv.RegisterSystem(scheduler.MapMethod, n.mapChunk,
		rpc.WithDoc("runs a chunk of items of one function in one executor slot")); err != nil {
		return nil, err
	}
	n.pool = rpc.NewPool(rpc.ClientConfig{Token: cfg.RPC.Token, TLS: cfg.PeerTLS, Logger: cfg.Logger})
	return n, nil
}

// Register makes fn callable on this node; see rpc.Server.Register. A
// function registered after Start is announced to the grid with the next
// load update.
func (n *Node) Register(name string, fn any, opts ...rpc.FuncOption) error {
	return n.srv.Register(name, fn, opts...)
}

// RegisterObject registers the exported methods of obj as prefix.Method;
// see rpc.Server.RegisterObject.
func (n *Node) RegisterObject(prefix string, obj any, opts ...rpc.FuncOption) error {
	return n.srv.RegisterObject(prefix, obj, opts...)
}

// Name returns the node's name in the grid (known once Start has run).
func (n *Node) Name() string { return n.cfg.Name }

// RPCAddr returns the address the node serves msgpack-rpc on.
func (n *Node) RPCAddr() string { return n.rpcListener.Addr().String() }

// HTTPAddr returns the address of the node's HTTP endpoint, or "".
func (n *Node) HTTPAddr() string {
	if n.httpListener == nil {
		return ""
	}
	return n.httpListener.Addr().String()
}

// GossipAddr returns the address the node gossips on.
func (n *Node) GossipAddr() string { return n.gossipAddr }

// Executor returns the executor that runs the node's user functions.
func (n *Node) Executor() *Executor { return n.exec }

// Ready reports whether the node has joined and serves calls.
func (n *Node) Ready() bool { return n.ready.Load() && !n.draining.Load() }

// Start listens for RPC and HTTP, starts gossip and joins cfg.Join,
// retrying with backoff until a seed answers or ctx or cfg.JoinTimeout
// ends. On error everything it started is stopped again.
func (n *Node) Start(ctx context.Context) error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("node: already started")
	}
	if err := n.start(ctx); err != nil {
		n.Close()
		return err
	}
	n.ready.Store(true)
	return nil
}

func (n *Node) start(ctx context.Context) error {
	var err error
	if n.rpcListener, err = net.Listen("tcp", n.cfg.RPCAddr); err != nil {
		return fmt.Errorf("node: rpc: %w", err)
	}
	if n.cfg.HTTPAddr != "" {
		if n.httpListener, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("node: http: %w", err)
		}
	}
	if n.cfg.Name == "" {
		n.cfg.Name = defaultName(n.RPCAddr())
	}
	n.lastMeta = n.currentMeta()
	if _, err := n.lastMeta.encode(); err != nil {
		return err
	}

	mlc, err := n.memberlistConfig()
	if err != nil {
		return err
	}
	if n.ml, err = memberlist.Create(mlc); err != nil {
		return fmt.Errorf("node: gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	// Read once, before anyone can gossip about this node: memberlist
	// rewrites its own node's fields later.
	ln := n.ml.LocalNode()
	n.gossipAddr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	// The node lists itself from the start, not only once the event loop
	// has seen its own join: a client dialling right after Start must find
	// this node's functions.
	self := toMember(ln)
	n.mu.Lock()
	n.view[self.Name] = &viewMember{Member: self, since: time.Now()}
	n.mu.Unlock()

	n.goFunc(func() {
		if err := n.srv.Serve(n.rpcListener); err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			n.log.Error("rpc server stopped", "err", err)
		}
	})
	if n.httpListener != nil {
		n.httpServer = &http.Server{Handler: n.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		n.goFunc(func() {
			if err := n.httpServer.Serve(n.httpListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("http server stopped", "err", err)
			}
		})
	}
	n.goFunc(n.eventLoop)
	n.goFunc(n.gossipLoad)
	for i := 0; i < cacheWriters; i++ {
		n.cacheWriter.Add(1)
		n.goFunc(func() {
			defer n.cacheWriter.Done()
			n.writeCache()
		})
	}

	n.log.Info("node started", "name", n.cfg.Name, "gossip", n.GossipAddr(), "rpc", n.RPCAddr(),
		"http", n.HTTPAddr(), "slots", n.exec.Slots(), "encrypted", len(n.cfg.GossipKey) > 0, "version", n.version)
	if len(n.cfg.Join) > 0 {
		return n.join(ctx)
	}
	return nil
}

// goFunc runs f in a goroutine that Shutdown and Close wait for.
func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) memberlistConfig() (*memberlist.Config, error) {
	host, portText, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("node: gossip port %q: %w", portText, err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = n.cfg.Name
	c.BindAddr = host
	c.BindPort = port
	c.AdvertiseAddr = host
	c.AdvertisePort = port
	t := n.cfg.Timing
	c.ProbeInterval = t.ProbeInterval
	c.ProbeTimeout = t.ProbeTimeout
	c.SuspicionMult = t.SuspicionMult
	c.GossipInterval = t.GossipInterval
	c.PushPullInterval = t.PushPullInterval
	c.DeadNodeReclaimTime = t.DeadNodeReclaimTime
	c.TCPTimeout = max(10*t.ProbeTimeout, time.Second)
	c.GossipToTheDeadTime = max(t.PushPullInterval, 10*t.ProbeInterval)
	c.SecretKey = n.cfg.GossipKey
	c.Delegate = (*metaDelegate)(n)
	c.Events = (*eventDelegate)(n)
	c.Logger = log.New(&logBridge{log: n.log, suspect: n.suspect, closing: func() bool { return n.ctx.Err() != nil }}, "", 0)
	return c, nil
}

// join keeps trying the seeds, backing off with jitter, until one answers.
func (n *Node) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		joined, err := n.ml.Join(n.cfg.Join)
		if joined > 0 {
			n.log.Info("joined the grid", "through", joined, "members", n.ml.NumMembers())
			return nil
		}
		reason := joinFailure(err)
		wait := backoff/2 + rand.N(backoff)
		n.log.Warn("join failed; retrying", "seeds", strings.Join(n.cfg.Join, ","), "err", reason, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: could not join through %s within %v: %s", strings.Join(n.cfg.Join, ","), n.cfg.JoinTimeout, reason)
		case <-n.ctx.Done():
			return errors.New("node: closed while joining")
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// joinFailure explains a failed join, pointing at the gossip key when the
// failure looks like one.
func joinFailure(err error) string {
	if err == nil {
		return "no seed answered"
	}
	s := strings.Join(strings.Fields(err.Error()), " ") // memberlist's errors span lines
	lower := strings.ToLower(s)
	if strings.Contains(lower, "decrypt") || strings.Contains(lower, "encrypt") || strings.Contains(lower, "keyring") {
		return s + " (do all members use the same --gossip-key?)"
	}
	return s
}

// Shutdown leaves the grid gracefully: the node stops being ready, tells
// the others it is leaving, refuses new calls (Unavailable, which callers
// retry elsewhere), lets the calls in flight finish within
// cfg.DrainTimeout or ctx, and then stops. It returns an error if calls had
// to be cut short.
func (n *Node) Shutdown(ctx context.Context) error {
	n.draining.Store(true)
	if n.ml != nil {
		// memberlist tells others that a member is gone but not whether it
		// left or died; the leaving flag in the metadata, gossiped first,
		// tells them.
		wait := max(time.Second, 10*n.cfg.Timing.GossipInterval)
		n.announce(wait)
		if err := n.ml.Leave(wait); err != nil {
			n.log.Warn("leave broadcast incomplete", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	drainErr := n.srv.Shutdown(ctx)
	if drainErr != nil {
		drainErr = fmt.Errorf("node: drain cut short: %w", drainErr)
	} else {
		// No call can complete any more: let the writer store what the
		// drained calls computed.
		n.closeWrites.Do(func() { close(n.cacheWrites) })
		flushed := make(chan struct{})
		go func() {
			n.cacheWriter.Wait()
			close(flushed)
		}()
		select {
		case <-flushed:
		case <-ctx.Done():
		}
	}
	return errors.Join(drainErr, n.Close())
}

// Close stops the node at once: running calls are canceled and gossip
// stops without a leave message, as if the process had died. It returns
// once every goroutine the node started has finished, and is safe to call
// more than once.
func (n *Node) Close() error {
	var err error
	n.stopOnce.Do(func() {
		n.ready.Store(false)
		n.stop()
		n.srv.Close()
		if n.rpcListener != nil {
			n.rpcListener.Close()
		}
		if n.httpServer != nil {
			n.httpServer.Close()
		} else if n.httpListener != nil {
			n.httpListener.Close()
		}
		if n.ml != nil {
			err = n.ml.Shutdown()
		}
		n.pool.Close()
		n.wg.Wait()
		if n.ownsCache {
			n.cache.Close()
		}
	})
	return err
}

// currentMeta is the metadata the node would gossip now.
func (n *Node) currentMeta() meta {
	running, queued := n.exec.Load()
	return meta{
		RPC:     n.RPCAddr(),
		HTTP:    n.HTTPAddr(),
		Slots:   n.exec.Slots(),
		Running: running,
		Queued:  queued,
		Cache:   n.cfg.CacheAddr,
		Digest:  functionDigest(n.srv.Functions()),
		Version: n.version,
		Leaving: n.draining.Load(),
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

func (n *Node) forgetGone() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, v := range n.view {
		if (v.State == StateDead || v.State == StateLeft) && time.Since(v.since) > n.cfg.ForgetAfter {
			delete(n.view, name)
		}
	}
}

// suspect records that this node's probe of name failed. memberlist
// declares the member dead if it does not refute the suspicion in time;
// if it is still alive after the longest suspicion timeout, it refuted.
func (n *Node) suspect(name string) {
	t := n.cfg.Timing
	n.mu.Lock()
	defer n.mu.Unlock()
	scale := max(1, math.Log10(float64(len(n.view))))
	window := time.Duration(6 * float64(t.SuspicionMult) * scale * float64(t.ProbeInterval))
	if v := n.view[name]; v != nil && v.State == StateAlive {
		v.suspectUntil = time.Now().Add(window)
	}
}

// eventLoop handles membership events one at a time, off memberlist's
// goroutines.
func (n *Node) eventLoop() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case ev := <-n.events:
			n.handleEvent(ev)
			n.followCacheRing()
		}
		if n.resync.Swap(false) {
			n.log.Warn("membership events overflowed; some member updates were lost until the next change")
		}
	}
}

func (n *Node) handleEvent(ev memberEvent) {
	m := toMember(&ev.node)
	n.mu.Lock()
	if ev.kind == memberlist.NodeLeave {
		m.State = StateDead
		if last := n.view[m.Name]; last != nil && last.leaving {
			m.State = StateLeft
		}
	}
	n.view[m.Name] = &viewMember{Member: m, since: time.Now(), leaving: leavingFlag(&ev.node)}
	n.mu.Unlock()
	switch ev.kind {
	case memberlist.NodeJoin, memberlist.NodeUpdate:
		if ev.kind == memberlist.NodeJoin {
			n.log.Info("member joined", "name", m.Name, "rpc", m.RPC, "gossip", m.Gossip)
		}
		n.mu.Lock()
		_, known := n.described[m.Digest]
		n.mu.Unlock()
		if !known && m.Digest != "" && m.RPC != "" && m.Name != n.cfg.Name {
			n.goFunc(func() {
				ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
				defer cancel()
				if _, err := n.functionsOf(ctx, m); err != nil {
					n.log.Warn("could not fetch a member's functions", "name", m.Name, "rpc", m.RPC, "err", err)
				}
			})
		}
	case memberlist.NodeLeave:
		n.log.Info("member gone", "name", m.Name, "state", m.State)
	}
}

// Members returns every member the node knows, sorted by name: the live
// ones and, for cfg.ForgetAfter, the dead and left. A live member this node
// is probing without answer shows as suspect.
func (n *Node) Members() []Member {
	now := time.Now()
	n.mu.Lock()
	out := make([]Member, 0, len(n.view))
	for _, v := range n.view {
		m := v.Member
		if m.State == StateAlive && now.Before(v.suspectUntil) {
			m.State = StateSuspect
		}
		if m.Name == n.cfg.Name {
			m.Running, m.Queued = n.exec.Load()
		}
		out = append(out, m)
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func toMember(node *memberlist.Node) Member {
	m := Member{
		Name:   node.Name,
		Gossip: net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port))),
		State:  StateAlive, // memberlist does not keep Node.State current; events say more
	}
	if md, err := decodeMeta(node.Meta); err == nil {
		m.RPC, m.HTTP, m.Slots, m.Running, m.Queued = md.RPC, md.HTTP, md.Slots, md.Running, md.Queued
		m.Digest, m.CacheAddr, m.Version = md.Digest, md.Cache, md.Version
	}
	return m
}

// functionsOf returns a member's function list, fetching it with
// shoal.describe the first time its digest is seen. Members with the same
// function set share one fetch.
func (n *Node) functionsOf(ctx context.Context, m Member) ([]rpc.FunctionInfo, error) {
	if m.Name == n.cfg.Name {
		return n.srv.Functions(), nil
	}
	for {
		n.mu.Lock()
		if fns, ok := n.described[m.Digest]; ok {
			n.mu.Unlock()
			return fns, nil
		}
		wait, busy := n.fetching[m.Digest]
		if !busy {
			wait = make(chan struct{})
			n.fetching[m.Digest] = wait
		}
		n.mu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		var fns []rpc.FunctionInfo
		err := n.pool.Call(ctx, m.RPC, "shoal.describe", &fns)
		n.mu.Lock()
		delete(n.fetching, m.Digest)
		if err == nil {
			// File the list under its own digest: the member may have
			// registered a function since it gossiped the one asked for,
			// and other members still share that one.
			n.described[functionDigest(fns)] = fns
		}
		n.mu.Unlock()
		close(wait)
		return fns, err
	}
}

// Functions returns the functions offered by the live members, with the
// nodes that offer each, sorted by name.
func (n *Node) Functions(ctx context.Context) []GridFunction {
	byName := make(map[string]*GridFunction)
	for _, m := range n.Members() {
		if m.State != StateAlive {
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
				g = &GridFunction{FunctionInfo: f}
				byName[f.Name] = g
			}
			g.Nodes = append(g.Nodes, m.Name)
		}
	}
	out := make([]GridFunction, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
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

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// eventDelegate queues memberlist's events for the event loop; it never
// blocks and never calls memberlist. When the queue is full it asks the
// loop to re-read the member list instead.
type eventDelegate Node

func (d *eventDelegate) queue(kind memberlist.NodeEventType, node *memberlist.Node) {
	select {
	case d.events <- memberEvent{kind: kind, node: *node}:
	default:
		d.resync.Store(true)
	}
}

func (d *eventDelegate) NotifyJoin(node *memberlist.Node)   { d.queue(memberlist.NodeJoin, node) }
func (d *eventDelegate) NotifyLeave(node *memberlist.Node)  { d.queue(memberlist.NodeLeave, node) }
func (d *eventDelegate) NotifyUpdate(node *memberlist.Node) { d.queue(memberlist.NodeUpdate, node) }

// logBridge sends memberlist's log lines ("[LEVEL] memberlist: ...") to
// slog at the matching level. memberlist reports a failed probe only in its
// log, so the bridge also passes the suspected member's name on.
type logBridge struct {
	log     *slog.Logger
	suspect func(name string)
	closing func() bool // once true, memberlist's complaints about closed sockets are expected
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for tag, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, tag) {
			level = l
			line = strings.TrimSpace(strings.TrimPrefix(line, tag))
			break
		}
	}
	if level > slog.LevelInfo && b.closing() {
		level = slog.LevelDebug
	}
	b.log.Log(context.Background(), level, line, "component", "memberlist")
	if rest, ok := strings.CutPrefix(line, "memberlist: Suspect "); ok {
		if name, _, ok := strings.Cut(rest, " has failed, no acks received"); ok {
			b.suspect(name)
		}
	}
	return len(p), nil
}

var _ io.Writer = (*logBridge)(nil)
