package node

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/portprobe"
)

// viewMember is a member as the event loop last saw it. memberlist's own
// Members() hands out pointers it goes on writing to, which is a data
// race, so the node keeps this copy instead.
type viewMember struct {
	grid.Member
	since        time.Time // when it was last seen joining, updating or leaving
	suspectUntil time.Time // this node suspects it until then, unless it is declared dead first
	leaving      bool      // it announced a graceful leave
}

type memberEvent struct {
	kind memberlist.NodeEventType
	node memberlist.Node
}

// eventQueue hands memberlist's events to the event loop. memberlist calls
// its delegates with its own lock held, so pushing must never block; and
// an event lost would leave the view wrong until the member changes again,
// so the queue grows instead of dropping. It only holds the events that
// arrive while the loop handles earlier ones.
type eventQueue struct {
	mu     sync.Mutex
	events []memberEvent
	wake   chan struct{} // has a value when events is not empty
}

func newEventQueue() eventQueue { return eventQueue{wake: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev memberEvent) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // the loop is already due to look
	}
}

// take returns the queued events in arrival order and empties the queue.
func (q *eventQueue) take() []memberEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs
}

func (n *Node) memberlistConfig() (*memberlist.Config, error) {
	host, portText, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("node: gossip port %q: %w", portText, err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = n.cfg.Name
	c.BindAddr = host
	c.BindPort = port
	c.AdvertiseAddr = n.adv.gossipIP.String()
	c.AdvertisePort = n.adv.gossipPort
	t := n.cfg.Timing
	c.ProbeInterval = t.ProbeInterval
	c.ProbeTimeout = t.ProbeTimeout
	c.SuspicionMult = t.SuspicionMult
	c.GossipInterval = t.GossipInterval
	c.PushPullInterval = t.PushPullInterval
	c.DeadNodeReclaimTime = t.DeadNodeReclaimTime
	c.TCPTimeout = max(10*t.ProbeTimeout, time.Second)
	c.GossipToTheDeadTime = max(t.PushPullInterval, 10*t.ProbeInterval)
	if len(n.cfg.GossipKey) > 0 {
		// memberlist decrypts with every key of the ring and encrypts
		// with its primary.
		if c.Keyring, err = memberlist.NewKeyring(n.cfg.GossipKeys, n.cfg.GossipKey); err != nil {
			return nil, fmt.Errorf("node: gossip keys: %w", err)
		}
	}
	c.Delegate = (*metaDelegate)(n)
	c.Events = (*eventDelegate)(n)
	c.Conflict = (*conflictDelegate)(n)
	c.Logger = log.New(&logBridge{log: n.log, suspect: n.suspect, closing: func() bool { return n.ctx.Err() != nil }}, "", 0)
	return c, nil
}

// joinFailure explains a failed join, pointing at the gossip key when the
// failure looks like one.
func joinFailure(err error) string {
	if err == nil {
		return "no seed answered"
	}
	s := strings.Join(strings.Fields(err.Error()), " ") // memberlist's errors span lines
	lower := strings.ToLower(s)
	if strings.Contains(lower, "decrypt") || strings.Contains(lower, "encrypt") || strings.Contains(lower, "keyring") {
		return s + " (do all members use the same --gossip-key?)"
	}
	return s
}

// wrongSeeds names the seeds that answer as something other than a gossip
// port, such as a node's RPC or HTTP address: joining through them can
// never work, however long it is retried.
func (n *Node) wrongSeeds(ctx context.Context) []string {
	var wrong []string
	for _, seed := range n.cfg.Join {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		kind := portprobe.Identify(pctx, seed)
		cancel()
		switch kind {
		case portprobe.RPC:
			wrong = append(wrong, seed+" answers msgpack-rpc: it is a node's RPC address, not its gossip address")
		case portprobe.HTTP:
			wrong = append(wrong, seed+" answers HTTP: it is a node's HTTP address, not its gossip address")
		}
	}
	return wrong
}

// forgetGone drops the members dead or left for longer than
// cfg.ForgetAfter.
func (n *Node) forgetGone() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, v := range n.view {
		if v.Gone() && time.Since(v.since) > n.cfg.ForgetAfter {
			delete(n.view, name)
		}
	}
}

