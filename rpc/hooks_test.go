package rpc

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestRegisterSystem(t *testing.T) {
	s, addr := startServer(t, ServerConfig{Token: "t"})
	if err := s.RegisterSystem("shoal.members", func() []string { return []string{"a", "b"} }); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"members", "shoal.", "shoal.ping", "shoal.describe"} {
		if err := s.RegisterSystem(name, func() {}); err == nil {
			t.Errorf("system name %q accepted", name)
		}
	}
	c := dial(t, addr, ClientConfig{Token: "t"})
	var got []string
	if err := c.Call(context.Background(), "shoal.members", &got); err != nil || len(got) != 2 {
		t.Fatalf("shoal.members = %v, %v", got, err)
	}
	for _, fn := range s.Functions() {
		if fn.Name == "shoal.members" {
			t.Fatal("a system method is listed among the functions")
		}
	}
	// System methods need the token like everything else.
	plain := dial(t, addr, ClientConfig{})
	if err := plain.Call(context.Background(), "shoal.members", nil); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("system method without token: %v", err)
	}
}

func TestAdmitGatesUserCalls(t *testing.T) {
	checkGoroutines(t)
	gate := make(chan struct{})
	var mu sync.Mutex
	var admitted []string
	admit := func(ctx context.Context, fn FunctionInfo) (func(), error) {
		if fn.Name == "fail" {
			return nil, Errorf(KindOverloaded, "queue full")
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		mu.Lock()
		admitted = append(admitted, fn.Name)
		mu.Unlock()
		return func() {}, nil
	}
	s, addr := startServer(t, ServerConfig{Admit: admit})
	if err := s.RegisterSystem("shoal.status", func() string { return "up" }); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()

	if err := c.Call(ctx, "fail", nil, "x"); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("refused call: %v", err)
	}
	call := c.Go(ctx, "add", new(int), nil, 1, 2)
	// System methods and built-ins pass while the user call waits.
	var status string
	if err := c.Call(ctx, "shoal.status", &status); err != nil || status != "up" {
		t.Fatalf("system method behind a closed gate: %q, %v", status, err)
	}
	select {
	case <-call.Done:
		t.Fatal("call ran before it was admitted")
	default:
	}
	close(gate)
	<-call.Done
	if call.Error != nil || *call.Result.(*int) != 3 {
		t.Fatalf("admitted call: %v", call.Error)
	}
	mu.Lock()
	if len(admitted) != 1 || admitted[0] != "add" {
		t.Fatalf("admitted %v", admitted)
	}
	mu.Unlock()
	// The reply goes out before the call's goroutine finishes its books.
	waitFor(t, "no call in flight", func() bool { return s.Stats().InFlight == 0 })
}

func TestObserveSeesEveryAnsweredCall(t *testing.T) {
	type seen struct {
		method  string
		outcome Kind
	}
	var mu sync.Mutex
	var got []seen
	observe := func(method string, outcome Kind, elapsed time.Duration) {
		mu.Lock()
		got = append(got, seen{method, outcome})
		mu.Unlock()
	}
	_, addr := startServer(t, ServerConfig{Observe: observe})
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()
	c.Call(ctx, "add", nil, 1, 2)
	c.Call(ctx, "fail", nil, "x")
	c.Call(ctx, "add", nil, "x")
	c.Call(ctx, "nope", nil)
	c.Call(ctx, "shoal.ping", nil)
	want := []seen{{"add", ""}, {"fail", KindFunctionError}, {"add", KindBadArguments}, {"nope", KindUnknownFunction}, {"shoal.ping", ""}}
	waitFor(t, "all calls observed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("observed %v, want %v", got, want)
		}
	}
}

func TestCompletedSeesSuccessfulUserCalls(t *testing.T) {
	type done struct {
		fn     string
		args   []any
		result any
	}
	got := make(chan done, 10)
	s, addr := startServer(t, ServerConfig{Completed: func(fn FunctionInfo, args []any, result any) {
		got <- done{fn.Name, args, result}
	}})
	if err := s.RegisterSystem("shoal.x", func() int { return 1 }); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{})
	ctx := context.Background()
	c.Call(ctx, "fail", nil, "x")   // failed: not reported
	c.Call(ctx, "shoal.x", nil)     // system: not reported
	c.Call(ctx, "add", nil, 20, 22) // reported
	d := <-got
	if d.fn != "add" || len(d.args) != 2 || d.args[0] != 20 || d.args[1] != 22 || d.result != 42 {
		t.Fatalf("completed %+v", d)
	}
	select {
	case extra := <-got:
		t.Fatalf("also reported %+v", extra)
	default:
	}
}
