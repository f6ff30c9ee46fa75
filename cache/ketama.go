package cache

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"

	"github.com/bradfitz/gomemcache/memcache"
)

// pointsPerServer is libmemcached's MEMCACHED_POINTS_PER_SERVER_KETAMA:
// with equal weights each server gets 160 points, four per MD5 digest.
const pointsPerServer = 160

// ring is an immutable ketama continuum.
type ring struct {
	servers []string   // as given, in order
	addrs   []net.Addr // one value per server, reused across rings
	points  []point    // sorted by hash
	// crcKeys hashes keys with CRC-32 (Castagnoli, in hardware on most
	// processors), as groupcache does, rather than libmemcached's MD5: a
	// ring of named peers need agree only with itself, and a lookup
	// hashes every key of a job.
	crcKeys bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type point struct {
	hash   uint32
	server int
}

// serverAddr is a memcached server's address as gomemcache dials it.
type serverAddr struct{ hostport string }

func (a *serverAddr) Network() string { return "tcp" }
func (a *serverAddr) String() string  { return a.hostport }

// newRing places servers on the continuum as libmemcached does in weighted
// ketama mode with equal weights: for each server, 40 strings "host-N"
// (port 11211) or "host:port-N" (any other port), N from 0, each hashed
// with MD5 into four little-endian 32-bit points. Addresses of servers in
// prev are reused so that the same server keeps the same net.Addr.
func newRing(servers []string, prev *ring) (*ring, error) {
	r := &ring{servers: append([]string(nil), servers...)}
	known := make(map[string]net.Addr)
	if prev != nil {
		for i, s := range prev.servers {
			known[s] = prev.addrs[i]
		}
	}
	seen := make(map[string]bool)
	for i, s := range servers {
		host, portText, err := net.SplitHostPort(s)
		if err != nil {
			return nil, fmt.Errorf("cache: memcached server %q: %w", s, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil || port <= 0 || port > 65535 {
			return nil, fmt.Errorf("cache: memcached server %q: bad port", s)
		}
		if seen[s] {
			return nil, fmt.Errorf("cache: memcached server %q listed twice", s)
		}
		seen[s] = true
		addr := known[s]
		if addr == nil {
			addr = &serverAddr{hostport: s}
		}
		r.addrs = append(r.addrs, addr)
		r.addPoints(i, func(n int) string {
			if port == 11211 {
				return host + "-" + strconv.Itoa(n)
			}
			return host + ":" + portText + "-" + strconv.Itoa(n)
		})
	}
	r.sort()
	return r, nil
}

// newNameRing places named peers on the continuum as newRing places
// servers, with the strings "name-N", and hashes keys with CRC-32: any peer that computes the ring from
// the same names places every key the same way, whatever order it lists
// them in.
func newNameRing(names []string) *ring {
	r := &ring{servers: append([]string(nil), names...), crcKeys: true}
	sort.Strings(r.servers)
	r.servers = slices.Compact(r.servers)
	for i, name := range r.servers {
		r.addPoints(i, func(n int) string { return name + "-" + strconv.Itoa(n) })
	}
	r.sort()
	return r
}

// addPoints adds server's pointsPerServer points: four per MD5 digest of
// label(N), N from 0.
func (r *ring) addPoints(server int, label func(n int) string) {
	for n := 0; n < pointsPerServer/4; n++ {
		digest := md5.Sum([]byte(label(n)))
		for x := 0; x < 4; x++ {
			r.points = append(r.points, point{hash: binary.LittleEndian.Uint32(digest[4*x:]), server: server})
		}
	}
}

func (r *ring) sort() {
	sort.SliceStable(r.points, func(i, j int) bool { return r.points[i].hash < r.points[j].hash })
}

// shares returns the fraction of the key space each server owns, in
// server order: the arcs that end at its points.
func (r *ring) shares() []float64 {
	out := make([]float64, len(r.servers))
	if len(r.points) == 0 {
		return out
	}
	prev := r.points[len(r.points)-1].hash
	for _, p := range r.points {
		out[p.server] += float64(p.hash-prev) / (1 << 32) // wraps round for the first point
		prev = p.hash
	}
	return out
}

// pick returns the index of the server for key: the first point at or
// after the key's hash, wrapping round to the first point.
func (r *ring) pick(key string) int {
	var h uint32
	if r.crcKeys {
		h = crc32.Checksum([]byte(key), castagnoli)
	} else {
		digest := md5.Sum([]byte(key))
		h = binary.LittleEndian.Uint32(digest[:4])
	}
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].server
}

// Selector is a gomemcache ServerSelector placing keys by ketama. Its
// server list may change at any time; the ring is rebuilt and swapped in
// whole, so every lookup sees one list or the other.
type Selector struct {
	ring atomic.Pointer[ring]
}

var _ memcache.ServerSelector = (*Selector)(nil)

// NewSelector returns a selector over servers ("host:port").
func NewSelector(servers ...string) (*Selector, error) {
	s := &Selector{}
	return s, s.SetServers(servers...)
}

// SetServers replaces the server list.
func (s *Selector) SetServers(servers ...string) error {
	r, err := newRing(servers, s.ring.Load())
	if err != nil {
		return err
	}
	s.ring.Store(r)
	return nil
}

// Servers returns the current server list.
func (s *Selector) Servers() []string {
	return append([]string(nil), s.ring.Load().servers...)
}

// PickServer returns the server for key; the same server always comes back
// as the same net.Addr value, so gomemcache's GetMulti sends one request
// per server.
func (s *Selector) PickServer(key string) (net.Addr, error) {
	r := s.ring.Load()
	if len(r.points) == 0 {
		return nil, memcache.ErrNoServers
	}
	return r.addrs[r.pick(key)], nil
}

// Each calls f for each server.
func (s *Selector) Each(f func(net.Addr) error) error {
	for _, a := range s.ring.Load().addrs {
		if err := f(a); err != nil {
			return err
		}
	}
	return nil
}
