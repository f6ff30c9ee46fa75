package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

var testKey = []byte("0123456789abcdef")

// TestConfigRefusesToLetStrangersIn checks the configurations a node
// refuses unless Insecure. Nothing here listens: New checks the config
// before anything is bound, so 0.0.0.0 is never opened.
func TestConfigRefusesToLetStrangersIn(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(*Config)
		refuse []string // what the error must name; nil: accepted
	}{
		{"token without gossip key", func(c *Config) { c.RPC.Token = "s3cret" },
			[]string{"token without a gossip key", "--gossip-key", "--insecure"}},
		{"gossip on every interface, no key or token", func(c *Config) { c.GossipAddr = "0.0.0.0:7946" },
			[]string{"gossip address 0.0.0.0:7946", "--insecure"}},
		{"rpc on every interface, no key or token", func(c *Config) { c.RPCAddr = ":7373" },
			[]string{"rpc address :7373", "--insecure"}},
		{"rpc on a host name, no key or token", func(c *Config) { c.RPCAddr = "grid.example:7373" },
			[]string{"rpc address grid.example:7373"}},
		{"token without gossip key, insecure", func(c *Config) { c.RPC.Token = "s3cret"; c.Insecure = true }, nil},
		{"every interface, insecure", func(c *Config) { c.GossipAddr, c.RPCAddr, c.Insecure = "0.0.0.0:7946", "0.0.0.0:7373", true }, nil},
		{"every interface with key and token", func(c *Config) {
			c.GossipAddr, c.RPCAddr, c.GossipKey, c.RPC.Token = "0.0.0.0:7946", "0.0.0.0:7373", testKey, "s3cret"
		}, nil},
		{"gossip on every interface with a key", func(c *Config) { c.GossipAddr, c.GossipKey = "0.0.0.0:7946", testKey }, nil},
		{"rpc on every interface with a key but no token", func(c *Config) { c.RPCAddr, c.GossipKey = "0.0.0.0:7373", testKey },
			[]string{"rpc address 0.0.0.0:7373", "without a token", "--token-file", "--insecure"}},
		{"loopback by name and by IPv6", func(c *Config) { c.GossipAddr, c.RPCAddr = "localhost:7946", "[::1]:7373" }, nil},
		{"loopback beyond 127.0.0.1", func(c *Config) { c.GossipAddr, c.RPCAddr = "127.0.0.2:7946", "127.1.2.3:7373" }, nil},
		{"token and key on loopback", func(c *Config) { c.GossipKey, c.RPC.Token = testKey, "s3cret" }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := FastConfig()
			cfg.Logger = quiet()
			tc.edit(&cfg)
			n, err := New(cfg, "test")
			switch {
			case tc.refuse == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refuse != nil && err == nil:
				n.Close()
				t.Fatalf("accepted; want an error naming %q", tc.refuse)
			case err != nil:
				for _, want := range tc.refuse {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
			default:
				n.Close() // never started: nothing was bound
			}
		})
	}
}

func TestInsecureNodeSaysWhy(t *testing.T) {
	logs := &testutil.LogBuffer{}
	startNode(t, "a", nil, func(c *Config) {
		c.RPC.Token, c.Insecure = "s3cret", true
		c.Logger = logs.Logger()
	})
	if out := logs.String(); !strings.Contains(out, "running insecure") || !strings.Contains(out, "token without a gossip key") {
		t.Fatalf("an insecure node's log does not say why:\n%s", out)
	}
}

// TestGossipKeyringRotation: a member that encrypts with a new key and
// still accepts the old joins one that encrypts with the old and already
// accepts the new, which is the middle step of a rolling key change.
func TestGossipKeyringRotation(t *testing.T) {
	oldKey, newKey := testKey, []byte("fedcba9876543210")
	a := startNode(t, "a", nil, func(c *Config) { c.GossipKey, c.GossipKeys = oldKey, [][]byte{newKey} })
	b := startNode(t, "b", []string{a.GossipAddr()}, func(c *Config) { c.GossipKey, c.GossipKeys = newKey, [][]byte{oldKey} })
	waitState(t, a, "b", "alive")
	waitState(t, b, "a", "alive")

	cfg := FastConfig()
	cfg.GossipKeys = [][]byte{newKey}
	if _, err := New(cfg, "test"); err == nil {
		t.Fatal("further gossip keys without a primary were accepted")
	}
}

