package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The limits on guessing a server's token. One failed shoal.auth costs the
// connection already; these make each address wait longer for each guess,
// however many connections it opens.
const (
	// authBaseDelay is how long an address waits for its next check after
	// its first failure; each further failure doubles it.
	authBaseDelay = 100 * time.Millisecond
	// authMaxDelay caps the doubling. An attempt that would wait longer,
	// because others from the same address are already waiting, is refused
	// unchecked.
	authMaxDelay = 10 * time.Second
	// authForget is how long after its last wait an address is forgotten.
	authForget = 5 * time.Minute
	// authMaxAddresses bounds the addresses remembered. Past it the stale
	// ones are dropped, then arbitrary ones: memory stays bounded whatever
	// the number of addresses guessing, at the cost of forgetting some of
	// their penalties.
	authMaxAddresses = 4096
	// authLogEvery is how often failures are summed up in the log.
	authLogEvery = 10 * time.Second
)

// errAuthBacklog is the refusal of an attempt that would wait longer than
// authMaxDelay.
var errAuthBacklog = errors.New("too many failed attempts from this address")

// authLimiter slows down guessing the token, per remote address: after a
// failure the address's next attempt is checked only once a delay has
// passed, and the delay doubles with each failure up to authMaxDelay. An
// attempt that has to wait is counted as a failure in advance, so
// attempts on parallel connections queue as far apart as one after the
// other would: opening more connections does not guess faster. It also
// logs failures as counts, one line per authLogEvery, rather than a line
// per guess.
type authLimiter struct {
	log *slog.Logger

	mu    sync.Mutex
	addrs map[string]*authPenalty

	// Failures since the last log line, and the timer that writes the
	// next one; report is nil when no line is due.
	failed, refused int
	lastRemote      string
	lastLine        time.Time
	report          *time.Timer
	closed          bool
}

// authPenalty is what an address's failures cost it.
type authPenalty struct {
	next  time.Time     // no attempt from the address is checked before then
	delay time.Duration // the wait the last failure, or queued attempt, added
}

func newAuthLimiter(log *slog.Logger) *authLimiter {
	return &authLimiter{log: log, addrs: make(map[string]*authPenalty)}
}

// check runs compare for an attempt from remote once the address's
// penalty allows, and records whether it matched. It returns
// errAuthBacklog, without comparing, when the attempt would wait longer
// than authMaxDelay, and ctx's error when ctx ends while it waits. The
// comparison runs under the limiter's lock, so that two attempts arriving
// together from a fresh address are checked one after the other, the
// second behind the first's penalty.
func (l *authLimiter) check(ctx context.Context, remote string, compare func() bool) (bool, error) {
	key := addressKey(remote)
	l.mu.Lock()
	now := time.Now()
	queued := false
	if p := l.penalty(key, now); p != nil && now.Before(p.next) {
		wait := p.next.Sub(now)
		if wait > authMaxDelay {
			l.refused++
			l.noteLocked(key, "refused unchecked: "+errAuthBacklog.Error())
			l.mu.Unlock()
			return false, errAuthBacklog
		}
		// The attempt after this one waits as if this one had failed.
		p.delay = min(2*p.delay, authMaxDelay)
		p.next = p.next.Add(p.delay)
		queued = true
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		l.mu.Lock()
		now = time.Now()
	}
	defer l.mu.Unlock()
	if compare() {
		if p := l.addrs[key]; p != nil {
			// Someone at the address knows the token: let its penalty
			// fade, but not vanish, since others may share the address.
			if p.delay /= 2; p.delay < authBaseDelay {
				delete(l.addrs, key)
			}
		}
		return true, nil
	}
	p := l.addrs[key]
	switch {
	case p == nil:
		p = l.insertLocked(key, now)
		p.delay = authBaseDelay
	case !queued: // a queued attempt's failure was counted when it queued
		p.delay = min(2*p.delay, authMaxDelay)
	}
	p.next = later(p.next, now.Add(p.delay))
	l.failed++
	l.noteLocked(key, "wrong token")
	return false, nil
}

// penalty returns the address's penalty, forgetting it if it is stale.
func (l *authLimiter) penalty(key string, now time.Time) *authPenalty {
	p := l.addrs[key]
	if p != nil && now.Sub(p.next) > authForget {
		delete(l.addrs, key)
		return nil
	}
	return p
}

// insertLocked adds a penalty for key, making room if the table is full.
func (l *authLimiter) insertLocked(key string, now time.Time) *authPenalty {
	if len(l.addrs) >= authMaxAddresses {
		for k, p := range l.addrs {
			if now.Sub(p.next) > authForget {
				delete(l.addrs, k)
			}
		}
		// Still full: drop an eighth, so that the sweep above runs once
		// per many new addresses, not for each.
		for k := range l.addrs {
			if len(l.addrs) < authMaxAddresses-authMaxAddresses/8 {
				break
			}
			delete(l.addrs, k)
		}
	}
	p := &authPenalty{next: now}
	l.addrs[key] = p
	return p
}

// noteLocked logs a failed or refused attempt: the first after a quiet
// spell at once, the rest as a count every authLogEvery.
func (l *authLimiter) noteLocked(key, why string) {
	if l.closed {
		return
	}
	l.lastRemote = key
	if l.report == nil {
		l.log.Warn("rpc: shoal.auth failed; further failures are counted and logged every "+authLogEvery.String(),
			"remote", key, "reason", why)
		l.failed, l.refused = 0, 0
		l.lastLine = time.Now()
		l.report = time.AfterFunc(authLogEvery, l.reportFailures)
	}
}

// reportFailures logs the failures since the last line, if there were any,
// and otherwise lets the next failure be logged at once.
func (l *authLimiter) reportFailures() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if l.failed == 0 && l.refused == 0 {
		l.report = nil
		return
	}
	l.logCountsLocked()
	l.report.Reset(authLogEvery)
}

func (l *authLimiter) logCountsLocked() {
	now := time.Now()
	l.log.Warn("rpc: failed shoal.auth attempts", "failed", l.failed, "refused_unchecked", l.refused,
		"last_remote", l.lastRemote, "over", now.Sub(l.lastLine).Round(time.Millisecond), "addresses_penalized", len(l.addrs))
	l.failed, l.refused, l.lastLine = 0, 0, now
}

// close stops the reports, logging the failures not yet reported.
func (l *authLimiter) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.report != nil {
		l.report.Stop()
		if l.failed > 0 || l.refused > 0 {
			l.logCountsLocked()
		}
	}
}

// addressKey is what penalties are kept by: the IP of a remote address, or
// for IPv6 its /64, which one host usually holds whole.
func addressKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
