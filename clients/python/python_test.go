package python_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// python finds a Python 3 that has msgpack: Debian's, where its
// python3-msgpack is, or the one on the PATH. It skips the test without
// one, or fails it when SHOAL_REQUIRE_PYTHON is set, as CI sets it.
func python(t *testing.T) string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import msgpack").Run() == nil {
			return py
		}
	}
	if os.Getenv("SHOAL_REQUIRE_PYTHON") != "" {
		t.Fatal("no python3 with msgpack, and SHOAL_REQUIRE_PYTHON is set (Debian: apt-get install python3-msgpack)")
	}
	t.Skip("no python3 with msgpack (Debian: apt-get install python3-msgpack)")
	return ""
}

// The Python client's own tests, against a grid of two node processes:
// calls, errors, map jobs of 100,000 items in order, failed items, and a
// job seen and canceled from another node.
func TestPythonClient(t *testing.T) {
	py := python(t)
	a := testutil.StartNode(t, "py-a", "")
	b := testutil.StartNode(t, "py-b", a.Gossip)
	testutil.WaitFor(t, 10*time.Second, "each node to see the other", func() bool {
		return alive(t, a.RPC) == 2 && alive(t, b.RPC) == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "test_shoal.py", a.RPC, b.RPC).CombinedOutput()
	t.Logf("python3 test_shoal.py:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

// alive counts the members the node at addr sees alive.
func alive(t *testing.T, addr string) int {
	pool := rpc.NewPool(rpc.ClientConfig{})
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	members, err := grid.Stub{Caller: pool}.Members(ctx, addr)
	if err != nil {
		return 0
	}
	n := 0
	for _, m := range members {
		if m.State == grid.StateAlive {
			n++
		}
	}
	return n
}
