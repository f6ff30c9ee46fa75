package portprobe_test

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/internal/portprobe"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

// Every peer below is the real thing on a loopback port: the package exists
// to recognise real servers, so only they can tell whether it does.

func TestIdentify(t *testing.T) {
	key := []byte("0123456789abcdef")
	tests := []struct {
		name  string
		start func(t *testing.T) string
		want  portprobe.Kind
	}{
		{"rpc server", startRPC(rpc.ServerConfig{}), portprobe.RPC},
		{"rpc server with a token", startRPC(rpc.ServerConfig{Token: "x"}), portprobe.RPC},
		{"http server", startHTTP, portprobe.HTTP},
		// memberlist answers differently with each of these settings; see
		// isGossipReply for which message each one produces.
		{"memberlist", startMemberlist(nil), portprobe.Gossip},
		{"memberlist with a gossip key", startMemberlist(func(c *memberlist.Config) {
			c.SecretKey = key
		}), portprobe.Gossip},
		{"memberlist without compression", startMemberlist(func(c *memberlist.Config) {
			c.EnableCompression = false
		}), portprobe.Gossip},
		{"memberlist with a key, not encrypting replies", startMemberlist(func(c *memberlist.Config) {
			c.SecretKey = key
			c.GossipVerifyOutgoing = false
		}), portprobe.Gossip},
		{"memberlist with a key, not encrypting replies, without compression", startMemberlist(func(c *memberlist.Config) {
			c.SecretKey = key
			c.GossipVerifyOutgoing = false
			c.EnableCompression = false
		}), portprobe.Gossip},
		{"memberlist with a key, accepting plain streams", startMemberlist(func(c *memberlist.Config) {
			c.SecretKey = key
			c.GossipVerifyIncoming = false
		}), portprobe.Gossip},
		{"closed port", closedPort, portprobe.Unknown},
		// Line-oriented servers answer with bytes that are also memberlist
		// message types ('\t', '\n', '\r'); they must not pass for it.
		{"line server answering CRLF", startReplier("\r\nERR unknown command\r\n"), portprobe.Unknown},
		{"line server answering LF", startReplier("\n\n\n\n\n\n\n\n"), portprobe.Unknown},
		{"server closing at once", startReplier(""), portprobe.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckGoroutines(t)
			addr := tt.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if got := portprobe.Identify(ctx, addr); got != tt.want {
				t.Errorf("Identify(%s) = %v, want %v", addr, got, tt.want)
			}
		})
	}
}

func TestIdentifySilentPeer(t *testing.T) {
	testutil.CheckGoroutines(t)
	addr := startSilent(t)

	t.Run("ctx deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		assertUnknownWithin(t, ctx, addr, 10*time.Second)
	})
	t.Run("no ctx deadline", func(t *testing.T) {
		// One second per probe connection; a silent peer gets only one.
		assertUnknownWithin(t, context.Background(), addr, 10*time.Second)
	})
	t.Run("ctx cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		assertUnknownWithin(t, ctx, addr, 10*time.Second)
	})
}

func assertUnknownWithin(t *testing.T, ctx context.Context, addr string, bound time.Duration) {
	t.Helper()
	got := make(chan portprobe.Kind, 1)
	go func() { got <- portprobe.Identify(ctx, addr) }()
	select {
	case k := <-got:
		if k != portprobe.Unknown {
			t.Errorf("Identify(silent peer) = %v, want %v", k, portprobe.Unknown)
		}
	case <-time.After(bound):
		t.Fatalf("Identify(silent peer) still running after %v", bound)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[portprobe.Kind]string{
		portprobe.Unknown: "unknown",
		portprobe.RPC:     "msgpack-rpc",
		portprobe.HTTP:    "HTTP",
		portprobe.Gossip:  "gossip (memberlist)",
		portprobe.Kind(9): "Kind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func startRPC(cfg rpc.ServerConfig) func(t *testing.T) string {
	return func(t *testing.T) string {
		cfg.Logger = slog.New(slog.DiscardHandler)
		srv := rpc.NewServer(cfg)
		l := listen(t)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		t.Cleanup(func() {
			srv.Close()
			if err := <-served; !errors.Is(err, rpc.ErrServerClosed) {
				t.Errorf("rpc Serve: %v", err)
			}
		})
		return l.Addr().String()
	}
}

func startHTTP(t *testing.T) string {
	srv := &http.Server{
		Handler:  http.NotFoundHandler(),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	l := listen(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http Serve: %v", err)
		}
	})
	return l.Addr().String()
}

func startMemberlist(configure func(*memberlist.Config)) func(t *testing.T) string {
	return func(t *testing.T) string {
		c := memberlist.DefaultLocalConfig()
		c.Name = t.Name()
		c.BindAddr = "127.0.0.1"
		c.BindPort = 0
		c.Logger = log.New(io.Discard, "", 0)
		if configure != nil {
			configure(c)
		}
		ml, err := memberlist.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ml.Shutdown(); err != nil {
				t.Errorf("memberlist Shutdown: %v", err)
			}
		})
		n := ml.LocalNode()
		return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	}
}

func closedPort(t *testing.T) string {
	l := listen(t)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startReplier serves a peer that writes reply to every connection, after
// reading whatever the client sent first, and closes it.
func startReplier(reply string) func(t *testing.T) string {
	return func(t *testing.T) string {
		return serve(t, func(c net.Conn) {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 512))
			io.WriteString(c, reply)
		})
	}
}

// startSilent serves a peer that accepts and never writes, holding each
// connection until the test ends.
func startSilent(t *testing.T) string {
	done := make(chan struct{})
	addr := serve(t, func(c net.Conn) {
		<-done
	})
	// Registered after serve's cleanup, so it runs first and lets the
	// handlers return.
	t.Cleanup(func() { close(done) })
	return addr
}

// serve accepts connections until the test ends, running handle on each and
// closing it after; nothing it starts outlives the test.
func serve(t *testing.T, handle func(net.Conn)) string {
	l := listen(t)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}
