package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/testutil"
	"github.com/shoalgrid/shoal/rpc"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

const processTimeout = 30 * time.Second

// startNode runs a lone `shoal node` on free ports and returns the process
// and the RPC address it logged.
func startNode(t *testing.T, env []string, args ...string) (*testutil.Process, string) {
	t.Helper()
	bin := testutil.ShoalBinary(t)
	all := append([]string{"node", "--gossip", "127.0.0.1:0", "--rpc", "127.0.0.1:0", "--http", "127.0.0.1:0"}, args...)
	p := testutil.Start(t, env, bin, all...)
	m := p.WaitForLine(`msg="node started" .* rpc=(127\.0\.0\.1:\d+)`, processTimeout)
	return p, m[1]
}

// runShoal runs the shoal binary to completion.
func runShoal(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testutil.Run(t, processTimeout, env, testutil.ShoalBinary(t), args...)
}

func TestCallCommandAgainstNodeProcess(t *testing.T) {
	_, addr := startNode(t, nil)
	cases := []struct {
		args   []string
		stdout string
		stderr string
		code   int
	}{
		{[]string{"add", "2", "3"}, "5\n", "", 0},
		{[]string{"square", "-12"}, "144\n", "", 0},
		{[]string{"echo", `{"list":[1,2.5,"x",null,true]}`}, `{"list":[1,2.5,"x",null,true]}` + "\n", "", 0},
		{[]string{"wordcount", `"the cat and the hat"`}, `{"and":1,"cat":1,"hat":1,"the":2}` + "\n", "", 0},
		{[]string{"fib", "50"}, "12586269025\n", "", 0},
		{[]string{"sha256", `"abc"`, "2"}, `"4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358"` + "\n", "", 0},
		{[]string{"sleep", "1"}, "1\n", "", 0},
		{[]string{"shoal.ping"}, `"pong"` + "\n", "", 0},
		{[]string{"fail", `"out of cheese"`}, "", "shoal: FunctionError: out of cheese", 1},
		{[]string{"add", "1", `"two"`}, "", "shoal: BadArguments: add(a int, b int) int: argument 2: want int, got string", 1},
		{[]string{"add", "1"}, "", "takes 2 arguments, got 1", 1},
		{[]string{"nope"}, "", `shoal: UnknownFunction: no live node offers "nope"`, 1},
		{[]string{"--direct", "nope"}, "", `shoal: UnknownFunction: no function named "nope"`, 1},
		{[]string{"echo", "hello"}, "", "argument 1 (hello): not a JSON literal", 1},
		{[]string{"--timeout", "50ms", "sleep", "60000"}, "", "shoal: Timeout: sleep: context deadline exceeded", 1},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runShoal(t, nil, append([]string{"call", "--seed", addr}, tc.args...)...)
			if stdout != tc.stdout || !strings.Contains(stderr, tc.stderr) || code != tc.code {
				t.Fatalf("got stdout %q, stderr %q, exit %d; want %q, %q, %d", stdout, stderr, code, tc.stdout, tc.stderr, tc.code)
			}
		})
	}
}

