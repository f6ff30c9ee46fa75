package node

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

func TestMaxConnsFromFileLimit(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{
		{256, 160},
		{1024, 832},
		{65536, 57280},
		{100, 25}, // the reserve would leave 24: a quarter of the limit
		{1, 1},
		{0, 0},       // unreadable
		{1 << 63, 0}, // unlimited
	} {
		if got := maxConnsFor(tc.limit); got != tc.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	if limit, ok := openFileLimit(); ok {
		if got, want := DefaultMaxConns(), maxConnsFor(limit); got != want || want == 0 {
			t.Errorf("DefaultMaxConns() = %d under a limit of %d, want %d", got, limit, want)
		}
	}
}

// readyz returns /readyz's status and body.
func readyz(t *testing.T, client *http.Client, n *Node) (int, string) {
	t.Helper()
	resp, err := client.Get("http://" + n.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReadyzAtConnectionLimit(t *testing.T) {
	n := startNode(t, "a", nil, func(c *Config) { c.MaxConns = 2 })
	if code, body := readyz(t, http.DefaultClient, n); code != 200 || !n.Ready() {
		t.Fatalf("below the limit: %d %q", code, body)
	}
	var clients []*rpc.Client
	for range 2 {
		c, err := rpc.Dial(context.Background(), n.RPCAddr(), rpc.ClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Call(context.Background(), rpc.MethodPing, nil); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	code, body := readyz(t, http.DefaultClient, n)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "connection limit") || n.Ready() {
		t.Fatalf("at the limit: %d %q", code, body)
	}

	// A third connection is closed on arrival and counted.
	extra, err := net.Dial("tcp", n.RPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ne net.Error
	if _, err := extra.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection beyond the limit was not closed: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the refusal in /metrics", func() bool {
		return strings.Contains(scrapeText(t, n), "\nshoal_rpc_connections_refused_total 1\n")
	})
	if text := scrapeText(t, n); !strings.Contains(text, "\nshoal_rpc_connections 2\n") ||
		!strings.Contains(text, "\nshoal_rpc_max_connections 2\n") {
		t.Fatalf("/metrics at the limit:\n%s", text)
	}

	clients[0].Close()
	testutil.WaitFor(t, 10*time.Second, "/readyz to say ready again", func() bool {
		code, _ := readyz(t, http.DefaultClient, n)
		return code == 200
	})
}

// scrapeText returns a node's /metrics.
func scrapeText(t *testing.T, n *Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestIdleHTTPConnectionIsClosed(t *testing.T) {
	n := startNode(t, "a", nil, func(c *Config) { c.HTTPIdleTimeout = 200 * time.Millisecond })
	conn, err := net.Dial("tcp", n.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET /healthz: %d, close %v: want a kept-alive 200", resp.StatusCode, resp.Close)
	}

	// Kept alive, then idle: the server closes it, well before this
	// deadline.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = r.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("an idle keep-alive connection is still open after 20s")
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("reading the idle connection: %v, want EOF", err)
	}
}
