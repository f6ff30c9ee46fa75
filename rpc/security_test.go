package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestTokenAuth(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{Token: "s3cret"})
	ctx := context.Background()

	// Without the token every call but shoal.auth is refused.
	plain := dial(t, addr, ClientConfig{})
	for _, method := range []string{"add", "shoal.ping", "shoal.describe"} {
		if err := plain.Call(ctx, method, nil, 1, 2); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("%s without token: got %v, want Unauthorized", method, err)
		}
	}
	if err := plain.Call(ctx, "shoal.auth", nil, "s3cret"); err != nil {
		t.Fatalf("right token: %v", err)
	}
	var sum int
	if err := plain.Call(ctx, "add", &sum, 1, 2); err != nil || sum != 3 {
		t.Fatalf("add after auth = %d, %v", sum, err)
	}

	// Dial authenticates for the caller, and reports a wrong token.
	good := dial(t, addr, ClientConfig{Token: "s3cret"})
	if err := good.Call(ctx, "add", &sum, 2, 2); err != nil || sum != 4 {
		t.Fatalf("add with token = %d, %v", sum, err)
	}
	if _, err := Dial(ctx, addr, ClientConfig{Token: "nope", Logger: quietLogger(t)}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial with wrong token: %v", err)
	}

	// A wrong guess costs the connection.
	guesser := dial(t, addr, ClientConfig{})
	if err := guesser.Call(ctx, "shoal.auth", nil, "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: got %v", err)
	}
	<-guesser.Done()
	if err := guesser.Call(ctx, "shoal.auth", nil, "s3cret"); !errors.As(err, new(*ConnError)) {
		t.Fatalf("second guess on the same connection: %v", err)
	}
}

// TestUnauthenticatedMessagesAreSmall: before a connection has shown the
// token, a large message closes it rather than being buffered, so a
// stranger cannot spend the server's memory budget; once authenticated,
// the connection may send up to the usual limit.
func TestUnauthenticatedMessagesAreSmall(t *testing.T) {
	_, addr := startServer(t, ServerConfig{Token: "s3cret"})
	ctx := context.Background()
	big := strings.Repeat("x", 1<<20)

	stranger := dial(t, addr, ClientConfig{})
	err := stranger.Call(ctx, "echo", nil, big)
	if !errors.As(err, new(*ConnError)) {
		t.Fatalf("a 1 MiB call before shoal.auth: got %v, want the connection closed", err)
	}

	member := dial(t, addr, ClientConfig{Token: "s3cret"})
	var got string
	if err := member.Call(ctx, "echo", &got, big); err != nil || got != big {
		t.Fatalf("a 1 MiB echo after shoal.auth: %d bytes back, %v", len(got), err)
	}
}

// TestStrangersMustShowTheTokenInTime: a connection that never shows the
// token is closed after AuthTimeout, even while it keeps sending calls
// that are refused, so strangers cannot hold a node's connections.
func TestStrangersMustShowTheTokenInTime(t *testing.T) {
	s, addr := startServer(t, ServerConfig{Token: "s3cret", AuthTimeout: 300 * time.Millisecond})
	stranger := dial(t, addr, ClientConfig{})
	member := dial(t, addr, ClientConfig{Token: "s3cret"})
	ctx := context.Background()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for closed := false; !closed; {
		select {
		case <-stranger.Done():
			closed = true
		case <-tick.C:
			// Keeps the connection busy, as a holder would.
			stranger.Call(ctx, "shoal.ping", nil)
		case <-deadline:
			t.Fatalf("a connection that never showed the token is still open after 20s (%d open)", s.Stats().Connections)
		}
	}
	var sum int
	if err := member.Call(ctx, "add", &sum, 2, 3); err != nil || sum != 5 {
		t.Fatalf("an authenticated connection after the timeout: %d, %v", sum, err)
	}
}