// suspect records that this node's probe of name failed. memberlist
// declares the member dead if it does not refute the suspicion in time;
// if it is still alive after the longest suspicion timeout, it refuted.
func (n *Node) suspect(name string) {
	t := n.cfg.Timing
	n.mu.Lock()
	defer n.mu.Unlock()
	scale := max(1, math.Log10(float64(len(n.view))))
	window := time.Duration(6 * float64(t.SuspicionMult) * scale * float64(t.ProbeInterval))
	if v := n.view[name]; v != nil && v.State == grid.StateAlive {
		v.suspectUntil = time.Now().Add(window)
	}
}

// eventLoop handles membership events in the order memberlist gave them,
// off memberlist's goroutines.
func (n *Node) eventLoop() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.events.wake:
		}
		for _, ev := range n.events.take() {
			n.handleEvent(ev)
		}
		n.followCacheRing()
	}
}

func (n *Node) handleEvent(ev memberEvent) {
	m := toMember(&ev.node)
	n.mu.Lock()
	if ev.kind == memberlist.NodeLeave {
		m.State = grid.StateDead
		if last := n.view[m.Name]; last != nil && last.leaving {
			m.State = grid.StateLeft
		}
	}
	n.view[m.Name] = &viewMember{Member: m, since: time.Now(), leaving: leavingFlag(&ev.node)}
	if m.State == grid.StateDead {
		n.lost[m.Name] = lostMember{gossip: m.Gossip, since: time.Now()}
	} else {
		delete(n.lost, m.Name)
	}
	n.mu.Unlock()
	switch ev.kind {
	case memberlist.NodeJoin, memberlist.NodeUpdate:
		if ev.kind == memberlist.NodeJoin {
			n.log.Info("member joined", "name", m.Name, "rpc", m.RPC, "gossip", m.Gossip)
		}
		if m.Digest != "" && m.RPC != "" && m.Name != n.cfg.Name && !n.catalogue.knows(m.Digest) {
			n.goFunc(func() {
				ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
				defer cancel()
				if _, err := n.functionsOf(ctx, m); err != nil {
					n.log.Warn("could not fetch a member's functions", "name", m.Name, "rpc", m.RPC, "err", err)
				}
			})
		}
	case memberlist.NodeLeave:
		n.log.Info("member gone", "name", m.Name, "state", m.State)
		n.jobs.coordinatorGone(m.Name, m.State)
	}
}

// Members returns every member the node knows, sorted by name: the live
// ones and, for cfg.ForgetAfter, the dead and left. A live member this node
// is probing without answer shows as suspect.
func (n *Node) Members() []grid.Member {
	now := time.Now()
	n.mu.Lock()
	out := make([]grid.Member, 0, len(n.view))
	for _, v := range n.view {
		m := v.Member
		if m.State == grid.StateAlive && now.Before(v.suspectUntil) {
			m.State = grid.StateSuspect
		}
		if m.Name == n.cfg.Name {
			m.Running, m.Queued = n.exec.Load()
		}
		out = append(out, m)
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func toMember(node *memberlist.Node) grid.Member {
	m := grid.Member{
		Name:   node.Name,
		Gossip: net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port))),
		State:  grid.StateAlive, // memberlist does not keep Node.State current; events say more
	}
	if md, err := decodeMeta(node.Meta); err == nil {
		m.RPC, m.HTTP, m.Slots, m.Running, m.Queued = md.RPC, md.HTTP, md.Slots, md.Running, md.Queued
		m.Digest, m.CacheAddr, m.Version = md.Digest, md.Cache, md.Version
		m.CacheBytes = md.CacheBytes
	}
	return m
}

func leavingFlag(node *memberlist.Node) bool {
	md, err := decodeMeta(node.Meta)
	return err == nil && md.Leaving
}

// eventDelegate queues memberlist's events for the event loop; it never
// blocks, never drops an event and never calls memberlist.
type eventDelegate Node

func (d *eventDelegate) queue(kind memberlist.NodeEventType, node *memberlist.Node) {
	d.events.push(memberEvent{kind: kind, node: *node})
}

// NotifyJoin queues a join.
func (d *eventDelegate) NotifyJoin(node *memberlist.Node) { d.queue(memberlist.NodeJoin, node) }

// NotifyLeave queues a death or a leave.
func (d *eventDelegate) NotifyLeave(node *memberlist.Node) { d.queue(memberlist.NodeLeave, node) }

// NotifyUpdate queues a metadata change.
func (d *eventDelegate) NotifyUpdate(node *memberlist.Node) { d.queue(memberlist.NodeUpdate, node) }

// conflictDelegate hears of members claiming a name another member holds
// at another address. memberlist keeps the member it knew and ignores the
// newcomer; when the newcomer is this node, joining, Start fails instead of
// serving a grid that will never list it.
type conflictDelegate Node

