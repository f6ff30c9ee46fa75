package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	netrpc "net/rpc"
	"slices"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/rpc"
)

// Where the server of an RPCTarget runs.
const (
	// InProcess is a server in the bench's own process: client and server
	// share one Go runtime and its threads.
	InProcess = "in-process"
	// ChildProcess is a server in a process of its own (the shoal binary
	// serving EchoServerArgs), as users run a node: every call crosses
	// between two processes.
	ChildProcess = "child process"
)

// RPCTarget is one system in the rpc scenario: a server on 127.0.0.1 and
// one client connection to it, shared by every caller.
type RPCTarget struct {
	Name string // "shoal", "shoal-worker", "net/rpc" or "tcp-echo"
	// Server is where the server runs: InProcess or ChildProcess.
	Server string
	// Call makes one round trip carrying payload and checks the reply.
	Call  func(payload []byte) error
	close []func() error
}

// Close stops the client and, for a server in this process, the server.
func (t *RPCTarget) Close() error {
	var errs []error
	for i := len(t.close) - 1; i >= 0; i-- {
		errs = append(errs, t.close[i]())
	}
	return errors.Join(errs...)
}

var errMismatch = errors.New("bench: reply differs from payload")

// The systems of the rpc scenario, in the order they are measured.
const (
	systemShoal       = "shoal"
	systemShoalWorker = "shoal-worker"
	systemNetRPC      = "net/rpc"
	systemEcho        = "tcp-echo"
)

var rpcSystems = []string{systemShoal, systemShoalWorker, systemNetRPC, systemEcho}

// StartShoal serves an echo function with the rpc package, registered
// Inline as the quick built-ins are: a call runs on the connection's reader
// when nothing else waits.
func StartShoal() (*RPCTarget, error) { return startInProcess(systemShoal) }

// StartShoalWorker serves the echo function without Inline, so every call
// is handed to a worker goroutine, as a call of a slower function is.
func StartShoalWorker() (*RPCTarget, error) { return startInProcess(systemShoalWorker) }

// StartNetRPC serves the same echo with Go's net/rpc (gob encoding).
func StartNetRPC() (*RPCTarget, error) { return startInProcess(systemNetRPC) }

// StartRawEcho runs a TCP echo server: the floor any request-reply protocol
// over one loopback connection pays. Concurrent callers take turns on the
// connection, since raw bytes carry no ids to match replies by.
func StartRawEcho() (*RPCTarget, error) { return startInProcess(systemEcho) }

// startInProcess serves system in this process and dials it.
func startInProcess(system string) (*RPCTarget, error) {
	addr, stop, err := serveEcho(system)
	if err != nil {
		return nil, err
	}
	t, err := dialEcho(system, InProcess, addr)
	if err != nil {
		stop()
		return nil, err
	}
	t.close = append([]func() error{stop}, t.close...)
	return t, nil
}

