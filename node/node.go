// Package node runs one peer of a Shoal grid: a memberlist gossip member
// beside an RPC server whose user functions run on a bounded executor, and
// an HTTP endpoint for health, readiness, Prometheus metrics and the member
// list. It serves the grid protocol of package grid: shoal.members,
// shoal.functions, shoal.cache, shoal.cache.get, shoal.cache.set and
// shoal.map, besides the rpc package's built-ins.
//
//	cfg := node.DefaultConfig()
//	cfg.Join = []string{"127.0.0.1:7946"} // a member's gossip address; none starts a grid
//	n, err := node.New(cfg, "v1.0.0")     // the version it advertises
//	err = n.Register("square", func(x int) int { return x * x }, rpc.Cacheable())
//	err = n.Start(ctx)                    // listens, gossips, joins cfg.Join
//	<-ctx.Done()                          // serve until told to stop
//	err = n.Shutdown(context.Background()) // leave the grid, drain calls in flight
//
// The node's work is split by responsibility: node.go is its lifecycle
// (New, Start, Shutdown, Close), membership.go the member view memberlist
// feeds, meta.go what it gossips about itself, catalogue.go the grid's
// function list, mapper.go shoal.map, cache.go the result cache, http.go
// the HTTP endpoint and metrics.
//
// Membership comes from memberlist. Its callbacks only queue events; one
// goroutine owned by the node handles them, so nothing calls back into
// memberlist from inside a callback.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/dashboard"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/rpc"
)

// Node is one peer of a grid. Make it with New, register functions, Start
// it, and stop it with Shutdown (graceful) or Close.
type Node struct {
	cfg     Config
	version string
	log     *slog.Logger
	srv     *rpc.Server
	exec    *Executor
	pool    *rpc.Pool
	stub    grid.Stub // over pool: the node's calls to other members
	metrics *metrics
	funcs   funcStats // calls of each registered function, for shoal.stats
	dash    *dashboard.Dashboard

	startedAt time.Time // when New made it

	rpcListener  net.Listener
	httpListener net.Listener
	httpServer   *http.Server
	ml           *memberlist.Memberlist

	cache            cache.Cache
	memcached        *cache.Memcached // the cache, when it is memcached
	peers            *cache.Peers     // the cache, when it is the grid cache
	cacheTooLarge    atomic.Uint64    // results not queued for exceeding the cache's item limit
	ownsCache        bool
	cacheWrites      chan cacheWrite
	cacheDropped     atomic.Uint64
	cacheBacklog     atomic.Int64 // results queued or being written
	cacheQueuedBytes atomic.Int64 // bytes of the chunk results queued or being written
	cacheWriter      sync.WaitGroup
	closeWrites      sync.Once

	events eventQueue
	ctx    context.Context    // ends when the node closes
	stop   context.CancelFunc // ends ctx, stopping the node's goroutines
	wg     sync.WaitGroup     // the node's goroutines

	started  atomic.Bool
	ready    atomic.Bool
	draining atomic.Bool
	joining  atomic.Bool                     // Start is joining the grid
	nameHeld atomic.Pointer[memberlist.Node] // a live member holding this node's name, seen while joining
	stopOnce sync.Once

	metaMu   sync.Mutex
	lastMeta meta // what NodeMeta hands memberlist

	gossipAddr string
	adv        advertised // the addresses the grid dials

	mu   sync.Mutex
	view map[string]*viewMember // every member seen, by name
	lost map[string]lostMember  // members declared dead, by name, to reconnect to

	catalogue catalogue
	jobs      *jobs // the map jobs this node coordinates
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
		events:      newEventQueue(),
		cacheWrites: make(chan cacheWrite, cfg.CacheQueue),
		view:        make(map[string]*viewMember),
		lost:        make(map[string]lostMember),
		catalogue:   catalogue{byDigest: make(map[string][]rpc.FunctionInfo)},
	}
	n.startedAt = time.Now()
	n.ctx, n.stop = context.WithCancel(context.Background())
	if err := n.newCache(); err != nil {
		return nil, err
	}
	n.metrics = newMetrics(n)
	rpcCfg := cfg.RPC
	rpcCfg.MaxConns = cfg.MaxConns
	rpcCfg.Admit = func(ctx context.Context, fn rpc.FunctionInfo) (func(), error) {
		return n.exec.Acquire(ctx)
	}
	rpcCfg.Observe = n.observeCall
	rpcCfg.Completed = n.resultComputed
	if rpcCfg.MaxCompletedSize <= 0 {
		rpcCfg.MaxCompletedSize = n.maxCachedSize()
	}
	n.srv = rpc.NewServer(rpcCfg)
	for _, m := range []struct {
		name string
		fn   any
		doc  string
	}{
		{grid.MethodMembers, n.Members, "every member this node knows, with state and load"},
		{grid.MethodFunctions, n.Functions, "the functions the grid offers and the live nodes that offer each"},
		{grid.MethodStats, n.stats, "this node's counters: load, gossip health, calls and latency histograms of each function, the cache's"},
		{grid.MethodCache, n.cacheInfo, "the kind of result cache this node uses (grid, memcached or embedded), its share of the grid cache and its counters"},
		{grid.MethodCacheGet, n.cacheGet, "the values this node holds of the grid cache for the keys given, nil for each it does not hold"},
		{grid.MethodCacheSet, n.cacheSet, "stores values under keys in this node's share of the grid cache"},
		{grid.MethodMap, n.mapChunk, "runs a chunk of items of one function in one executor slot"},
		{grid.MethodJobSubmit, n.submitJob, "starts a map job coordinated by this node and returns its id: [spec] with function, and range or inputs by shoal.job.append"},
		{grid.MethodJobAppend, n.appendJob, "adds inputs to a job: [id, [argument arrays]]; returns the inputs it has in all"},
		{grid.MethodJobClose, n.closeJob, "ends a job's inputs: [id]; returns their number"},
		{grid.MethodJobStatus, n.jobStatus, "a job's state and counts: [id]"},
		{grid.MethodJobResults, n.jobResults, "a job's results in input order: [id, from, max, wait_ms]"},
		{grid.MethodJobCancel, n.cancelJob, "cancels a job: its work stops on every node: [id]"},
		{grid.MethodJobList, n.listJobs, "the jobs this node coordinates or has attached, then those of other nodes as last gossiped (lost when their coordinator is gone)"},
		{grid.MethodJobAttach, n.attachJob, "registers a job its client runs (attached), so that the grid lists it: [info]; returns its id"},
		{grid.MethodJobProgress, n.jobProgress, "an attached job's progress: [info]; the reply asks the client to cancel it"},
	} {
		if err := n.srv.RegisterSystem(m.name, m.fn, rpc.WithDoc(m.doc)); err != nil {
			return nil, err
		}
	}
	// Members call each other with the grid's token. Without PeerTLS it
	// goes in the clear, which a node allows when gossip is keyed: the
	// peers' addresses then come from members holding the key, and the
	// operator who gave a token but no TLS has chosen a trusted network.
	// A node with a token and no key starts only when Insecure.
	if n.dash, err = n.newDashboard(); err != nil {
		return nil, err
	}
	n.pool = rpc.NewPool(rpc.ClientConfig{Token: cfg.RPC.Token, TLS: cfg.PeerTLS, Logger: cfg.Logger,
		AllowPlaintextToken: len(cfg.GossipKey) > 0 || cfg.Insecure})
	n.stub = grid.Stub{Caller: n.pool}
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