// NotifyConflict records a live member holding this node's name.
func (d *conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	n := (*Node)(d)
	if existing.Name == n.cfg.Name && n.joining.Load() {
		holder := *other
		n.nameHeld.Store(&holder)
	}
}

// logBridge sends memberlist's log lines ("[LEVEL] memberlist: ...") to
// slog at the matching level. memberlist reports a failed probe only in its
// log, so the bridge also passes the suspected member's name on.
type logBridge struct {
	log     *slog.Logger
	suspect func(name string)
	closing func() bool // once true, memberlist's complaints about closed sockets are expected
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for tag, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, tag) {
			level = l
			line = strings.TrimSpace(strings.TrimPrefix(line, tag))
			break
		}
	}
	if level > slog.LevelInfo && b.closing() {
		level = slog.LevelDebug
	}
	b.log.Log(context.Background(), level, line, "component", "memberlist")
	if rest, ok := strings.CutPrefix(line, "memberlist: Suspect "); ok {
		if name, _, ok := strings.Cut(rest, " has failed, no acks received"); ok {
			b.suspect(name)
		}
	}
	return len(p), nil
}

var _ io.Writer = (*logBridge)(nil)

// reconnectLoop is Serf's answer to partitions, which memberlist leaves
// alone: a member declared dead is never contacted again, so when a cut
// link comes back each side goes on believing the other dead. Every
// Timing.ReconnectInterval the node tries to join one of them.
func (n *Node) reconnectLoop() {
	t := time.NewTicker(n.cfg.Timing.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.draining.Load() {
			continue
		}
		targets := n.reconnectTargets()
		if len(targets) == 0 {
			continue
		}
		// One a round, as Serf does: any member reached brings the whole
		// of its side's state, and a member dead for good costs one
		// attempt a round.
		target := targets[rand.IntN(len(targets))]
		before := n.ml.NumMembers()
		if joined, err := n.ml.Join([]string{target}); joined > 0 {
			// A seed can be a live member under another address (a
			// Service's), so joining it may bring no one new.
			level := slog.LevelDebug
			if n.ml.NumMembers() > before {
				level = slog.LevelInfo
			}
			n.log.Log(n.ctx, level, "reconnected to the grid", "through", target, "members", n.ml.NumMembers())
		} else {
			n.log.Debug("reconnect failed", "through", target, "err", joinFailure(err))
		}
	}
}

// reconnectFor is how long the node goes on trying to reach a member it
// declared dead, as Serf's reconnect_timeout: longer than the view shows it
// (Config.ForgetAfter), so that a long partition heals too.
const reconnectFor = 24 * time.Hour

// lostMember is a member declared dead, not since seen alive or leaving.
type lostMember struct {
	gossip string
	since  time.Time
}

// reconnectTargets returns the gossip addresses worth trying to join
// again: members declared dead within reconnectFor (a graceful leave is
// final), and, when there are such members or the node is alone, the
// seeds no live member holds, looked up again each time (the pods behind a
// Kubernetes Service come and go). A whole grid has nothing to try.
func (n *Node) reconnectTargets() []string {
	live := map[string]bool{n.GossipAddr(): true}
	var dead []string
	n.mu.Lock()
	for _, v := range n.view {
		if !v.Gone() {
			live[v.Gossip] = true
		}
	}
	for name, l := range n.lost {
		if time.Since(l.since) > reconnectFor {
			delete(n.lost, name)
			continue
		}
		dead = append(dead, l.gossip)
	}
	n.mu.Unlock()
	targets := slices.DeleteFunc(dead, func(a string) bool { return live[a] })
	if len(targets) == 0 && len(live) > 1 {
		return nil
	}
	for _, seed := range n.cfg.Join {
		for _, a := range n.resolveSeed(seed) {
			if !live[a] && !slices.Contains(targets, a) {
				targets = append(targets, a)
			}
		}
	}
	return targets
}

// resolveSeed returns the gossip addresses a --join entry names now: its
// host looked up, the port defaulting to this node's gossip port.
func (n *Node) resolveSeed(seed string) []string {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		host, port = seed, strconv.Itoa(n.adv.gossipPort)
	}
	if ip := net.ParseIP(host); ip != nil {
		return []string{net.JoinHostPort(ip.String(), port)}
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.Timing.ReconnectInterval)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		n.log.Debug("seed not found", "seed", seed, "err", err)
		return nil
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a, port))
	}
	return out
}