func TestTLS(t *testing.T) {
	checkGoroutines(t)
	pki := testutil.NewPKI(t)
	serverTLS, err := LoadServerTLS(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})
	clientTLS, err := LoadClientTLS(pki.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: clientTLS})
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 5, 6); err != nil || sum != 11 {
		t.Fatalf("add over TLS = %d, %v", sum, err)
	}

	// A plain-TCP client gets nothing useful, and the server goes on.
	plain, err := Dial(context.Background(), addr, ClientConfig{Logger: quietLogger(t)})
	if err == nil {
		err = plain.Call(context.Background(), "add", nil, 1, 2)
		plain.Close()
	}
	if err == nil {
		t.Fatal("plain TCP call to a TLS server succeeded")
	}
	// A client that does not trust the server's CA is refused.
	if _, err := Dial(context.Background(), addr, ClientConfig{TLS: &tls.Config{}}); err == nil {
		t.Fatal("client without the CA trusted the server")
	}
	if err := c.Call(context.Background(), "add", &sum, 1, 1); err != nil {
		t.Fatalf("TLS server stopped serving: %v", err)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	checkGoroutines(t)
	pki := testutil.NewPKI(t)
	serverTLS, err := LoadServerTLS(pki.ServerCert, pki.ServerKey, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})

	withCert, err := LoadClientTLS(pki.CAFile, pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: withCert})
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatalf("client with certificate: %v", err)
	}

	without, _ := LoadClientTLS(pki.CAFile, "", "")
	noCert, err := Dial(context.Background(), addr, ClientConfig{TLS: without, Logger: quietLogger(t)})
	if err == nil {
		// TLS 1.3 reports the refused certificate on first use.
		err = noCert.Call(context.Background(), "shoal.ping", nil)
		noCert.Close()
	}
	if err == nil {
		t.Fatal("client without a certificate was served")
	}
}

