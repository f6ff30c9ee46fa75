package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// advertised is what the node tells the grid to dial, which differs from
// what it binds when it binds every interface (0.0.0.0 in a container or a
// pod) or sits behind an address it cannot see (a NAT, a Service).
type advertised struct {
	gossipIP   net.IP // memberlist gossips an IP, never a name
	gossipPort int
	rpc, http  string // HOST:PORT; HOST may be a name, which TLS certificates can carry
}

// advertisedHost chooses the host others should dial for a listener bound
// to bound: cfg.Advertise when given, else the bound host, else (bound to
// every interface) the address of the interface holding the default route.
// It never returns an unspecified address.
func advertisedHost(advertise, bound string) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	if ip := net.ParseIP(bound); bound != "" && (ip == nil || !ip.IsUnspecified()) {
		return bound, nil
	}
	ip, err := defaultRouteIP()
	if err != nil {
		return "", fmt.Errorf("bound to every interface, and no default route shows which address the other members should dial (%v): "+
			"name it with --advertise HOST (Config.Advertise)", err)
	}
	return ip.String(), nil
}

// defaultRouteIP returns this machine's source address for the default
// route. Connecting a UDP socket sends nothing: the kernel only chooses
// the route, and with it the source address. The destinations are
// documentation addresses (RFC 5737, RFC 3849), which nothing answers.
func defaultRouteIP() (net.IP, error) {
	var errs []string
	for _, probe := range []struct{ network, addr string }{{"udp4", "192.0.2.1:9"}, {"udp6", "[2001:db8::1]:9"}} {
		c, err := net.Dial(probe.network, probe.addr)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if !ip.IsUnspecified() && !ip.IsLoopback() {
			return ip, nil
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("the default route leads only to loopback")
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

// advertise works out the node's advertised addresses from its bound
// listeners, its gossip address and cfg.Advertise.
func (n *Node) advertise(ctx context.Context) (advertised, error) {
	var a advertised
	one := func(what, bound string) (string, error) {
		host, port, err := net.SplitHostPort(bound)
		if err != nil {
			return "", fmt.Errorf("node: %s address %q: %w", what, bound, err)
		}
		adv, err := advertisedHost(n.cfg.Advertise, host)
		if err != nil {
			return "", fmt.Errorf("node: %s address %s: %w", what, bound, err)
		}
		return net.JoinHostPort(adv, port), nil
	}
	var err error
	if a.rpc, err = one("rpc", n.rpcListener.Addr().String()); err != nil {
		return a, err
	}
	if n.httpListener != nil {
		if a.http, err = one("http", n.httpListener.Addr().String()); err != nil {
			return a, err
		}
	}
	gossip, err := one("gossip", n.cfg.GossipAddr)
	if err != nil {
		return a, err
	}
	host, portText, _ := net.SplitHostPort(gossip)
	if a.gossipPort, err = strconv.Atoi(portText); err != nil {
		return a, fmt.Errorf("node: gossip port %q: %w", portText, err)
	}
	if a.gossipIP = net.ParseIP(host); a.gossipIP == nil {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupIP(lctx, "ip", host)
		if err != nil || len(ips) == 0 {
			return a, fmt.Errorf("node: advertised host %q: gossip needs an IP address, and looking it up failed: %v", host, err)
		}
		a.gossipIP = ips[0]
		for _, ip := range ips {
			if ip.To4() != nil { // as the default route is tried first
				a.gossipIP = ip
				break
			}
		}
	}
	if a.gossipIP.IsUnspecified() {
		return a, fmt.Errorf("node: advertised host %s is unspecified: the other members cannot dial it; name an address of this machine they can reach", host)
	}
	return a, nil
}