func TestCallTriesSeedsInOrder(t *testing.T) {
	_, addr := startNode(t, nil)
	dead := "127.0.0.1:1"
	stdout, stderr, code := runShoal(t, nil, "call", "--seed", dead+","+addr, "add", "1", "2")
	if code != 0 || stdout != "3\n" {
		t.Fatalf("with one dead seed: %q %q %d", stdout, stderr, code)
	}
	_, stderr, code = runShoal(t, nil, "call", "--seed", dead, "add", "1", "2")
	if code != 1 || !strings.Contains(stderr, "no seed answered") || !strings.Contains(stderr, "connection refused") {
		t.Fatalf("with only a dead seed: %q %d", stderr, code)
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	_, addr := startNode(t, []string{"SHOAL_TOKEN=s3cret", "SHOAL_GOSSIP_KEY=" + keyA})
	_, stderr, code := runShoal(t, nil, "call", "--seed", addr, "add", "1", "2")
	if code != 1 || !strings.Contains(stderr, addr+" requires a token: Unauthorized") || !strings.Contains(stderr, "--token") {
		t.Fatalf("call without the token: %q %d", stderr, code)
	}
	stdout, stderr, code := runShoal(t, []string{"SHOAL_SEED=" + addr, "SHOAL_TOKEN=s3cret"}, "call", "add", "1", "2")
	if code != 0 || stdout != "3\n" {
		t.Fatalf("call with token and seed from the environment: %q %q %d", stdout, stderr, code)
	}
	// The command line wins over the environment.
	_, stderr, code = runShoal(t, []string{"SHOAL_SEED=" + addr, "SHOAL_TOKEN=s3cret"}, "call", "--token", "wrong", "add", "1", "2")
	if code != 1 || !strings.Contains(stderr, "wrong token") {
		t.Fatalf("flag over environment: %q %d", stderr, code)
	}
	_, stderr, code = runShoal(t, []string{"SHOAL_TIMEOUT=soon"}, "call", "add", "1", "2")
	if code != 1 || !strings.Contains(stderr, "SHOAL_TIMEOUT") {
		t.Fatalf("bad environment value: %q %d", stderr, code)
	}
}

func TestInterruptCancelsCallOnNode(t *testing.T) {
	node, addr := startNode(t, nil, "--log-level", "debug")
	call := testutil.Start(t, nil, testutil.ShoalBinary(t), "call", "--seed", addr, "--log-level", "debug", "sleep", "60000")
	call.WaitForLine(`msg="call sent" function=sleep`, processTimeout)
	call.Signal(syscall.SIGINT)
	if code := call.Wait(processTimeout); code != 130 {
		t.Fatalf("interrupted call exited %d, want 130 as for submit", code)
	}
	if !strings.Contains(call.Stderr(), "shoal: interrupted: Canceled: sleep: context canceled") {
		t.Fatalf("interrupted call printed:\n%s", call.Stderr())
	}
	node.WaitForLine(`msg="rpc: call canceled by its caller"`, processTimeout)
}

func TestNodeWithTLS(t *testing.T) {
	pki := testutil.NewPKI(t)
	_, addr := startNode(t, nil, "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CAFile)
	stdout, stderr, code := runShoal(t, nil, "call", "--seed", addr, "--tls-ca", pki.CAFile,
		"--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey, "add", "20", "22")
	if code != 0 || stdout != "42\n" {
		t.Fatalf("call over mutual TLS: %q %q %d", stdout, stderr, code)
	}
	_, _, code = runShoal(t, nil, "call", "--seed", addr, "--tls-ca", pki.CAFile, "add", "1", "2")
	if code != 1 {
		t.Fatal("call without a client certificate succeeded")
	}
	_, stderr, code = runShoal(t, nil, "node", "--tls-cert", pki.ServerCert)
	if code != 1 || !strings.Contains(stderr, "--tls-cert and --tls-key go together") {
		t.Fatalf("half a TLS configuration: %q %d", stderr, code)
	}
}

func TestNodeDrainsOnSIGTERM(t *testing.T) {
	p, addr := startNode(t, nil)
	c, err := rpc.Dial(context.Background(), addr, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan *rpc.Call, 3)
	for i := 0; i < 3; i++ {
		c.Go(context.Background(), "sleep", new(int), done, 300)
	}
	// The server reads a connection in order: once ping is answered, the
	// three sleeps are running.
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	p.WaitForLine(`msg="leaving: .*in_flight=3`, processTimeout)
	for i := 0; i < 3; i++ {
		call := <-done
		if call.Error != nil || *call.Result.(*int) != 300 {
			t.Fatalf("in-flight call lost to SIGTERM: %v", call.Error)
		}
	}
	if code := p.Wait(processTimeout); code != 0 {
		t.Fatalf("node exited %d after draining, want 0", code)
	}
	p.WaitForLine(`msg="node stopped"`, processTimeout)
}

func TestNodeDrainTimeoutExitsNonZero(t *testing.T) {
	p, addr := startNode(t, nil, "--drain-timeout", "100ms")
	c, err := rpc.Dial(context.Background(), addr, rpc.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := c.Go(context.Background(), "sleep", nil, nil, 60_000)
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGINT)
	if code := p.Wait(processTimeout); code != 1 {
		t.Fatalf("node exited %d when the drain timed out, want 1", code)
	}
	<-call.Done
	if call.Error == nil {
		t.Fatal("a call cut off by the drain timeout reported success")
	}
	p.WaitForLine("drain cut short", processTimeout)
}

func TestNodeRefusesBusyPort(t *testing.T) {
	_, addr := startNode(t, nil)
	_, stderr, code := runShoal(t, nil, "node", "--rpc", addr)
	if code != 1 || !strings.Contains(stderr, "address already in use") {
		t.Fatalf("second node on a busy port: %q %d", stderr, code)
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	for _, cmd := range [][]string{{"--help"}, {"node", "--help"}, {"call", "--help"}, {"version", "--help"}} {
		stdout, _, code := runShoal(t, nil, cmd...)
		if code != 0 {
			t.Fatalf("%v exited %d", cmd, code)
		}
		for _, line := range strings.Split(stdout, "\n") {
			if flagLine.MatchString(line) && !explainedFlag.MatchString(line) {
				t.Errorf("%v: flag without an explanation: %q", cmd, line)
			}
		}
	}
	stdout, _, _ := runShoal(t, nil, "node", "--help")
	for _, want := range []string{"--rpc", "--token", "--tls-cert", "--tls-key", "sha256(text string, rounds int) string", "SIGTERM"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("node --help lacks %q", want)
		}
	}
	stdout, _, code := runShoal(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "shoal ") {
		t.Fatalf("version printed %q", stdout)
	}
	stdout, _, code = runShoal(t, nil, "completion", "bash")
	if code != 0 || !strings.Contains(stdout, "bash completion") {
		t.Fatalf("completion bash: exit %d", code)
	}
}

func TestUsageErrors(t *testing.T) {
	_, stderr, code := runShoal(t, nil, "call")
	if code != 1 || !strings.Contains(stderr, "requires at least 1 arg") {
		t.Fatalf("call without a function: %q %d", stderr, code)
	}
	_, stderr, code = runShoal(t, nil, "node", "--log-level", "loud")
	if code != 1 || !strings.Contains(stderr, "--log-level") {
		t.Fatalf("bad log level: %q %d", stderr, code)
	}
}

var (
	flagLine      = regexp.MustCompile(`^\s+(-\w, )?--[\w-]+`)
	explainedFlag = regexp.MustCompile(`^\s+(-\w, )?--[\w-]+( \w+)?\s{2,}\S+ \S+`)
)
