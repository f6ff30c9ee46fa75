package node

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestAdvertiseMustBeAHostOthersCanDial(t *testing.T) {
	for _, bad := range []struct{ advertise, want string }{
		{"10.0.0.5:7946", "without a port"},
		{"0.0.0.0", "cannot be dialed"},
		{"::", "cannot be dialed"},
	} {
		cfg := FastConfig()
		cfg.Advertise = bad.advertise
		if _, err := New(cfg, "test"); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Advertise %q: got %v, want an error saying %q", bad.advertise, err, bad.want)
		}
	}
}

func TestAdvertisedHostKeepsWhatIsDialable(t *testing.T) {
	for _, c := range []struct{ advertise, bound, want string }{
		{"", "127.0.0.1", "127.0.0.1"},
		{"", "10.1.2.3", "10.1.2.3"},
		{"node-7.example", "0.0.0.0", "node-7.example"},
		{"10.9.9.9", "127.0.0.1", "10.9.9.9"},
	} {
		if got, err := advertisedHost(c.advertise, c.bound); err != nil || got != c.want {
			t.Errorf("advertisedHost(%q, %q) = %q, %v; want %q", c.advertise, c.bound, got, err, c.want)
		}
	}
	// Bound to every interface, the host is the default route's source
	// address, or there is an error naming --advertise: never 0.0.0.0.
	for _, bound := range []string{"0.0.0.0", "::", ""} {
		got, err := advertisedHost("", bound)
		if err != nil {
			if !strings.Contains(err.Error(), "--advertise") {
				t.Errorf("bound to %q: %v does not name --advertise", bound, err)
			}
			continue
		}
		if ip := net.ParseIP(got); ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
			t.Errorf("bound to %q, advertised %q", bound, got)
		}
	}
}

// A node told to advertise a name gives that name as its RPC and HTTP
// hosts, which a TLS certificate can carry, and the name's address for
// gossip, which memberlist needs as an IP.
func TestNodeAdvertisesTheNameItIsGiven(t *testing.T) {
	n := startNode(t, "named", nil, func(c *Config) { c.Advertise = "localhost" })
	_, rpcPort, _ := net.SplitHostPort(n.rpcListener.Addr().String())
	if want := net.JoinHostPort("localhost", rpcPort); n.RPCAddr() != want {
		t.Errorf("RPCAddr %s, want %s", n.RPCAddr(), want)
	}
	if !strings.HasPrefix(n.HTTPAddr(), "localhost:") {
		t.Errorf("HTTPAddr %s, want localhost:PORT", n.HTTPAddr())
	}
	self := n.Members()[0]
	if self.RPC != n.RPCAddr() || self.HTTP != n.HTTPAddr() {
		t.Errorf("the node lists itself with rpc %s, http %s; want %s, %s", self.RPC, self.HTTP, n.RPCAddr(), n.HTTPAddr())
	}
	if host, _, _ := net.SplitHostPort(self.Gossip); net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("gossip address %s, want localhost's IP", self.Gossip)
	}
	other := startNode(t, "other", []string{n.GossipAddr()}, nil)
	waitState(t, other, "named", "alive")
	for _, m := range other.Members() {
		if m.Name == "named" && m.RPC != n.RPCAddr() {
			t.Errorf("another member sees rpc %s, want %s", m.RPC, n.RPCAddr())
		}
	}
}

// A member declared dead is tried again after the view has forgotten it:
// a partition longer than ForgetAfter still heals. Here the dead member's
// address comes back as a new process that joins no one; only the
// survivor's reconnect loop can bring the two together.
func TestReconnectOutlastsForgetting(t *testing.T) {
	a := startNode(t, "a", nil, func(c *Config) { c.ForgetAfter = 50 * time.Millisecond })
	b := startNode(t, "b", []string{a.GossipAddr()}, nil)
	waitState(t, a, "b", "alive")
	gossip := b.GossipAddr()
	b.Close() // no leave: a declares it dead
	testutil.WaitFor(t, 10*time.Second, "a to forget b", func() bool {
		_, listed := states(a)["b"]
		return !listed
	})
	again := startNode(t, "b", nil, func(c *Config) { c.GossipAddr = gossip })
	waitState(t, a, "b", "alive")
	waitState(t, again, "a", "alive")
}