// TestHTTPRequiresTheToken: with a token, everything on HTTP but the
// probes and the dashboard's login form needs it as a bearer token.
func TestHTTPRequiresTheToken(t *testing.T) {
	n := startNode(t, "a", nil, func(c *Config) { c.GossipKey, c.RPC.Token = testKey, "s3cret" })
	base := "http://" + n.HTTPAddr()
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/metrics", "", 401},
		{"/members", "", 401},
		{"/members", "Bearer wrong", 401},
		{"/members", "Basic czNjcmV0", 401},
		{"/nothing-here", "", 401},
		{"/dashboard/api/snapshot", "", 401},
		{"/dashboard/api/snapshot", "Bearer s3cret", 200},
		{"/dashboard/static/app.js", "", 200}, // the login form's page needs it
		{"/login", "", 200},
		{"/metrics", "Bearer s3cret", 200},
		{"/members", "bearer s3cret", 200},
	} {
		if got := httpStatus(t, http.DefaultClient, base+tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.want)
		}
	}
}

// TestHTTPGuessingIsSlowedAsRPCIs: a bearer token guessed over HTTP pays
// the same growing delay per address as shoal.auth, so HTTP is no faster
// door to the token.
func TestHTTPGuessingIsSlowedAsRPCIs(t *testing.T) {
	n := startNode(t, "a", nil, func(c *Config) { c.GossipKey, c.RPC.Token = testKey, "s3cret" })
	url := "http://" + n.HTTPAddr() + "/metrics"
	start := time.Now()
	const guesses = 4
	for i := 0; i < guesses; i++ {
		if got := httpStatus(t, http.DefaultClient, url, fmt.Sprintf("Bearer guess-%d", i)); got != http.StatusUnauthorized {
			t.Fatalf("guess %d: status %d, want 401", i, got)
		}
	}
	// The first guess is checked at once, then each waits twice as long as
	// the one before: 100ms, 200ms, 400ms.
	const least = 700 * time.Millisecond
	if took := time.Since(start); took < least {
		t.Fatalf("%d wrong bearer tokens took %v; the delays alone add up to %v", guesses, took, least)
	}
	if got := httpStatus(t, http.DefaultClient, url, "Bearer s3cret"); got != http.StatusOK {
		t.Fatalf("the right token after the guesses: status %d, want 200", got)
	}
}

// TestHTTPServesTLSWithRPC: a node serving RPC over TLS serves HTTP over
// the same TLS; client certificates, when RPC requires them, are required
// everywhere but on the probes.
func TestHTTPServesTLSWithRPC(t *testing.T) {
	pki := testutil.NewPKI(t)
	serverTLS, err := rpc.LoadServerTLS(pki.ServerCert, pki.ServerKey, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "a", nil, func(c *Config) {
		c.GossipKey, c.RPC.Token, c.RPC.TLS = testKey, "s3cret", serverTLS
	})
	if got := httpStatus(t, http.DefaultClient, "http://"+n.HTTPAddr()+"/healthz", ""); got == 200 {
		t.Fatal("plain HTTP answered on a node that serves TLS")
	}
	client := func(certFile, keyFile string) *http.Client {
		cfg, err := rpc.LoadClientTLS(pki.CAFile, certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		t.Cleanup(c.CloseIdleConnections)
		return c
	}
	noCert, withCert := client("", ""), client(pki.ClientCert, pki.ClientKey)
	base := "https://" + n.HTTPAddr()
	for _, tc := range []struct {
		client *http.Client
		path   string
		auth   string
		want   int
	}{
		{noCert, "/healthz", "", 200},
		{noCert, "/readyz", "", 200},
		{noCert, "/metrics", "Bearer s3cret", 401},
		{withCert, "/metrics", "", 401},
		{withCert, "/metrics", "Bearer s3cret", 200},
		{withCert, "/members", "Bearer s3cret", 200},
	} {
		if got := httpStatus(t, tc.client, base+tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s (client certificate: %v) with %q: %d, want %d", tc.path, tc.client == withCert, tc.auth, got, tc.want)
		}
	}
	// The plain HTTP client of a scraper that does not trust the CA gets
	// nothing.
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}).Get(base + "/healthz"); err == nil {
		t.Fatal("a client that does not trust the grid's CA was served")
	}
}

func httpStatus(t *testing.T, c *http.Client, url, auth string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