// RPCAddr returns the address others dial for the node's msgpack-rpc:
// where it listens, with the host Config.Advertise names or, bound to
// every interface, the default route's address.
func (n *Node) RPCAddr() string { return n.adv.rpc }

// HTTPAddr returns the address others dial for the node's HTTP endpoint,
// advertised as RPCAddr is, or "" without one.
func (n *Node) HTTPAddr() string { return n.adv.http }

// GossipAddr returns the address the node gossips on, as the grid sees it.
func (n *Node) GossipAddr() string { return n.gossipAddr }

// Executor returns the executor that runs the node's user functions.
func (n *Node) Executor() *Executor { return n.exec }

// InFlight returns how many calls the node has accepted and not yet
// answered: running, or waiting for an executor slot.
func (n *Node) InFlight() int { return n.srv.Stats().InFlight }

// Ready reports whether the node has joined and takes new work: it is not
// leaving, its RPC server is accepting connections and it is below
// cfg.MaxConns. /readyz answers the same.
func (n *Node) Ready() bool { return n.notReady() == "" }

// notReady says why the node should be given no new work now, or "".
func (n *Node) notReady() string {
	switch {
	case n.draining.Load():
		return "leaving the grid"
	case !n.ready.Load():
		return "joining the grid"
	case !n.srv.Accepting():
		return "the RPC server is not accepting connections (out of file descriptors?); see the log"
	}
	if limit := n.cfg.MaxConns; limit > 0 {
		if open := n.srv.Stats().Connections; open >= limit {
			return fmt.Sprintf("at the RPC connection limit: %d open, new ones are closed", open)
		}
	}
	return ""
}

