// Command shoal runs and uses a Shoal compute grid: `shoal node` serves
// functions over msgpack-rpc, `shoal call` calls one. Run `shoal --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoalgrid/shoal/internal/suggest"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the module's build information.
var version = ""

func shoalVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		code := 1
		var exit *exitError
		if errors.As(err, &exit) {
			if exit.err == nil {
				return exit.code // its message has been printed
			}
			code, err = exit.code, exit.err
		}
		// The library's errors carry their package's "shoal: " already.
		fmt.Fprintf(stderr, "shoal: %s\n", strings.TrimPrefix(err.Error(), "shoal: "))
		return code
	}
	return 0
}

// interruptible returns a context that ends on SIGINT or SIGTERM, so that
// Ctrl-C cancels the command's work, on the nodes too.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// exitError carries an exit status other than 1, and the error to print
// with it (nil when the message has already been printed).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// interrupted makes err exit 130, as an interrupted command does, when ctx
// (from interruptible) ended because of Ctrl-C or SIGTERM rather than a
// timeout.
func interrupted(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &exitError{code: 130, err: fmt.Errorf("interrupted: %s", strings.TrimPrefix(err.Error(), "shoal: "))}
	}
	return err
}

// flagError adds to an unknown flag's error the flags it may be a
// misspelling of, and where to read about them.
func flagError(cmd *cobra.Command, err error) error {
	var unknown *pflag.NotExistError
	if !errors.As(err, &unknown) {
		return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
	}
	var names []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if close := suggest.Closest(unknown.GetSpecifiedName(), names); len(close) > 0 {
		return fmt.Errorf("%w; did you mean --%s? (see %s --help)", err, close[0], cmd.CommandPath())
	}
	return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	logLevel  string
	logFormat string
	stderr    io.Writer
}

func (g *globalOptions) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

const envPrefix = "SHOAL_"

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{stderr: stderr}
	root := &cobra.Command{
		Use:   "shoal",
		Short: "A peer-to-peer compute grid: serve Go functions, call them, fan work out",
		Long: `Shoal runs a grid of peer nodes that serve registered Go functions over
msgpack-rpc, so any msgpack-rpc client can call them.

Every flag can also be set with an environment variable: SHOAL_ followed by
the flag's name in capitals with - as _ (SHOAL_RPC, SHOAL_TOKEN, SHOAL_SEED).
A flag given on the command line wins over the environment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			secrets := secretsOnCommandLine(cmd)
			if err := flagsFromEnv(cmd); err != nil {
				return err
			}
			warnSecretsOnCommandLine(g, secrets)
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text or json")
	root.AddCommand(newNodeCmd(g), newCallCmd(g), newSubmitCmd(g), newDemoCmd(g), newBenchCmd(g), newBenchFloorPeerCmd(), newMembersCmd(g), newFunctionsCmd(g), newCacheCmd(g), newJobsCmd(g), newVersionCmd())
	return root
}

// flagsFromEnv sets every flag of cmd not given on the command line from
// its SHOAL_ environment variable, if that is set.
func flagsFromEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if setErr := cmd.Flags().Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("%s=%q: %v", name, v, setErr)
			}
		}
	})
	return err
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the Shoal version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "shoal %s (%s %s/%s)\n", shoalVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}