// serveEcho starts system's echo server on 127.0.0.1 and returns its
// address and what stops it.
func serveEcho(system string) (addr string, stop func() error, err error) {
	switch system {
	case systemShoal, systemShoalWorker:
		var opts []rpc.FuncOption
		if system == systemShoal {
			opts = append(opts, rpc.Inline())
		}
		srv := rpc.NewServer(rpc.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err := srv.Register("echo", func(b []byte) []byte { return b }, opts...); err != nil {
			return "", nil, err
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		return l.Addr().String(), func() error {
			srv.Close()
			<-served
			return nil
		}, nil
	case systemNetRPC:
		srv := netrpc.NewServer()
		if err := srv.Register(EchoService{}); err != nil {
			return "", nil, err
		}
		ts, err := serveTCP(func(conn net.Conn) { srv.ServeConn(conn) })
		if err != nil {
			return "", nil, err
		}
		return ts.addr(), ts.Close, nil
	case systemEcho:
		ts, err := serveTCP(func(conn net.Conn) { io.Copy(conn, conn) })
		if err != nil {
			return "", nil, err
		}
		return ts.addr(), ts.Close, nil
	}
	return "", nil, fmt.Errorf("bench: no rpc system %q", system)
}

// dialEcho opens the one connection a target's callers share to system's
// server at addr.
func dialEcho(system, server, addr string) (*RPCTarget, error) {
	t := &RPCTarget{Name: system, Server: server}
	switch system {
	case systemShoal, systemShoalWorker:
		c, err := rpc.Dial(context.Background(), addr, rpc.ClientConfig{})
		if err != nil {
			return nil, err
		}
		t.close = append(t.close, c.Close)
		ctx := context.Background()
		t.Call = func(payload []byte) error {
			var reply []byte
			if err := c.Call(ctx, "echo", &reply, payload); err != nil {
				return err
			}
			if len(reply) != len(payload) {
				return errMismatch
			}
			return nil
		}
	case systemNetRPC:
		c, err := netrpc.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		t.close = append(t.close, c.Close)
		t.Call = func(payload []byte) error {
			var reply []byte
			if err := c.Call("EchoService.Echo", payload, &reply); err != nil {
				return err
			}
			if len(reply) != len(payload) {
				return errMismatch
			}
			return nil
		}
	case systemEcho:
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		t.close = append(t.close, conn.Close)
		var mu sync.Mutex
		var buf []byte
		t.Call = func(payload []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if _, err := conn.Write(payload); err != nil {
				return err
			}
			if cap(buf) < len(payload) {
				buf = make([]byte, len(payload))
			}
			_, err := io.ReadFull(conn, buf[:len(payload)])
			return err
		}
	default:
		return nil, fmt.Errorf("bench: no rpc system %q", system)
	}
	return t, nil
}

// EchoService is the net/rpc counterpart of Shoal's echo function.
type EchoService struct{}

// Echo replies with its argument.
func (EchoService) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// RPCConfig sizes the rpc scenario.
type RPCConfig struct {
	// Binary is the shoal executable that serves the echo servers in a
	// separate process (run as EchoServerArgs). Empty measures the
	// in-process servers only.
	Binary string `json:"-"`
	// Duration is how long each system is measured at each caller count,
	// split over Turns. Default 3s.
	Duration time.Duration `json:"duration_ns"`
	// Turns is how many times the systems take turns. Default 3.
	Turns int `json:"turns"`
	// Callers are the numbers of concurrent callers to measure, all of them
	// sharing one connection per system. Default 1 and 64.
	Callers []int `json:"callers"`
	// Payload is the bytes each call carries each way. Default 64.
	Payload int `json:"payload_bytes"`
}

// RPCReport is the rpc scenario's figures.
type RPCReport struct {
	Results []RPCResult `json:"results"`
	// SequentialVsEcho is how many times longer a Shoal call takes than a
	// raw TCP echo round trip, one caller at a time, server in-process.
	SequentialVsEcho float64 `json:"sequential_vs_echo"`
	// ConcurrentVsNetRPC is Shoal's calls per second over net/rpc's, with
	// ConcurrentCallers callers (the most measured), server in-process.
	ConcurrentVsNetRPC float64 `json:"concurrent_vs_net_rpc"`
	ConcurrentCallers  int     `json:"concurrent_callers"`
	// ProcessSequentialVsEcho and ProcessConcurrentVsNetRPC are the same
	// ratios with every server in a separate process; zero when none ran.
	ProcessSequentialVsEcho   float64 `json:"process_sequential_vs_echo,omitempty"`
	ProcessConcurrentVsNetRPC float64 `json:"process_concurrent_vs_net_rpc,omitempty"`
}

// RPCResult is one system at one number of callers.
type RPCResult struct {
	System string `json:"system"`
	// Server is where the server ran: InProcess or ChildProcess.
	Server         string  `json:"server"`
	Callers        int     `json:"callers"`
	Calls          int     `json:"calls"`
	Seconds        float64 `json:"seconds"`
	CallsPerSecond float64 `json:"calls_per_second"`
	Latency        Latency `json:"latency"`
	// ShoalRatio is Shoal's calls per second over this system's, with as
	// many callers and the server in the same place.
	ShoalRatio float64 `json:"shoal_ratio"`
}

// Result returns the figures of system at callers with its server
// in-process, or nil.
func (r *RPCReport) Result(system string, callers int) *RPCResult {
	return r.ResultAt(InProcess, system, callers)
}

// ResultAt returns the figures of system at callers with its server where
// server says, or nil. A result that names no server (from a report made
// before there was a choice) was measured in-process.
func (r *RPCReport) ResultAt(server, system string, callers int) *RPCResult {
	for i := range r.Results {
		res := &r.Results[i]
		where := res.Server
		if where == "" {
			where = InProcess
		}
		if where == server && res.System == system && res.Callers == callers {
			return res
		}
	}
	return nil
}

// RunRPC measures Shoal, net/rpc and the raw TCP echo at each number of
// callers, taking turns round by round: with the servers in this process
// and, when cfg.Binary is set, the same servers in a separate process.
// Zero fields of cfg take their defaults; progress, if not nil, gets a
// line per round.
func RunRPC(ctx context.Context, cfg RPCConfig, progress io.Writer) (*RPCReport, error) {
	cfg = Config{RPC: cfg}.withDefaults(DefaultConfig()).RPC
	p := progressLog{progress}
	targets, err := StartRPCTargets()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, t := range targets {
			t.Close()
		}
	}()
	if cfg.Binary != "" {
		child, err := startEchoProcess(ctx, cfg.Binary)
		if err != nil {
			return nil, err
		}
		defer child.Close()
		remote, err := child.targets()
		if err != nil {
			return nil, err
		}
		targets = append(targets, remote...)
	}
	payload := make([]byte, cfg.Payload)
	for i := range payload {
		payload[i] = 'x'
	}
	each := cfg.Duration / time.Duration(cfg.Turns)
	report := &RPCReport{}
	for _, callers := range cfg.Callers {
		samples := make([][]time.Duration, len(targets))
		elapsed := make([]time.Duration, len(targets))
		// A short unmeasured turn first, so connections and buffers are
		// warm for every system alike.
		for _, t := range targets {
			if _, _, err := measureCalls(ctx, callers, min(each/4, 100*time.Millisecond), func() error { return t.Call(payload) }); err != nil {
				return nil, fmt.Errorf("bench: rpc: %s (%s): %w", t.Name, t.Server, err)
			}
		}
		for turn := 1; turn <= cfg.Turns; turn++ {
			p.printf("rpc: %d caller%s, turn %d of %d", callers, plural(callers), turn, cfg.Turns)
			for i, t := range targets {
				lat, took, err := measureCalls(ctx, callers, each, func() error { return t.Call(payload) })
				if err != nil {
					return nil, fmt.Errorf("bench: rpc: %s (%s): %w", t.Name, t.Server, err)
				}
				samples[i] = append(samples[i], lat...)
				elapsed[i] += took
			}
		}
		first := len(report.Results)
		for i, t := range targets {
			report.Results = append(report.Results, RPCResult{
				System:         t.Name,
				Server:         t.Server,
				Callers:        callers,
				Calls:          len(samples[i]),
				Seconds:        elapsed[i].Seconds(),
				CallsPerSecond: PerSecond(len(samples[i]), elapsed[i]),
				Latency:        Summarize(samples[i]),
			})
		}
		for i := first; i < len(report.Results); i++ {
			res := &report.Results[i]
			if shoal := report.ResultAt(res.Server, systemShoal, callers); shoal != nil {
				res.ShoalRatio = Ratio(shoal.CallsPerSecond, res.CallsPerSecond)
			}
		}
	}
	report.SequentialVsEcho, report.ConcurrentVsNetRPC, report.ConcurrentCallers = report.ratios(InProcess, cfg.Callers)
	report.ProcessSequentialVsEcho, report.ProcessConcurrentVsNetRPC, _ = report.ratios(ChildProcess, cfg.Callers)
	return report, nil
}

// rpcTable prints the rpc scenario: the servers in this process, then in
// a separate one, and the ratios between the systems.
func rpcTable(w io.Writer, r *RPCReport, c RPCConfig) {
	fmt.Fprintf(w, "\nrpc: %d-byte echo over one loopback connection per system; %v per system in %d turns\n",
		c.Payload, c.Duration, c.Turns)
	fmt.Fprintln(w, "callers\tserver\tsystem\tcalls/s\tp50\tp90\tp99\tShoal's calls/s vs this")
	for _, server := range []string{InProcess, ChildProcess} {
		for _, res := range r.Results {
			if res.Server == server {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.Callers, res.Server, res.System, thousands(res.CallsPerSecond),
					micro(res.Latency.P50), micro(res.Latency.P90), micro(res.Latency.P99), times(res.ShoalRatio))
			}
		}
	}
	if r.SequentialVsEcho > 0 {
		fmt.Fprintf(w, "one caller: a Shoal call takes %s the time of a raw TCP echo round trip (server in-process)\n", times(r.SequentialVsEcho))
	}
	if r.ProcessSequentialVsEcho > 0 {
		fmt.Fprintf(w, "one caller: a Shoal call takes %s the time of a raw TCP echo round trip (server in a separate process)\n", times(r.ProcessSequentialVsEcho))
	}
	if r.ConcurrentVsNetRPC > 0 {
		fmt.Fprintf(w, "%d callers: Shoal makes %s the calls per second of net/rpc (server in-process)\n", r.ConcurrentCallers, times(r.ConcurrentVsNetRPC))
	}
	if r.ProcessConcurrentVsNetRPC > 0 {
		fmt.Fprintf(w, "%d callers: Shoal makes %s the calls per second of net/rpc (server in a separate process)\n", r.ConcurrentCallers, times(r.ProcessConcurrentVsNetRPC))
	}
}

