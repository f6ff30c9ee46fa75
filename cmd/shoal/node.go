package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal/rpc"
)

type nodeOptions struct {
	rpcAddr        string
	token          string
	tlsCert        string
	tlsKey         string
	tlsClientCA    string
	maxMessageSize int
	maxDepth       int
	maxInFlight    int
	idleTimeout    time.Duration
	drainTimeout   time.Duration
}

func newNodeCmd(g *globalOptions) *cobra.Command {
	o := &nodeOptions{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node that serves the built-in functions over msgpack-rpc",
		Long: `Run a node that serves the built-in functions over msgpack-rpc until
SIGINT or SIGTERM. On the signal it stops taking calls, lets the calls in
flight finish (up to --drain-timeout; a second signal cuts the wait short)
and exits 0.

Built-in functions:
` + builtinList(),
		Example: `  shoal node
  shoal node --rpc 127.0.0.1:7400 --token s3cret
  shoal node --tls-cert node.crt --tls-key node.key --tls-client-ca ca.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNode(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.rpcAddr, "rpc", "127.0.0.1:7373", "HOST:PORT to serve msgpack-rpc on (port 0 picks a free one)")
	f.StringVar(&o.token, "token", "", "shared token clients must present with shoal.auth before any call")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate file: serve TLS (needs --tls-key)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM CA file: require client certificates signed by it")
	f.IntVar(&o.maxMessageSize, "max-message-size", rpc.DefaultMaxMessageSize, "largest message accepted, in bytes; a larger one closes its connection")
	f.IntVar(&o.maxDepth, "max-depth", rpc.DefaultMaxDepth, "deepest nesting of arrays and maps accepted in a message")
	f.IntVar(&o.maxInFlight, "max-inflight", 1024, "calls running at once per connection; more get Overloaded")
	f.DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close a connection idle this long")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long to wait for calls in flight")
	return cmd
}

func builtinList() string {
	srv := rpc.NewServer(rpc.ServerConfig{})
	defer srv.Close()
	if err := registerBuiltins(srv); err != nil {
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

func runNode(ctx context.Context, g *globalOptions, o *nodeOptions) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	cfg := rpc.ServerConfig{
		MaxMessageSize: o.maxMessageSize,
		MaxDepth:       o.maxDepth,
		MaxInFlight:    o.maxInFlight,
		IdleTimeout:    o.idleTimeout,
		Token:          o.token,
		Logger:         log,
	}
	if o.tlsCert != "" || o.tlsKey != "" {
		if o.tlsCert == "" || o.tlsKey == "" {
			return errors.New("--tls-cert and --tls-key go together")
		}
		if cfg.TLS, err = rpc.LoadServerTLS(o.tlsCert, o.tlsKey, o.tlsClientCA); err != nil {
			return err
		}
	} else if o.tlsClientCA != "" {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}

	srv := rpc.NewServer(cfg)
	if err := registerBuiltins(srv); err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.rpcAddr)
	if err != nil {
		return fmt.Errorf("--rpc %s: %w", o.rpcAddr, err)
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("node serving", "rpc", l.Addr().String(), "functions", len(srv.Functions()),
		"tls", cfg.TLS != nil, "token", o.token != "", "version", shoalVersion())

	select {
	case err := <-served:
		srv.Close()
		return fmt.Errorf("serving %s: %w", l.Addr(), err)
	case sig := <-signals:
		log.Info("draining: no new calls, waiting for calls in flight", "signal", sig.String(),
			"in_flight", srv.Stats().InFlight, "timeout", o.drainTimeout)
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	go func() {
		select {
		case <-signals:
			log.Warn("second signal: closing now")
			cancel()
		case <-drainCtx.Done():
		}
	}()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Error("drain cut short; calls still running were canceled", "err", err)
		<-served
		return &exitError{code: 1}
	}
	<-served
	log.Info("node stopped", "calls", srv.Stats().Calls)
	return nil
}
