package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

type clientOptions struct {
	seeds   []string
	token   string
	tls     bool
	tlsCA   string
	tlsCert string
	tlsKey  string
}

func (o *clientOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&o.seeds, "seed", []string{"127.0.0.1:7373"}, "RPC address HOST:PORT of a node; a comma-separated list is tried in order")
	f.StringVar(&o.token, "token", "", "token to present to nodes started with --token")
	f.BoolVar(&o.tls, "tls", false, "connect with TLS, verifying the node against the system's CAs (or --tls-ca)")
	f.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA file to verify nodes with; implies --tls")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM client certificate, for nodes started with --tls-client-ca; implies --tls")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
}

func (o *clientOptions) config(g *globalOptions) (rpc.ClientConfig, error) {
	log, err := g.logger()
	if err != nil {
		return rpc.ClientConfig{}, err
	}
	cfg := rpc.ClientConfig{Token: o.token, Logger: log}
	if o.tls || o.tlsCA != "" || o.tlsCert != "" || o.tlsKey != "" {
		if (o.tlsCert == "") != (o.tlsKey == "") {
			return cfg, errors.New("--tls-cert and --tls-key go together")
		}
		if cfg.TLS, err = rpc.LoadClientTLS(o.tlsCA, o.tlsCert, o.tlsKey); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// connect dials the first seed that answers, with the flags' settings.
func (o *clientOptions) connect(ctx context.Context, g *globalOptions) (*rpc.Client, error) {
	cfg, err := o.config(g)
	if err != nil {
		return nil, err
	}
	return o.dial(ctx, cfg)
}

// dial connects to the first seed that answers.
func (o *clientOptions) dial(ctx context.Context, cfg rpc.ClientConfig) (*rpc.Client, error) {
	if len(o.seeds) == 0 {
		return nil, errors.New("no --seed given")
	}
	var errs []string
	for _, seed := range o.seeds {
		c, err := rpc.Dial(ctx, strings.TrimSpace(seed), cfg)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, rpc.ErrUnauthorized) {
			return nil, err
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("no seed answered:\n  %s", strings.Join(errs, "\n  "))
}

type callOptions struct {
	clientOptions
	timeout time.Duration
	direct  bool
}

func newCallCmd(g *globalOptions) *cobra.Command {
	o := &callOptions{}
	cmd := &cobra.Command{
		Use:   "call FUNC [ARG ...]",
		Short: "Call a function in the grid and print its result as JSON",
		Long: `Call a function in the grid and print its result as JSON on stdout.

The --seed node tells which live members offer FUNC and how loaded they are;
the call goes to the least loaded of them (relative to its slots). With
--direct, or for shoal.* methods, the seed itself answers.

Each ARG is one JSON literal: 42, 2.5, true, null, "text", [1,2], {"k":"v"}.
Quote strings for the shell too: shoal call echo '"hello"'. Integers are sent
as msgpack integers, other numbers as floats; binary results print as base64.

Flags go before FUNC; everything after it is an argument, so negative
numbers need no escaping: shoal call square -12.

A remote error (for example "FunctionError: ..." or "BadArguments: ...") is
printed on stderr and the exit status is 1. Ctrl-C cancels the call on the
node as well.`,
		Example: `  shoal call add 2 3
  shoal call --seed 127.0.0.1:7400 wordcount '"the cat and the hat"'
  shoal call square -12
  shoal call shoal.describe`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCall(cmd.Context(), cmd.OutOrStdout(), g, o, args[0], args[1:])
		},
	}
	o.addFlags(cmd)
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "give up after this long (0: no limit)")
	cmd.Flags().BoolVar(&o.direct, "direct", false, "call the seed itself instead of the least loaded node offering FUNC")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func runCall(ctx context.Context, stdout io.Writer, g *globalOptions, o *callOptions, fn string, rawArgs []string) error {
	args := make([]any, len(rawArgs))
	for i, raw := range rawArgs {
		v, err := parseJSONArg(raw)
		if err != nil {
			return fmt.Errorf("argument %d (%s): %w", i+1, raw, err)
		}
		args[i] = v
	}
	cfg, err := o.config(g)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}

	c, err := o.dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if !o.direct && !strings.HasPrefix(fn, rpc.ReservedPrefix) {
		target, err := route(ctx, c, fn)
		if err != nil {
			return err
		}
		if target != "" && target != c.Addr() {
			routed, err := rpc.Dial(ctx, target, cfg)
			if err != nil {
				return fmt.Errorf("node offering %s: %w", fn, err)
			}
			defer routed.Close()
			c = routed
		}
	}
	var result any
	call := c.Go(ctx, fn, &result, nil, args...)
	cfg.Logger.Debug("call sent", "function", fn, "node", c.Addr())
	if err := (<-call.Done).Error; err != nil {
		return err
	}
	out, err := json.Marshal(jsonValue(result))
	if err != nil {
		return fmt.Errorf("result cannot be shown as JSON: %w", err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}

// route asks the seed which live node offering fn is least loaded for its
// slots and returns its RPC address; "" means call the seed itself (it is
// not a grid node, or it is the best choice).
func route(ctx context.Context, seed *rpc.Client, fn string) (string, error) {
	members, fns, err := gridView(ctx, seed)
	if errors.Is(err, rpc.ErrUnknownFunction) {
		return "", nil // a plain RPC server: no grid to route in
	}
	if err != nil {
		return "", err
	}
	offering := make(map[string]bool)
	for _, f := range fns {
		if f.Name == fn {
			for _, name := range f.Nodes {
				offering[name] = true
			}
		}
	}
	best, bestLoad := "", math.Inf(1)
	for _, m := range members {
		if !offering[m.Name] || m.State != node.StateAlive || m.Slots <= 0 {
			continue
		}
		load := float64(m.Running+m.Queued) / float64(m.Slots)
		if load < bestLoad || (load == bestLoad && m.RPC == seed.Addr()) {
			best, bestLoad = m.RPC, load
		}
	}
	if best == "" {
		return "", rpc.Errorf(rpc.KindUnknownFunction, "no live node offers %q", fn)
	}
	return best, nil
}

// parseJSONArg reads one JSON literal, keeping integers as integers.
func parseJSONArg(raw string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not a JSON literal (strings need quotes: '\"text\"'): %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value; pass each argument separately")
	}
	return fromJSON(v), nil
}

func fromJSON(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return u
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = fromJSON(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = fromJSON(v[k])
		}
	}
	return v
}

// jsonValue makes a decoded msgpack value printable as JSON: maps with
// non-string keys get their keys formatted, and floats JSON cannot hold
// become strings.
func jsonValue(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonValue(x)
		}
		return m
	case map[string]any:
		for k, x := range v {
			v[k] = jsonValue(x)
		}
	case []any:
		for i := range v {
			v[i] = jsonValue(v[i])
		}
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return strconv.FormatFloat(v, 'g', -1, 64)
		}
	case float32:
		return jsonValue(float64(v))
	}
	return v
}