// ratios returns, for the servers where server says, how many times longer
// a Shoal call takes than the raw echo with one caller, and Shoal's calls
// per second over net/rpc's with the most callers measured (when more than
// one), with that number; zero for what was not measured.
func (r *RPCReport) ratios(server string, callers []int) (vsEcho, vsNetRPC float64, most int) {
	if s, e := r.ResultAt(server, systemShoal, 1), r.ResultAt(server, systemEcho, 1); s != nil && e != nil {
		vsEcho = Ratio(e.CallsPerSecond, s.CallsPerSecond)
	}
	if m := slices.Max(callers); m > 1 {
		if s, n := r.ResultAt(server, systemShoal, m), r.ResultAt(server, systemNetRPC, m); s != nil && n != nil {
			vsNetRPC, most = Ratio(s.CallsPerSecond, n.CallsPerSecond), m
		}
	}
	return vsEcho, vsNetRPC, most
}

// measureCalls has callers goroutines call call until d has passed, and
// returns every call's latency and the time they all took. It stops early
// at the first failed call, or when ctx ends.
func measureCalls(ctx context.Context, callers int, d time.Duration, call func() error) ([]time.Duration, time.Duration, error) {
	per := make([][]time.Duration, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i := range callers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) || ctx.Err() != nil {
					break
				}
				if err := call(); err != nil {
					errs[i] = err
					break
				}
				lat = append(lat, time.Since(t0))
			}
			per[i] = lat
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, 0, err
	}
	return slices.Concat(per...), took, nil
}

// StartRPCTargets starts Shoal (Inline and not), net/rpc and the raw TCP
// echo in this process, Shoal first.
func StartRPCTargets() ([]*RPCTarget, error) {
	var targets []*RPCTarget
	for _, system := range rpcSystems {
		t, err := startInProcess(system)
		if err != nil {
			for _, t := range targets {
				t.Close()
			}
			return nil, fmt.Errorf("bench: start: %w", err)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// tcpServer runs a reference server on 127.0.0.1: one goroutine per
// connection, all of them stopped and waited for by Close.
type tcpServer struct {
	l  net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

func serveTCP(handle func(net.Conn)) (*tcpServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &tcpServer{l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				handle(conn)
			}()
		}
	}()
	return s, nil
}

func (s *tcpServer) addr() string { return s.l.Addr().String() }

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *tcpServer) Close() error {
	err := s.l.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
