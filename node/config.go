package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/shoalgrid/shoal/cache"
	"github.com/shoalgrid/shoal/rpc"
)

// Config configures a Node. Start from DefaultConfig or FastConfig; every
// field's doc gives the default.
type Config struct {
	// Name identifies the node in the grid and must be unique among the
	// live members. Default: "<hostname>-<rpc port>".
	Name string
	// GossipAddr is the HOST:PORT memberlist binds for gossip, UDP and TCP
	// alike, and advertises. Default: 127.0.0.1:7946.
	GossipAddr string
	// RPCAddr is where the node serves msgpack-rpc. Port 0 picks a free
	// port. Default: 127.0.0.1:7373.
	RPCAddr string
	// Advertise is the host (an IP address or a name) the other members
	// and clients dial for this node's gossip, RPC and HTTP ports, when it
	// differs from the bound one: the node binds every interface (0.0.0.0
	// in a container), or others reach it through an address it cannot see
	// (a NAT, a pod IP). The ports are the bound ones. Gossip needs an IP,
	// so a name is looked up once at start for it. Default: each bound
	// host, and for an unspecified one (0.0.0.0, ::) the address of the
	// interface holding the default route; without such a route the node
	// refuses to start rather than advertise an address nobody can dial.
	Advertise string
	// HTTPAddr serves /healthz, /readyz, /metrics and /members; empty turns
	// HTTP off. Default: 127.0.0.1:8787.
	HTTPAddr string
	// HTTPIdleTimeout closes a keep-alive HTTP connection that has waited
	// this long for its next request. Default: 1 minute.
	HTTPIdleTimeout time.Duration
	// HTTPWriteTimeout bounds writing one HTTP response, so that a client
	// that stops reading cannot hold a connection. Default: 30s.
	HTTPWriteTimeout time.Duration
	// Join lists gossip addresses of members to join through. Empty starts
	// a new grid. Default: none.
	Join []string
	// JoinTimeout bounds how long Start keeps retrying the seeds.
	// Default: 1 minute.
	JoinTimeout time.Duration
	// Slots is how many calls to user functions run at once.
	// Default: the number of CPUs.
	Slots int
	// QueueSize is how many calls may wait for a slot; beyond it calls get
	// an Overloaded error. Default: 64 per slot.
	QueueSize int
	// GossipKey encrypts gossip with AES-GCM (16, 24 or 32 bytes); every
	// member must use the same key. A member without it cannot join.
	// Default: none (plain gossip).
	GossipKey []byte
	// GossipKeys are further keys (16, 24 or 32 bytes each) accepted for
	// gossip from other members, while GossipKey encrypts what this node
	// sends: holding the old and the new key at once is what lets a grid
	// change its key by rolling restarts. Needs GossipKey. Default: none.
	GossipKeys [][]byte
	// Insecure lets the node start where it would otherwise refuse to,
	// because strangers could get in: with RPC.Token but no GossipKey (any
	// process that reaches the gossip port could join, be sent the token
	// by clients and answer their calls), with the gossip address beyond
	// loopback and no GossipKey, or with the RPC address beyond loopback
	// and no RPC.Token. The node logs what it exposes. Default: false.
	Insecure bool
	// CacheAddr is the HOST:PORT of a memcached this node offers to the
	// grid's result cache, advertised in its metadata. Default: none.
	CacheAddr string
	// Memcached lists the memcached servers (HOST:PORT) the node writes
	// results of cacheable functions to. Default: none.
	Memcached []string
	// CacheTimeout bounds each request to a memcached server.
	// Default: cache.DefaultTimeout (500ms).
	CacheTimeout time.Duration
	// CacheRing chooses the memcached servers: "static" uses Memcached,
	// "gossip" the CacheAddr of every live member, following membership.
	// Default: "static".
	CacheRing string
	// CacheSize bounds the in-memory cache used when no memcached is
	// configured, in bytes. Default: 64 MiB.
	CacheSize int
	// Cache, when set, is the cache the node writes results to, shared
	// with its owner (nodes of one process, say); the other cache fields
	// are then ignored and the node does not close it. Default: none.
	Cache cache.Cache
	// CacheQueue bounds the results waiting to be written to the cache;
	// beyond it results are dropped and counted, never waited for.
	// Default: 65536.
	CacheQueue int
	// Timing sets how fast failures are detected. Default: LANTiming().
	Timing Timing
	// MaxConns bounds the RPC connections open at once: one accepted
	// beyond it is closed at once and counted, and /readyz reports not
	// ready while the node is at it. Negative means no bound. Default:
	// DefaultMaxConns(), derived from the process's limit on open files.
	MaxConns int
	// RPC configures the RPC server: token, TLS, limits (MaxInFlightBytes
	// bounds the bytes the node's calls hold). Its Admit, Observe,
	// Completed and MaxConns are set by the node, and its
	// MaxCompletedSize, unless given, to the largest value the node's
	// cache stores. Default: rpc's defaults.
	RPC rpc.ServerConfig
	// PeerTLS, when set, is used to call other members over TLS (to fetch
	// their function lists). Default: plain TCP.
	PeerTLS *tls.Config
	// DrainTimeout bounds how long Shutdown waits for calls in flight.
	// Default: 30s.
	DrainTimeout time.Duration
	// DataDir is where the node keeps the inputs and results of the jobs
	// it coordinates, under jobs/, removing those an earlier run left.
	// Default: a temporary directory, removed when the node closes.
	DataDir string
	// JobRetention is how long a job that ended stays listed, with its
	// results readable, before its files are removed. Default: 24h.
	JobRetention time.Duration
	// ForgetAfter is how long dead and left members stay listed.
	// Default: 10 minutes.
	ForgetAfter time.Duration
	// Logger receives the node's logs, memberlist's included.
	// Default: slog.Default().
	Logger *slog.Logger
}