func TestLoadTLSErrors(t *testing.T) {
	if _, err := LoadServerTLS("/nonexistent.crt", "/nonexistent.key", ""); err == nil {
		t.Error("missing key pair accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	if _, err := LoadClientTLS(empty, "", ""); err == nil {
		t.Error("CA file without certificates accepted")
	}
}

// lineCounter is a log destination that counts lines by level.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (w *lineCounter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// warnings returns the lines logged at WARN or above.
func (w *lineCounter) warnings() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, l := range w.lines {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// authFrom opens a connection from the loopback address from (127.0.0.x;
// Linux routes the whole 127/8 to lo) and presents token on it.
func authFrom(t *testing.T, from, addr, token string) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn, ClientConfig{Logger: quietLogger(t)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Call(ctx, MethodAuth, nil, token)
}

// queuedWait is the least time n wrong guesses from one address take in
// all: no wait before the first, then authBaseDelay doubling.
func queuedWait(n int) time.Duration {
	var sum time.Duration
	for i := 1; i < n; i++ {
		sum += min(authBaseDelay<<(i-1), authMaxDelay)
	}
	return sum
}

func TestGuessingTheTokenIsSlowedAndLoggedAsCounts(t *testing.T) {
	checkGoroutines(t)
	logs := &lineCounter{}
	s, addr := startServer(t, ServerConfig{Token: "s3cret", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	start := time.Now()

	// One guess after the other from one address: each waits twice as
	// long as the one before.
	const serial = 5
	serialStart := time.Now()
	for i := 0; i < serial; i++ {
		if err := authFrom(t, "127.0.0.1", addr, fmt.Sprintf("guess-%d", i)); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if took, least := time.Since(serialStart), queuedWait(serial); took < least {
		t.Errorf("%d wrong guesses in a row took %v; the delays alone add up to %v", serial, took, least)
	}

	// Many guesses at once from another address queue as far apart as
	// guesses in a row would; those that would wait past the cap are
	// refused without being checked.
	const parallel = 30
	var checked, refused atomic.Int32
	var wg sync.WaitGroup
	burstStart := time.Now()
	for i := 0; i < parallel; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := authFrom(t, "127.0.0.2", addr, fmt.Sprintf("burst-%d", i))
			var e *Error
			switch {
			case errors.As(err, &e) && e.Message == "wrong token":
				checked.Add(1)
			case errors.As(err, &e) && strings.HasPrefix(e.Message, errAuthBacklog.Error()):
				refused.Add(1)
			default:
				t.Errorf("burst guess %d: %v", i, err)
			}
		}()
	}

	// Meanwhile the right token from a third address gets in without
	// waiting on the others' penalties (the bound is loose on purpose).
	rightStart := time.Now()
	if err := authFrom(t, "127.0.0.3", addr, "s3cret"); err != nil {
		t.Fatalf("right token from a clean address: %v", err)
	}
	if took := time.Since(rightStart); took > authMaxDelay/2 {
		t.Errorf("right token from a clean address took %v", took)
	}

	wg.Wait()
	burst := time.Since(burstStart)
	t.Logf("burst of %d: %d checked, %d refused unchecked, in %v", parallel, checked.Load(), refused.Load(), burst)
	if n := int(checked.Load()); n+int(refused.Load()) != parallel || burst < queuedWait(n) {
		t.Errorf("%d of %d parallel guesses were checked in %v; %d checked in a row take at least %v",
			n, parallel, burst, n, queuedWait(n))
	}
	if checked.Load() >= parallel/2 {
		t.Errorf("%d of %d parallel guesses were checked; most should wait past the cap and be refused", checked.Load(), parallel)
	}
	if err := authFrom(t, "127.0.0.3", addr, "s3cret"); err != nil {
		t.Fatalf("the server no longer lets the right token in: %v", err)
	}
	s.Close()

	// The failures are logged as counts: a first line, one per interval,
	// and the rest when the server closes; not a line per guess.
	elapsed := time.Since(start)
	warnings := logs.warnings()
	if most := 2 + int(elapsed/authLogEvery); len(warnings) > most {
		t.Fatalf("%d guesses logged %d warnings in %v, want at most %d:\n%s",
			serial+parallel, len(warnings), elapsed, most, strings.Join(warnings, "\n"))
	}
	if !strings.Contains(strings.Join(warnings, "\n"), "failed=") {
		t.Fatalf("the log does not count the failures:\n%s", strings.Join(warnings, "\n"))
	}
}

func TestAuthLimiterTableIsBounded(t *testing.T) {
	l := newAuthLimiter(quietLogger(t))
	defer l.close()
	for i := 0; i < authMaxAddresses+500; i++ {
		remote := fmt.Sprintf("10.%d.%d.%d:1234", i>>16&255, i>>8&255, i&255)
		if ok, err := l.check(context.Background(), remote, func() bool { return false }); ok || err != nil {
			t.Fatalf("guess from %s: %v %v", remote, ok, err)
		}
	}
	l.mu.Lock()
	n := len(l.addrs)
	l.mu.Unlock()
	if n > authMaxAddresses {
		t.Fatalf("the limiter remembers %d addresses, more than its bound %d", n, authMaxAddresses)
	}
	// IPv6 addresses of one /64 share a penalty.
	if addressKey("[2001:db8::1]:1") != addressKey("[2001:db8::ffff:2]:2") {
		t.Fatal("two addresses of one /64 have separate penalties")
	}
}

func TestTokenIsNotSentInTheClearBeyondLoopback(t *testing.T) {
	// The context has ended before Dial starts: whatever the client does,
	// no packet leaves for the documentation address below.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	const far = "192.0.2.1:7373"
	_, err := Dial(ended, far, ClientConfig{Token: "s3cret"})
	if !errors.Is(err, ErrPlaintextToken) {
		t.Fatalf("Dial with a token over plain TCP to %s: %v, want ErrPlaintextToken", far, err)
	}
	// Allowed explicitly, or over TLS, Dial goes ahead (and stops at the
	// ended context).
	for name, cfg := range map[string]ClientConfig{
		"allowed":  {Token: "s3cret", AllowPlaintextToken: true},
		"over TLS": {Token: "s3cret", TLS: &tls.Config{}},
		"no token": {},
	} {
		if _, err := Dial(ended, far, cfg); errors.Is(err, ErrPlaintextToken) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want the ended context's error", name, err)
		}
	}
	// Loopback, by IP or by name, gets the token as before.
	_, addr := startServer(t, ServerConfig{Token: "s3cret"})
	_, port, _ := net.SplitHostPort(addr)
	for _, a := range []string{addr, "localhost:" + port} {
		c, err := Dial(context.Background(), a, ClientConfig{Token: "s3cret"})
		if err != nil {
			t.Fatalf("token to %s: %v", a, err)
		}
		c.Close()
	}
	// A pool follows its config.
	p := NewPool(ClientConfig{Token: "s3cret"})
	defer p.Close()
	if _, err := p.Get(ended, far); !errors.Is(err, ErrPlaintextToken) {
		t.Fatalf("pool: %v", err)
	}
}
