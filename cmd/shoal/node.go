package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal/internal/builtins"
	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

type nodeOptions struct {
	name           string
	gossipAddr     string
	rpcAddr        string
	httpAddr       string
	advertise      string
	join           []string
	joinTimeout    time.Duration
	slots          int
	queue          int
	gossipKey      string
	gossipKeyFile  string
	gossipTiming   string
	memcached      []string
	cacheAddr      string
	cacheRing      string
	cacheSize      int
	cacheTimeout   time.Duration
	token          string
	tokenFile      string
	insecure       bool
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	maxMessageSize int
	maxDepth       int
	maxInFlight    int
	maxConns       int
	maxInFlightMem int
	idleTimeout    time.Duration
	drainTimeout   time.Duration
	dataDir        string
	jobRetention   time.Duration
}

func newNodeCmd(g *globalOptions) *cobra.Command {
	o := &nodeOptions{}
	def := node.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a grid node that serves the built-in functions",
		Long: `Run a node of a Shoal grid: it gossips with the other members (memberlist),
serves the built-in functions over msgpack-rpc on a bounded executor, and
serves /healthz, /readyz, /metrics (Prometheus) and /members over HTTP.

Start the first node alone, then start others with --join pointing at the
gossip address of any member (or several, or a name resolving to them).
Across machines, bind to an address the others reach, or to 0.0.0.0 with
--advertise naming the address they dial (without it, the address of the
interface holding the default route is advertised). A node keeps trying to
reach members it declared dead, and seeds it does not see, so both sides of
a healed network partition become one grid again.

On SIGINT or SIGTERM a node tells the grid it is leaving, stops taking
calls, lets the calls in flight finish (up to --drain-timeout; a second
signal cuts the wait short) and exits 0.

A node keeps at most --max-conns RPC connections open, by default a bound
derived from the open-file limit (raised to the hard limit at start);
connections beyond it are closed as soon as they are accepted, and /readyz
says not ready while the node is at the bound or cannot accept (out of file
descriptors, say, which it retries).

A node restarted under the same name at a new address rejoins at once if it
left gracefully; after a crash (kill -9) the grid lets the name be reclaimed
once the old member has been dead for 30s (1s with --gossip-timing fast).

A node refuses to start with a token but no gossip key (any process that
reaches the gossip port could join and be sent the token), with --gossip
beyond loopback and no gossip key, or with --rpc beyond loopback and no
token, unless --insecure. Give secrets as
files (--token-file, --gossip-key-file) or SHOAL_ variables: ps shows the
command line to every user. With a token, HTTP paths but /healthz and
/readyz need "Authorization: Bearer <token>"; with TLS, HTTP serves TLS too.

Results of cacheable functions are written to the grid's cache; no reply
waits for it. Without memcached, the members' memory forms one grid cache:
each key is owned by one member (ketama over the member names), and this
node keeps its share in at most --cache-size bytes and sends the results it
computes to their owners. With --memcached (or --cache-ring gossip for the
servers members offer with --cache-addr) the results go to memcached
instead. shoal cache shows what each member holds.

Built-in functions:
` + builtinList(),
		Example: `  shoal node --name a
  shoal node --name b --gossip 127.0.0.1:7947 --rpc 127.0.0.1:7374 --http 127.0.0.1:8788 --join 127.0.0.1:7946
  head -c 32 /dev/urandom | base64 > gossip.key; head -c 32 /dev/urandom | base64 > token; chmod 600 gossip.key token
  shoal node --gossip-key-file gossip.key --token-file token
  shoal node --gossip 0.0.0.0:7946 --rpc 0.0.0.0:7373 --advertise 10.0.0.5 --join 10.0.0.4:7946,10.0.0.6:7946 --gossip-key-file gossip.key --token-file token
  shoal node --memcached 127.0.0.1:11211,127.0.0.1:11212
  shoal node --cache-addr 127.0.0.1:11211 --cache-ring gossip`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNode(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "unique name in the grid (default: <hostname>-<rpc port>)")
	f.StringVar(&o.gossipAddr, "gossip", def.GossipAddr, "HOST:PORT for gossip, UDP and TCP (port 0 picks a free one)")
	f.StringVar(&o.rpcAddr, "rpc", def.RPCAddr, "HOST:PORT to serve msgpack-rpc on (port 0 picks a free one)")
	f.StringVar(&o.httpAddr, "http", def.HTTPAddr, "HOST:PORT for /healthz, /readyz, /metrics and /members; empty turns HTTP off")
	f.StringVar(&o.advertise, "advertise", "", "HOST (address or name) the others dial for this node's gossip, RPC and HTTP ports, when not the bound one: behind a NAT, in a container or a pod "+
		"(default: the bound host; bound to 0.0.0.0, the address of the interface routing to the rest of the network)")
	f.StringSliceVar(&o.join, "join", nil, "gossip HOST:PORT of members to join through, comma-separated; a name is looked up again on every retry (a Kubernetes headless Service); none starts a new grid")
	f.DurationVar(&o.joinTimeout, "join-timeout", def.JoinTimeout, "give up (exit 1) if no --join member answers within this")
	f.IntVar(&o.slots, "slots", 0, fmt.Sprintf("calls to run at once (default: the number of CPUs, %d here)", def.Slots))
	f.IntVar(&o.queue, "queue", 0, "calls that may wait for a slot before more get Overloaded (default: 64 per slot)")
	f.StringVar(&o.gossipKey, "gossip-key", "", "base64 key of 16, 24 or 32 bytes encrypting gossip; the same on every member (visible in ps: prefer --gossip-key-file)")
	f.StringVar(&o.gossipKeyFile, "gossip-key-file", "", "file of base64 gossip keys, one a line: the first encrypts, all are accepted (for changing keys)")
	f.StringVar(&o.gossipTiming, "gossip-timing", "lan", "failure detection: lan (probe every 1s, a killed node marked dead in about 6s) or fast (every 100ms, dead in about 0.5s; for one machine)")
	f.StringSliceVar(&o.memcached, "memcached", nil, "memcached HOST:PORT servers, comma-separated, to store results of cacheable functions in (ketama placement)")
	f.StringVar(&o.cacheAddr, "cache-addr", "", "HOST:PORT of a memcached running beside this node, offered to the grid's cache ring")
	f.StringVar(&o.cacheRing, "cache-ring", "static", "static: use --memcached (or, without it, the grid cache); gossip: every live member's --cache-addr")
	f.IntVar(&o.cacheSize, "cache-size", def.CacheSize, "bytes this node offers the grid cache (used when no memcached is configured): its share of the keys is held within them")
	f.DurationVar(&o.cacheTimeout, "cache-timeout", def.CacheTimeout, "bound on each request to a memcached server or to the member owning a result in the grid cache; one that times out counts against it")
	f.StringVar(&o.token, "token", "", "shared token clients must present with shoal.auth before any call (visible in ps: prefer --token-file)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the token (surrounding whitespace is ignored)")
	f.BoolVar(&o.insecure, "insecure", false, "start even with a token but no gossip key, or gossip or RPC beyond loopback without its key or token: strangers can join or call")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate file: serve TLS (needs --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA file: require client certificates signed by it")
	f.IntVar(&o.maxMessageSize, "max-message-size", rpc.DefaultMaxMessageSize, "largest message accepted, in bytes; a larger one closes its connection")
	f.IntVar(&o.maxDepth, "max-depth", rpc.DefaultMaxDepth, "deepest nesting of arrays and maps accepted in a message")
	f.IntVar(&o.maxInFlight, "max-inflight", 1024, "calls in flight per connection, queued ones included; more get Overloaded")
	f.IntVar(&o.maxConns, "max-conns", 0, "RPC connections open at once; more are closed on arrival and /readyz says not ready meanwhile "+
		fmt.Sprintf("(default: the open-file limit less 64 and an eighth of it, %s)", defaultMaxConnsHere()))
	f.IntVar(&o.maxInFlightMem, "max-inflight-bytes", rpc.DefaultMaxInFlightBytes, "bytes all calls may hold: messages being read, arguments of queued and running calls, replies being written; a call beyond it gets Overloaded")
	f.DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close a connection idle this long")
	f.DurationVar(&o.drainTimeout, "drain-timeout", def.DrainTimeout, "on SIGINT/SIGTERM, how long to wait for calls in flight")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the inputs and results of the jobs this node coordinates (shoal submit --detach), under jobs/ (default: a temporary directory, removed at exit)")
	f.DurationVar(&o.jobRetention, "job-retention", def.JobRetention, "how long a job that ended stays listed with its results readable")
	return cmd
}

// defaultMaxConnsHere describes the --max-conns this process would get.
func defaultMaxConnsHere() string {
	if n := node.DefaultMaxConns(); n > 0 {
		return fmt.Sprintf("%d here", n)
	}
	return "no bound here"
}

func builtinList() string {
	srv := rpc.NewServer(rpc.ServerConfig{})
	defer srv.Close()
	if err := builtins.Register(srv); err != nil {
		panic(err) // the built-ins are fixed at compile time
	}
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, fn := range srv.Functions() {
		cache := ""
		if fn.Cacheable {
			cache = " (cacheable)"
		}
		fmt.Fprintf(w, "  %s\t%s%s\n", fn.Signature, fn.Doc, cache)
	}
	w.Flush()
	return b.String()
}

// config turns the flags into a node configuration.
func (o *nodeOptions) config(cmd *cobra.Command, g *globalOptions) (node.Config, error) {
	cfg := node.DefaultConfig()
	switch {
	case cmd.Flags().Changed("slots") && o.slots < 1:
		return cfg, fmt.Errorf("--slots %d: a node needs at least 1 slot to run anything", o.slots)
	case o.queue < 0:
		return cfg, fmt.Errorf("--queue %d: want the number of calls that may wait, or 0 for 64 per slot", o.queue)
	case o.cacheSize < 0:
		return cfg, fmt.Errorf("--cache-size %d: want a number of bytes", o.cacheSize)
	case o.cacheTimeout <= 0:
		return cfg, fmt.Errorf("--cache-timeout %v: want a positive duration", o.cacheTimeout)
	case o.maxConns < 0:
		return cfg, fmt.Errorf("--max-conns %d: want a number of connections, or 0 to derive it from the open-file limit", o.maxConns)
	case o.jobRetention <= 0:
		return cfg, fmt.Errorf("--job-retention %v: want a positive duration", o.jobRetention)
	case o.maxInFlightMem <= 0:
		return cfg, fmt.Errorf("--max-inflight-bytes %d: want a positive number of bytes", o.maxInFlightMem)
	}
	log, err := g.logger()
	if err != nil {
		return cfg, err
	}
	cfg.Name, cfg.GossipAddr, cfg.RPCAddr, cfg.HTTPAddr = o.name, o.gossipAddr, o.rpcAddr, o.httpAddr
	cfg.Advertise = o.advertise
	cfg.Join, cfg.JoinTimeout, cfg.Slots, cfg.QueueSize = o.join, o.joinTimeout, o.slots, o.queue
	cfg.DrainTimeout, cfg.Logger = o.drainTimeout, log
	cfg.DataDir, cfg.JobRetention = o.dataDir, o.jobRetention
	cfg.Memcached, cfg.CacheAddr, cfg.CacheRing, cfg.CacheSize = o.memcached, o.cacheAddr, o.cacheRing, o.cacheSize
	cfg.CacheTimeout, cfg.MaxConns = o.cacheTimeout, o.maxConns
	switch o.gossipTiming {
	case "lan":
		cfg.Timing = node.LANTiming()
	case "fast":
		cfg.Timing = node.FastTiming()
	default:
		return cfg, fmt.Errorf("--gossip-timing %q: want lan or fast", o.gossipTiming)
	}
	switch {
	case o.gossipKey != "" && o.gossipKeyFile != "":
		return cfg, errors.New("--gossip-key (or SHOAL_GOSSIP_KEY) and --gossip-key-file both given: give the key one way")
	case o.gossipKey != "":
		if cfg.GossipKey, err = base64.StdEncoding.DecodeString(o.gossipKey); err != nil {
			return cfg, fmt.Errorf("--gossip-key is not base64: %w", err)
		}
	case o.gossipKeyFile != "":
		text, err := readSecretFile("--gossip-key-file", o.gossipKeyFile, log)
		if err != nil {
			return cfg, err
		}
		if cfg.GossipKey, cfg.GossipKeys, err = parseGossipKeys("--gossip-key-file "+o.gossipKeyFile, text); err != nil {
			return cfg, err
		}
	}
	token, err := secretFromFlags("token", o.token, o.tokenFile, log)
	if err != nil {
		return cfg, err
	}
	cfg.Insecure = o.insecure
	cfg.RPC = rpc.ServerConfig{
		MaxMessageSize: o.maxMessageSize,
		MaxDepth:       o.maxDepth,
		MaxInFlight:    o.maxInFlight,
		IdleTimeout:    o.idleTimeout,
		Token:          token,
		Logger:         log,
	}
	cfg.RPC.MaxInFlightBytes = o.maxInFlightMem
	if o.tlsCert != "" || o.tlsKey != "" {
		if o.tlsCert == "" || o.tlsKey == "" {
			return cfg, errors.New("--tls-cert and --tls-key go together")
		}
		if cfg.RPC.TLS, err = rpc.LoadServerTLS(o.tlsCert, o.tlsKey, o.tlsClientCA); err != nil {
			return cfg, err
		}
		// Members call each other to read their function lists: trust
		// the grid's CA and show this node's own certificate.
		if cfg.PeerTLS, err = rpc.LoadClientTLS(o.tlsClientCA, o.tlsCert, o.tlsKey); err != nil {
			return cfg, err
		}
	} else if o.tlsClientCA != "" {
		return cfg, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	return cfg, nil
}

// memoryLimit is the node's soft memory limit: what its calls may hold
// (--max-inflight-bytes), its in-memory cache, and 32 MiB for the rest of
// the process (an idle node's heap is about 4 MiB). Without it the
// collector lets the heap grow to twice what is live before it runs, so
// garbage of calls already answered (buffers outgrown, decoded arguments,
// replies written) could double the node's size; near the limit it
// collects sooner and returns memory to the system. It is soft: the node
// runs on above it, collecting often.
func memoryLimit(cfg node.Config) int64 {
	limit := int64(cfg.RPC.MaxInFlightBytes) + 32<<20
	if cfg.Cache == nil && len(cfg.Memcached) == 0 && cfg.CacheRing != "gossip" {
		limit += int64(cfg.CacheSize)
	}
	return limit
}

func runNode(cmd *cobra.Command, g *globalOptions, o *nodeOptions) error {
	ctx := cmd.Context()
	cfg, err := o.config(cmd, g)
	if err != nil {
		return err
	}
	// Before New, which derives the default --max-conns from the limit.
	switch before, after, hard, err := raiseOpenFileLimit(); {
	case errors.Is(err, errors.ErrUnsupported):
	case err != nil:
		cfg.Logger.Warn("could not raise the open-file limit", "soft", before, "hard", hard, "err", err)
	case after != before:
		cfg.Logger.Info("raised the open-file limit", "soft", after, "hard", hard, "was", before)
	default:
		cfg.Logger.Info("open-file limit", "soft", after, "hard", hard)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(cfg))
	}
	n, err := node.New(cfg, shoalVersion())
	if err != nil {
		return err
	}
	if err := builtins.Register(n); err != nil {
		return err
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	// A node outlives whatever reads its log: with its stderr a pipe whose
	// reader has gone (`shoal node | head`, a log shipper restarting), the
	// next line written would otherwise kill it with SIGPIPE, silently.
	// Ignored, the write fails and the node goes on serving.
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Stop(signals)
	if ctx == nil {
		ctx = context.Background()
	}
	// A signal while joining stops the join; one that comes as the join
	// succeeds is kept for the leave below.
	startCtx, cancelStart := context.WithCancel(ctx)
	early := make(chan os.Signal, 1)
	go func() {
		select {
		case s := <-signals:
			early <- s
			cancelStart()
		case <-startCtx.Done():
		}
	}()
	err = n.Start(startCtx)
	cancelStart()
	if err != nil {
		return err
	}
	log := cfg.Logger
	var sig os.Signal
	select {
	case sig = <-early:
	case sig = <-signals:
	}
	log.Info("leaving: no new calls, waiting for calls in flight", "signal", sig.String(),
		"in_flight", n.InFlight(), "timeout", cfg.DrainTimeout)

	drainCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-signals:
			log.Warn("second signal: closing now")
			cancel()
		case <-drainCtx.Done():
		}
	}()
	if err := n.Shutdown(drainCtx); err != nil {
		log.Error("drain cut short; calls still running were canceled", "err", err)
		return &exitError{code: 1}
	}
	log.Info("node stopped")
	return nil
}