// Timing holds the memberlist settings that decide how quickly a node
// notices a failed member and how much gossip that costs.
type Timing struct {
	// ProbeInterval is how often each member probes a random other.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an answer.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared dead: SuspicionMult * log10(members) * ProbeInterval.
	SuspicionMult int
	// GossipInterval is how often state changes are gossiped.
	GossipInterval time.Duration
	// PushPullInterval is how often full state is exchanged with a member.
	PushPullInterval time.Duration
	// DeadNodeReclaimTime is how soon a dead member's name may be taken by
	// a node at a new address (a restarted pod, say). A member that left
	// gracefully can be replaced at once.
	DeadNodeReclaimTime time.Duration
	// LoadInterval is how often a change in the node's load is gossiped.
	LoadInterval time.Duration
	// ReconnectInterval is how often the node tries to reach one member it
	// has declared dead (not left; for up to 24 hours), or a seed it does
	// not see alive, to join it again. memberlist never contacts a dead member again, so
	// without this the two sides of a healed partition would stay apart.
	// Zero takes the default of the timing it belongs to.
	ReconnectInterval time.Duration
}

// LANTiming suits a LAN: probes every second, a killed member is marked
// dead within about 5 to 10 seconds.
func LANTiming() Timing {
	return Timing{
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		SuspicionMult:       4,
		GossipInterval:      200 * time.Millisecond,
		PushPullInterval:    30 * time.Second,
		DeadNodeReclaimTime: 30 * time.Second,
		LoadInterval:        time.Second,
		ReconnectInterval:   5 * time.Second,
	}
}

// FastTiming suits tests and a grid on one machine: probes every 100ms, a
// killed member is marked dead within about a second, at the cost of ten
// times the gossip traffic. A member must stay silent for at least 300ms
// before it is declared dead: with less, a process starved of CPU for a
// moment on a busy machine (a test run under the race detector, say) was
// declared dead while it lived.
func FastTiming() Timing {
	return Timing{
		ProbeInterval:       100 * time.Millisecond,
		ProbeTimeout:        100 * time.Millisecond,
		SuspicionMult:       3,
		GossipInterval:      20 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		DeadNodeReclaimTime: time.Second,
		LoadInterval:        100 * time.Millisecond,
		ReconnectInterval:   500 * time.Millisecond,
	}
}