// Start listens for RPC and HTTP, starts gossip and joins cfg.Join,
// retrying with backoff until a seed answers or ctx or cfg.JoinTimeout
// ends. It fails at once when a seed is another kind of port (a node's RPC
// or HTTP address) or when a live member already holds this node's name.
// On error everything it started is stopped again.
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
	if n.adv, err = n.advertise(ctx); err != nil {
		return err
	}
	n.initJobs()
	if n.cfg.Name == "" {
		n.cfg.Name = defaultName(n.RPCAddr())
	}
	if n.peers != nil {
		// Until the member events say more, the node owns every key: no
		// result it computes before then is lost for want of an owner.
		n.peers.SetPeers(n.cfg.Name, n.cfg.Name)
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

	// Start returns, and the node reports ready, only once the RPC server
	// waits for connections: until then it is not Accepting.
	rpcListener := &firstAcceptListener{Listener: n.rpcListener, waiting: make(chan struct{})}
	serveEnded := make(chan struct{})
	n.goFunc(func() {
		defer close(serveEnded)
		if err := n.srv.Serve(rpcListener); err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			n.log.Error("rpc server stopped; the node is no longer ready", "err", err)
		}
	})
	select {
	case <-rpcListener.waiting:
	case <-serveEnded:
		return errors.New("node: the rpc server stopped as it started")
	}
	if n.httpListener != nil {
		n.httpServer = &http.Server{
			Handler:           n.httpHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       n.cfg.HTTPIdleTimeout,
			WriteTimeout:      n.cfg.HTTPWriteTimeout,
		}
		// Its event streams would hold a graceful shutdown up.
		n.httpServer.RegisterOnShutdown(n.dash.Close)
		n.goFunc(n.recordLoad)
		serve := func() error { return n.httpServer.Serve(n.httpListener) }
		if n.cfg.RPC.TLS != nil {
			n.httpServer.TLSConfig = n.httpTLS()
			serve = func() error { return n.httpServer.ServeTLS(n.httpListener, "", "") }
		}
		n.goFunc(func() {
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("http server stopped", "err", err)
			}
		})
	}
	n.goFunc(n.eventLoop)
	n.goFunc(n.gossipLoad)
	n.goFunc(n.reconnectLoop)
	n.goFunc(n.jobs.loop)
	for i := 0; i < cacheWriters; i++ {
		n.cacheWriter.Add(1)
		n.goFunc(func() {
			defer n.cacheWriter.Done()
			n.writeCache()
		})
	}

	n.log.Info("node started", "name", n.cfg.Name, "gossip", n.GossipAddr(), "rpc", n.RPCAddr(),
		"http", n.HTTPAddr(), "slots", n.exec.Slots(), "max_conns", n.cfg.MaxConns, "encrypted", len(n.cfg.GossipKey) > 0,
		"token", n.cfg.RPC.Token != "", "tls", n.cfg.RPC.TLS != nil, "version", n.version)
	if risk, fix := n.cfg.exposure(); risk != "" {
		n.log.Warn("running insecure, as --insecure allows: "+risk, "fix", fix)
	}
	if len(n.cfg.Join) > 0 {
		return n.join(ctx)
	}
	return nil
}

// firstAcceptListener closes waiting when Accept is first called: by then
// the server serving it has registered it.
type firstAcceptListener struct {
	net.Listener
	once    sync.Once
	waiting chan struct{}
}

func (l *firstAcceptListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.waiting) })
	return l.Listener.Accept()
}

// goFunc runs f in a goroutine that Shutdown and Close wait for.
func (n *Node) goFunc(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// join keeps trying the seeds, backing off with jitter, until one answers.
// A seed that answers as another kind of port ends the attempt at once
// when no seed is left to try.
func (n *Node) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.JoinTimeout)
	defer cancel()
	n.joining.Store(true)
	defer n.joining.Store(false)
	seeds := strings.Join(n.cfg.Join, ",")
	if n.adv.gossipIP.IsLoopback() {
		for _, seed := range n.cfg.Join {
			if host, _, err := net.SplitHostPort(seed); err == nil && net.ParseIP(host) != nil && !loopbackHost(host) {
				n.log.Warn("this node advertises a loopback address, which members on other machines cannot dial: "+
					"bind to an address they reach, or name one with --advertise", "gossip", n.GossipAddr(), "seed", seed)
				break
			}
		}
	}
	backoff := 100 * time.Millisecond
	for {
		joined, err := n.ml.Join(n.cfg.Join)
		if holder := n.nameHeld.Load(); holder != nil {
			return fmt.Errorf("node: the name %q is taken by a live member at %s: give this node another name",
				n.cfg.Name, net.JoinHostPort(holder.Addr.String(), strconv.Itoa(int(holder.Port))))
		}
		if joined > 0 {
			n.log.Info("joined the grid", "through", joined, "members", n.ml.NumMembers())
			return nil
		}
		reason := joinFailure(err)
		if wrong := n.wrongSeeds(ctx); len(wrong) == len(n.cfg.Join) {
			return fmt.Errorf("node: cannot join through %s: %s", seeds, strings.Join(wrong, "; "))
		} else if len(wrong) > 0 {
			reason += " (" + strings.Join(wrong, "; ") + ")"
		}
		wait := backoff/2 + rand.N(backoff)
		n.log.Warn("join failed; retrying", "seeds", seeds, "err", reason, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: could not join through %s within %v: %s", seeds, n.cfg.JoinTimeout, reason)
		case <-n.ctx.Done():
			return errors.New("node: closed while joining")
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
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
		n.dash.Close()
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
		if n.jobs != nil {
			n.jobs.close()
		}
		if n.ownsCache {
			n.cache.Close()
		}
	})
	return err
}
