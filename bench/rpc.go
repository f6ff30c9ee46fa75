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

// RPCTarget is one system in the rpc scenario: a server on 127.0.0.1 and
// one client connection to it, shared by every caller.
type RPCTarget struct {
	Name string // "shoal", "shoal-worker", "net/rpc" or "tcp-echo"
	// Call makes one round trip carrying payload and checks the reply.
	Call  func(payload []byte) error
	close []func() error
}

// Close stops the client and the server.
func (t *RPCTarget) Close() error {
	var errs []error
	for i := len(t.close) - 1; i >= 0; i-- {
		errs = append(errs, t.close[i]())
	}
	return errors.Join(errs...)
}

var errMismatch = errors.New("bench: reply differs from payload")

// StartShoal serves an echo function with the rpc package, registered
// Inline as the quick built-ins are: a call runs on the connection's reader
// when nothing else waits.
func StartShoal() (*RPCTarget, error) { return startShoal("shoal", rpc.Inline()) }

// StartShoalWorker serves the echo function without Inline, so every call
// is handed to a worker goroutine, as a call of a slower function is.
func StartShoalWorker() (*RPCTarget, error) { return startShoal("shoal-worker") }

func startShoal(name string, opts ...rpc.FuncOption) (*RPCTarget, error) {
	srv := rpc.NewServer(rpc.ServerConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.Register("echo", func(b []byte) []byte { return b }, opts...); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t := &RPCTarget{Name: name}
	t.close = append(t.close, func() error {
		srv.Close()
		<-served
		return nil
	})
	c, err := rpc.Dial(context.Background(), l.Addr().String(), rpc.ClientConfig{})
	if err != nil {
		t.Close()
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
	return t, nil
}

// EchoService is the net/rpc counterpart of Shoal's echo function.
type EchoService struct{}

// Echo replies with its argument.
func (EchoService) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// StartNetRPC serves the same echo with Go's net/rpc (gob encoding).
func StartNetRPC() (*RPCTarget, error) {
	srv := netrpc.NewServer()
	if err := srv.Register(EchoService{}); err != nil {
		return nil, err
	}
	ts, err := serveTCP(func(conn net.Conn) { srv.ServeConn(conn) })
	if err != nil {
		return nil, err
	}
	t := &RPCTarget{Name: "net/rpc", close: []func() error{ts.Close}}
	c, err := netrpc.Dial("tcp", ts.addr())
	if err != nil {
		t.Close()
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
	return t, nil
}

// StartRawEcho runs a TCP echo server: the floor any request-reply protocol
// over one loopback connection pays. Concurrent callers take turns on the
// connection, since raw bytes carry no ids to match replies by.
func StartRawEcho() (*RPCTarget, error) {
	ts, err := serveTCP(func(conn net.Conn) { io.Copy(conn, conn) })
	if err != nil {
		return nil, err
	}
	t := &RPCTarget{Name: "tcp-echo", close: []func() error{ts.Close}}
	conn, err := net.Dial("tcp", ts.addr())
	if err != nil {
		t.Close()
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
	return t, nil
}

// RPCConfig sizes the rpc scenario.
type RPCConfig struct {
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
	// raw TCP echo round trip, one caller at a time.
	SequentialVsEcho float64 `json:"sequential_vs_echo"`
	// ConcurrentVsNetRPC is Shoal's calls per second over net/rpc's, with
	// ConcurrentCallers callers (the most measured).
	ConcurrentVsNetRPC float64 `json:"concurrent_vs_net_rpc"`
	ConcurrentCallers  int     `json:"concurrent_callers"`
}

// RPCResult is one system at one number of callers.
type RPCResult struct {
	System         string  `json:"system"`
	Callers        int     `json:"callers"`
	Calls          int     `json:"calls"`
	Seconds        float64 `json:"seconds"`
	CallsPerSecond float64 `json:"calls_per_second"`
	Latency        Latency `json:"latency"`
	// ShoalRatio is Shoal's calls per second over this system's, with as
	// many callers.
	ShoalRatio float64 `json:"shoal_ratio"`
}

// Result returns the figures of system at callers, or nil.
func (r *RPCReport) Result(system string, callers int) *RPCResult {
	for i := range r.Results {
		if r.Results[i].System == system && r.Results[i].Callers == callers {
			return &r.Results[i]
		}
	}
	return nil
}

// RunRPC measures Shoal, net/rpc and the raw TCP echo at each number of
// callers, taking turns round by round.
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
				return nil, fmt.Errorf("bench: rpc: %s: %w", t.Name, err)
			}
		}
		for turn := 1; turn <= cfg.Turns; turn++ {
			p.printf("rpc: %d caller%s, turn %d of %d", callers, plural(callers), turn, cfg.Turns)
			for i, t := range targets {
				lat, took, err := measureCalls(ctx, callers, each, func() error { return t.Call(payload) })
				if err != nil {
					return nil, fmt.Errorf("bench: rpc: %s: %w", t.Name, err)
				}
				samples[i] = append(samples[i], lat...)
				elapsed[i] += took
			}
		}
		first := len(report.Results)
		for i, t := range targets {
			report.Results = append(report.Results, RPCResult{
				System:         t.Name,
				Callers:        callers,
				Calls:          len(samples[i]),
				Seconds:        elapsed[i].Seconds(),
				CallsPerSecond: PerSecond(len(samples[i]), elapsed[i]),
				Latency:        Summarize(samples[i]),
			})
		}
		shoal := report.Results[first].CallsPerSecond
		for i := first; i < len(report.Results); i++ {
			report.Results[i].ShoalRatio = Ratio(shoal, report.Results[i].CallsPerSecond)
		}
	}
	if s, e := report.Result("shoal", 1), report.Result("tcp-echo", 1); s != nil && e != nil {
		report.SequentialVsEcho = Ratio(e.CallsPerSecond, s.CallsPerSecond)
	}
	if most := slices.Max(cfg.Callers); most > 1 {
		if s, n := report.Result("shoal", most), report.Result("net/rpc", most); s != nil && n != nil {
			report.ConcurrentVsNetRPC, report.ConcurrentCallers = Ratio(s.CallsPerSecond, n.CallsPerSecond), most
		}
	}
	return report, nil
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
// echo, Shoal first.
func StartRPCTargets() ([]*RPCTarget, error) {
	var targets []*RPCTarget
	for _, start := range []func() (*RPCTarget, error){StartShoal, StartShoalWorker, StartNetRPC, StartRawEcho} {
		t, err := start()
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