// DefaultConfig returns the defaults: loopback addresses on the standard
// ports, LAN timing, one slot per CPU.
func DefaultConfig() Config {
	return Config{
		GossipAddr:   "127.0.0.1:7946",
		RPCAddr:      "127.0.0.1:7373",
		HTTPAddr:     "127.0.0.1:8787",
		JoinTimeout:  time.Minute,
		Slots:        runtime.NumCPU(),
		Timing:       LANTiming(),
		DrainTimeout: 30 * time.Second,
		ForgetAfter:  10 * time.Minute,
		JobRetention: 24 * time.Hour,
		CacheSize:    64 << 20,
		CacheQueue:   1 << 16,
		CacheTimeout: cache.DefaultTimeout,
	}
}

// The HTTP endpoint's timeouts, when Config leaves them zero.
const (
	defaultHTTPIdleTimeout  = time.Minute
	defaultHTTPWriteTimeout = 30 * time.Second
)

// DefaultMaxConns is the default bound on a node's RPC connections,
// derived from the soft limit on open files (RLIMIT_NOFILE) as it is now:
//
//	limit - (64 + limit/8), and at least limit/4
//
// The reserve is for what else the node holds open: its listeners,
// gossip's sockets, connections to memcached and to other members, HTTP
// clients, files. It grows with the limit because a process given many
// descriptors tends to be in a large grid. Under a limit of 256 the bound
// is 160; under 1024, 832; under 65536, 57280. It is 0, no bound, where
// the limit cannot be read (on Windows, say) or is unlimited.
func DefaultMaxConns() int {
	limit, ok := openFileLimit()
	if !ok {
		return 0
	}
	return maxConnsFor(limit)
}

// maxConnsFor is DefaultMaxConns for a limit on open files.
func maxConnsFor(limit uint64) int {
	if limit == 0 || limit > math.MaxInt32 {
		return 0
	}
	l := int(limit)
	return max(l-(64+l/8), l/4, 1)
}

