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
	"github.com/spf13/pflag"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/rpc"
)

type clientOptions struct {
	seeds     []string
	token     string
	tokenFile string
	insecure  bool
	tls       bool
	tlsCA     string
	tlsCert   string
	tlsKey    string
}

func (o *clientOptions) addFlags(cmd *cobra.Command) { o.addFlagsTo(cmd.Flags()) }

// addFlagsTo adds the flags to f: a command's persistent flags serve its
// subcommands too.
func (o *clientOptions) addFlagsTo(f *pflag.FlagSet) {
	f.StringSliceVar(&o.seeds, "seed", []string{"127.0.0.1:7373"}, "RPC address HOST:PORT of a node; a comma-separated list is tried in order")
	f.StringVar(&o.token, "token", "", "token to present to nodes started with --token (visible in ps: prefer --token-file)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the token to present (surrounding whitespace is ignored)")
	f.BoolVar(&o.insecure, "insecure", false, "send the token without TLS to nodes beyond loopback, where others on the network can read it")
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
	token, err := secretFromFlags("token", o.token, o.tokenFile, log)
	if err != nil {
		return rpc.ClientConfig{}, err
	}
	cfg := rpc.ClientConfig{Token: token, Logger: log, AllowPlaintextToken: o.insecure}
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

// dial connects a grid client to the first seed that answers, with the
// flags' settings.
func (o *clientOptions) dial(ctx context.Context, g *globalOptions) (*shoal.Client, error) {
	cfg, err := o.config(g)
	if err != nil {
		return nil, err
	}
	c, err := shoal.Dial(ctx, shoal.Config{Seeds: o.seeds, Token: cfg.Token, TLS: cfg.TLS, Logger: cfg.Logger,
		AllowPlaintextToken: cfg.AllowPlaintextToken})
	var seeds *shoal.SeedError
	switch {
	case err == nil || ctx.Err() != nil:
		return c, err
	case errors.As(err, &seeds):
		return nil, fmt.Errorf("%w\n%s", err, seedHint(seeds))
	}
	return nil, tokenHint(err)
}

// tokenHint says how to give the token, or how to send it safely, when err
// is about it.
func tokenHint(err error) error {
	switch {
	case errors.Is(err, rpc.ErrUnauthorized) && strings.Contains(err.Error(), "too many failed attempts"):
		// The token was not even checked: the node is slowing down wrong
		// guesses from this address, whoever here made them.
		return fmt.Errorf("%w\n(the node checks no token from this address while wrong guesses from it are being slowed down: "+
			"something on this machine keeps giving a wrong token; once it stops, tokens from here are checked again within 10s)", err)
	case errors.Is(err, rpc.ErrUnauthorized):
		return fmt.Errorf("%w\n(give the grid's token with --token-file or SHOAL_TOKEN)", err)
	case errors.Is(err, rpc.ErrPlaintextToken):
		return fmt.Errorf("%w\n(connect with --tls to nodes that serve it, or give --insecure to send the token in the clear anyway)", err)
	}
	return err
}

// seedHint says what to do when no seed answered: start a node when
// nothing listens there, or give the right port when something else does.
func seedHint(e *shoal.SeedError) string {
	for _, err := range e.Errs {
		var handshake *rpc.HandshakeError
		switch {
		case errors.Is(err, rpc.ErrUnknownFunction):
			return "(a plain msgpack-rpc server: shoal call --direct calls it as one)"
		case errors.As(err, &handshake):
			return "(does the node serve TLS, with --tls-cert? does --tls-ca name the CA that signed its certificate?)"
		}
	}
	for _, err := range e.Errs {
		var dial *rpc.DialError
		if !errors.As(err, &dial) {
			return "(--seed takes a node's RPC address: what its --rpc flag gave, 127.0.0.1:7373 by default)"
		}
	}
	return "(is a node running? start one with `shoal node`, or point --seed at a running node's RPC address)"
}

// dialDirect connects to the first seed that answers as a plain
// msgpack-rpc server.
func (o *clientOptions) dialDirect(ctx context.Context, cfg rpc.ClientConfig) (*rpc.Client, error) {
	var errs []string
	for _, seed := range o.seeds {
		c, err := rpc.Dial(ctx, strings.TrimSpace(seed), cfg)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, rpc.ErrUnauthorized) || errors.Is(err, rpc.ErrPlaintextToken) {
			return nil, tokenHint(err)
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("no seed answered: %s", strings.Join(errs, "; "))
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
as msgpack integers (one beyond 64 bits is refused, not rounded), other
numbers as floats; binary results print as base64.

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
			return runCall(cmd.Context(), cmd, g, o, args[0], args[1:])
		},
	}
	o.addFlags(cmd)
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "give up on the call after this long (0: no limit); finding the grid is bounded apart")
	cmd.Flags().BoolVar(&o.direct, "direct", false, "call the seed itself instead of the least loaded node offering FUNC")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func runCall(ctx context.Context, cmd *cobra.Command, g *globalOptions, o *callOptions, fn string, rawArgs []string) error {
	args := make([]any, len(rawArgs))
	for i, raw := range rawArgs {
		if name, ok := strings.CutPrefix(raw, "--"); ok {
			if f := cmd.Flags().Lookup(strings.SplitN(name, "=", 2)[0]); f != nil {
				return fmt.Errorf("--%s after %s: flags go before FUNC, as in shoal call --%s ... %s [ARG ...]", f.Name, fn, f.Name, fn)
			}
		}
		v, err := parseJSONArg(raw)
		if err != nil {
			return fmt.Errorf("argument %d (%s): %w", i+1, raw, err)
		}
		args[i] = v
	}
	if o.timeout < 0 {
		return fmt.Errorf("--timeout %v: want a positive duration, or 0 for none", o.timeout)
	}
	cfg, err := o.config(g)
	if err != nil {
		return err
	}
	ctx, stop := interruptible(ctx)
	defer stop()
	// --timeout bounds the call, not finding the grid, which has bounds of
	// its own: a slow seed must not read as the function's timeout.
	callCtx := ctx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}

	var result any
	if o.direct || strings.HasPrefix(fn, rpc.ReservedPrefix) {
		c, err := o.dialDirect(ctx, cfg)
		if err != nil {
			return interrupted(ctx, err)
		}
		defer c.Close()
		cfg.Logger.Debug("call sent", "function", fn, "node", c.Addr())
		err = c.Call(callCtx, fn, &result, args...)
		if err != nil {
			return interrupted(callCtx, err)
		}
	} else {
		c, err := o.dial(ctx, g)
		if err != nil {
			return interrupted(ctx, err)
		}
		defer c.Close()
		if err := c.Call(callCtx, fn, &result, args...); err != nil {
			if errors.Is(err, rpc.ErrUnknownFunction) {
				return fmt.Errorf("%w\n(`shoal functions` lists what the grid offers)", err)
			}
			return interrupted(callCtx, err)
		}
	}
	out, err := json.Marshal(jsonValue(result))
	if err != nil {
		return fmt.Errorf("result cannot be shown as JSON: %w", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
	return nil
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
	return fromJSON(v)
}

// fromJSON turns JSON numbers into msgpack's: an integer literal into an
// int64 or uint64, any other number into a float64. An integer literal that
// fits neither is refused rather than rounded to a float.
func fromJSON(v any) (any, error) {
	var err error
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return u, nil
		}
		if !strings.ContainsAny(string(v), ".eE") {
			return nil, fmt.Errorf("integer out of the range of 64 bits; write %s.0 to send a float", v)
		}
		f, err := v.Float64()
		if err != nil {
			return nil, errors.New("number out of the range of float64")
		}
		return f, nil
	case []any:
		for i := range v {
			if v[i], err = fromJSON(v[i]); err != nil {
				return nil, err
			}
		}
	case map[string]any:
		for k := range v {
			if v[k], err = fromJSON(v[k]); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
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
