package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
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
	// HTTPAddr serves /healthz, /readyz, /metrics and /members; empty turns
	// HTTP off. Default: 127.0.0.1:8787.
	HTTPAddr string
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
	// member must use the same key. Default: none (plain gossip).
	GossipKey []byte
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
	// RPC configures the RPC server: token, TLS, limits (MaxInFlightBytes
	// bounds the bytes the node's calls hold). Its Admit is set by the
	// node, and its MaxCompletedSize, unless given, to the largest value
	// the node's cache stores. Default: rpc's defaults.
	RPC rpc.ServerConfig
	// PeerTLS, when set, is used to call other members over TLS (to fetch
	// their function lists). Default: plain TCP.
	PeerTLS *tls.Config
	// DrainTimeout bounds how long Shutdown waits for calls in flight.
	// Default: 30s.
	DrainTimeout time.Duration
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
	}
}

// FastTiming suits tests and a grid on one machine: probes every 100ms, a
// killed member is marked dead within about a second, at the cost of ten
// times the gossip traffic.
func FastTiming() Timing {
	return Timing{
		ProbeInterval:       100 * time.Millisecond,
		ProbeTimeout:        50 * time.Millisecond,
		SuspicionMult:       2,
		GossipInterval:      20 * time.Millisecond,
		PushPullInterval:    2 * time.Second,
		DeadNodeReclaimTime: time.Second,
		LoadInterval:        100 * time.Millisecond,
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
		CacheSize:    64 << 20,
		CacheQueue:   1 << 16,
		CacheTimeout: cache.DefaultTimeout,
	}
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
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = d.ForgetAfter
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
	for _, a := range []struct{ name, addr string }{{"gossip", c.GossipAddr}, {"rpc", c.RPCAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return c, fmt.Errorf("node: %s address %q: %w", a.name, a.addr, err)
		}
	}
	if c.Timing.ProbeInterval <= 0 || c.Timing.ProbeTimeout <= 0 || c.Timing.GossipInterval <= 0 ||
		c.Timing.SuspicionMult <= 0 || c.Timing.PushPullInterval <= 0 || c.Timing.LoadInterval <= 0 {
		return c, errors.New("node: every Timing field must be positive")
	}
	return c, nil
}

func defaultName(rpcAddr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "shoal"
	}
	_, port, _ := net.SplitHostPort(rpcAddr)
	return host + "-" + port
}
