// Command greeter is a Shoal node serving functions of its own: it embeds
// node.Node, registers two Go functions, joins a grid started with
// `shoal node`, and serves until SIGINT or SIGTERM, when it leaves
// gracefully. Once it has joined, `shoal submit` and the Go API reach its
// functions through any node of the grid.
//
//	go run ./examples/greeter --join 127.0.0.1:7946
//	shoal submit --input names.txt greet
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/shoalgrid/shoal/node"
	"github.com/shoalgrid/shoal/rpc"
)

// greet is a plain Go function; Shoal decodes its argument from the call.
func greet(name string) string { return "hello, " + name + "!" }

// vowels counts the vowels in text; it takes a context, so a canceled call
// or an item timeout stops it.
func vowels(ctx context.Context, text string) (int, error) {
	n := 0
	for i, r := range strings.ToLower(text) {
		if i%4096 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if strings.ContainsRune("aeiou", r) {
			n++
		}
	}
	return n, nil
}

func main() {
	join := flag.String("join", "127.0.0.1:7946", "gossip address of a grid member")
	name := flag.String("name", "greeter", "this node's name in the grid")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	cfg := node.DefaultConfig()
	cfg.Name = *name
	cfg.Join = []string{*join}
	cfg.GossipAddr = "127.0.0.1:0" // free ports: shoal node holds the defaults
	cfg.RPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.Logger = log
	n, err := node.New(cfg, "greeter-example")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	must := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	must(n.Register("greet", greet, rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithArgNames("name"), rpc.WithDoc("greets name")))
	must(n.Register("vowels", vowels, rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithArgNames("text"), rpc.WithDoc("counts the vowels in text")))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	must(n.Start(ctx))
	log.Info("greeter serving", "rpc", n.RPCAddr(), "gossip", n.GossipAddr())
	<-ctx.Done()
	must(n.Shutdown(context.Background()))
}