// FastConfig is DefaultConfig with FastTiming and every port picked free,
// for tests and local demos.
func FastConfig() Config {
	c := DefaultConfig()
	c.GossipAddr = "127.0.0.1:0"
	c.RPCAddr = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.JoinTimeout = 10 * time.Second
	c.Timing = FastTiming()
	return c
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.GossipAddr == "" {
		c.GossipAddr = d.GossipAddr
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err == nil {
		return c, fmt.Errorf("node: advertise %q: want a host without a port; the ports advertised are the bound ones", c.Advertise)
	}
	if ip := net.ParseIP(c.Advertise); ip != nil && ip.IsUnspecified() {
		return c, fmt.Errorf("node: advertise %s: an unspecified address cannot be dialed; name an address of this machine the others can reach", c.Advertise)
	}
	if c.RPCAddr == "" {
		c.RPCAddr = d.RPCAddr
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = d.JoinTimeout
	}
	if c.Slots <= 0 {
		c.Slots = d.Slots
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 64 * c.Slots
	}
	if c.Timing == (Timing{}) {
		c.Timing = d.Timing
	}
	if c.Timing.ReconnectInterval <= 0 {
		c.Timing.ReconnectInterval = 5 * c.Timing.ProbeInterval
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = d.ForgetAfter
	}
	if c.JobRetention <= 0 {
		c.JobRetention = d.JobRetention
	}
	if c.CacheSize <= 0 {
		c.CacheSize = d.CacheSize
	}
	if c.CacheQueue <= 0 {
		c.CacheQueue = d.CacheQueue
	}
	switch c.CacheRing {
	case "", "static":
		c.CacheRing = "static"
	case "gossip":
		if len(c.Memcached) > 0 {
			return c, errors.New("node: a gossip cache ring takes its servers from the members; list no memcached servers")
		}
	default:
		return c, fmt.Errorf("node: cache ring %q: want static or gossip", c.CacheRing)
	}
	if c.HTTPIdleTimeout <= 0 {
		c.HTTPIdleTimeout = defaultHTTPIdleTimeout
	}
	if c.HTTPWriteTimeout <= 0 {
		c.HTTPWriteTimeout = defaultHTTPWriteTimeout
	}
	switch {
	case c.MaxConns == 0:
		c.MaxConns = DefaultMaxConns()
	case c.MaxConns < 0:
		c.MaxConns = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.RPC.Logger == nil {
		c.RPC.Logger = c.Logger
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return c, fmt.Errorf("node: gossip key is %d bytes; it must be 16, 24 or 32", len(c.GossipKey))
	}
	for i, k := range c.GossipKeys {
		if len(c.GossipKey) == 0 {
			return c, errors.New("node: further gossip keys need a primary GossipKey to encrypt with")
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return c, fmt.Errorf("node: further gossip key %d is %d bytes; it must be 16, 24 or 32", i+1, n)
		}
	}
	for _, a := range []struct{ name, addr string }{{"gossip", c.GossipAddr}, {"rpc", c.RPCAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return c, fmt.Errorf("node: %s address %q: %w", a.name, a.addr, err)
		}
	}
	if risk, fix := c.exposure(); risk != "" && !c.Insecure {
		return c, fmt.Errorf("node: %s: %s, or start with --insecure (Config.Insecure) to accept that", risk, fix)
	}
	if c.Timing.ProbeInterval <= 0 || c.Timing.ProbeTimeout <= 0 || c.Timing.GossipInterval <= 0 ||
		c.Timing.SuspicionMult <= 0 || c.Timing.PushPullInterval <= 0 || c.Timing.LoadInterval <= 0 {
		return c, errors.New("node: every Timing field must be positive")
	}
	return c, nil
}

// exposure says how strangers could get into a grid of nodes configured
// as c, and what would keep them out; "" when nothing is known to let them
// in. A token is only worth something when the gossip key keeps strangers
// from joining: clients send the token to every member they are told of.
func (c Config) exposure() (risk, fix string) {
	if c.RPC.Token != "" && len(c.GossipKey) == 0 {
		return "a token without a gossip key lets any process that reaches the gossip port join the grid, " +
				"be sent the token by clients and answer their calls",
			"give every member the same gossip key too (--gossip-key-file or --gossip-key)"
	}
	// Each port beyond loopback needs its own secret: a gossip key keeps
	// strangers out of the grid, not away from its functions.
	for _, a := range []struct {
		name, addr, what, secret, fix string
		guarded                       bool
	}{
		{"gossip", c.GossipAddr, "join the grid", "a gossip key", "--gossip-key-file", len(c.GossipKey) > 0},
		{"rpc", c.RPCAddr, "call its functions", "a token", "--token-file", c.RPC.Token != ""},
	} {
		host, _, _ := net.SplitHostPort(a.addr)
		if !a.guarded && !loopbackHost(host) {
			return fmt.Sprintf("the %s address %s is reachable beyond this machine, and without %s anyone who reaches it can %s",
					a.name, a.addr, a.secret, a.what),
				fmt.Sprintf("give the grid a gossip key and a token (--gossip-key-file, --token-file; here %s), or bind to 127.0.0.1", a.fix)
		}
	}
	return "", ""
}

// loopbackHost reports whether host, from a HOST:PORT to bind, names only
// this machine. A name other than localhost is not looked up: it counts
// as beyond loopback, as do "" and 0.0.0.0, which mean every interface.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func defaultName(rpcAddr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "shoal"
	}
	_, port, _ := net.SplitHostPort(rpcAddr)
	return host + "-" + port
}
