package rpc

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestFunctionShapes(t *testing.T) {
	ok := []struct {
		fn  any
		sig string
	}{
		{func() {}, "f()"},
		{func(ctx context.Context) error { return nil }, "f()"},
		{func(a int, b string) int { return 0 }, "f(int, string) int"},
		{func(ctx context.Context, x any) (map[string]int, error) { return nil, nil }, "f(any) map[string]int"},
		{func(prefix string, xs ...int) []int { return nil }, "f(string, ...int) []int"},
	}
	for _, tc := range ok {
		f, err := newFunction("f", tc.fn, nil)
		if err != nil {
			t.Errorf("%T refused: %v", tc.fn, err)
			continue
		}
		if f.info.Signature != tc.sig {
			t.Errorf("%T signature %q, want %q", tc.fn, f.info.Signature, tc.sig)
		}
	}

	bad := []struct {
		fn     any
		reason string
	}{
		{42, "is not a function"},
		{(func())(nil), "is not a function"},
		{func() (int, int) { return 0, 0 }, "must be (value, error)"},
		{func() (error, int) { return nil, 0 }, "must be (value, error)"},
		{func() (int, int, error) { return 0, 0, nil }, "returns 3 results"},
		{func(a int, ctx context.Context) {}, "must be the first argument"},
	}
	for _, tc := range bad {
		if _, err := newFunction("f", tc.fn, nil); err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%T: got %v, want an error containing %q", tc.fn, err, tc.reason)
		}
	}
	if _, err := newFunction("f", func(a, b int) {}, []FuncOption{WithArgNames("a")}); err == nil {
		t.Error("one name for two arguments was accepted")
	}
}

func TestRegistryNames(t *testing.T) {
	var r registry
	fn := func(name string) *function {
		f, err := newFunction(name, func() {}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if err := r.add(fn("work")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"work", "", "shoal.ping", "shoal.anything", "has space", "tab\there"} {
		if err := r.add(fn(name)); err == nil {
			t.Errorf("name %q was accepted", name)
		}
	}
	// A failed batch changes nothing.
	if err := r.add(fn("a"), fn("work")); err == nil || r.lookup("a") != nil {
		t.Error("a batch with a duplicate was partly registered")
	}
	if r.lookup("work") == nil || len(r.list()) != 1 {
		t.Errorf("registry holds %v", r.list())
	}
}

// decodeParams runs decodeArgs on an encoded params array.
func decodeParams(t *testing.T, f *function, params ...any) ([]reflect.Value, *Error) {
	t.Helper()
	b, err := msgpack.Marshal(append([]any{}, params...))
	if err != nil {
		t.Fatal(err)
	}
	d := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := d.DecodeArrayLen()
	if err != nil {
		t.Fatal(err)
	}
	return f.decodeArgs(d, n)
}

func TestDecodeArgs(t *testing.T) {
	type point struct{ X, Y int }
	f, err := newFunction("move", func(ctx context.Context, p point, steps []int, label string) point { return p },
		[]FuncOption{WithArgNames("p", "steps", "label")})
	if err != nil {
		t.Fatal(err)
	}
	args, e := decodeParams(t, f, map[string]any{"X": 1, "Y": 2}, []int{3, 4}, "go")
	if e != nil {
		t.Fatal(e)
	}
	if p := args[0].Interface().(point); p != (point{1, 2}) {
		t.Errorf("struct argument decoded as %+v", p)
	}
	if s := args[1].Interface().([]int); !reflect.DeepEqual(s, []int{3, 4}) {
		t.Errorf("slice argument decoded as %v", s)
	}

	cases := []struct {
		params []any
		msg    string
	}{
		{[]any{}, "move(p rpc.point, steps []int, label string) rpc.point takes 3 arguments, got 0"},
		{[]any{nil, nil, "x", 4}, "takes 3 arguments, got 4"},
		{[]any{"p", nil, "x"}, "argument 1: want rpc.point, got string"},
		{[]any{nil, map[string]int{}, "x"}, "argument 2: want []int, got map"},
		{[]any{nil, nil, 1.5}, "argument 3: want string, got float"},
	}
	for _, tc := range cases {
		_, e := decodeParams(t, f, tc.params...)
		if e == nil || e.Kind != KindBadArguments || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("params %v: got %v, want BadArguments containing %q", tc.params, e, tc.msg)
		}
	}
}

func TestDecodeVariadicArgs(t *testing.T) {
	f, err := newFunction("sum", func(base int, xs ...int) int {
		for _, x := range xs {
			base += x
		}
		return base
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		params []any
		want   int
	}{{[]any{1}, 1}, {[]any{1, 2, 3}, 6}} {
		args, e := decodeParams(t, f, tc.params...)
		if e != nil {
			t.Fatal(e)
		}
		got, callErr := f.call(context.Background(), args)
		if callErr != nil || got != tc.want {
			t.Errorf("sum%v = %v, %v; want %d", tc.params, got, callErr, tc.want)
		}
	}
	if _, e := decodeParams(t, f); e == nil || !strings.Contains(e.Message, "takes at least 1 argument, got 0") {
		t.Errorf("no arguments: got %v", e)
	}
}

func TestCallResults(t *testing.T) {
	sentinel := Errorf(KindOverloaded, "queue full")
	cases := []struct {
		fn   any
		want any
		kind Kind
	}{
		{func() {}, nil, ""},
		{func() int { return 7 }, 7, ""},
		{func() error { return errors.New("no") }, nil, KindFunctionError},
		{func() (int, error) { return 0, sentinel }, nil, KindOverloaded},
		{func(ctx context.Context) error { return context.DeadlineExceeded }, nil, KindTimeout},
		{func() int { var m map[string]int; m["x"] = 1; return 0 }, nil, KindFunctionError},
	}
	for _, tc := range cases {
		f, err := newFunction("f", tc.fn, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, e := f.call(context.Background(), nil)
		if got != tc.want || (e == nil) != (tc.kind == "") || (e != nil && e.Kind != tc.kind) {
			t.Errorf("%T: got (%v, %v), want (%v, %q)", tc.fn, got, e, tc.want, tc.kind)
		}
	}
}

type counter struct{ n int }

func (c *counter) Incr(by int) int                 { c.n += by; return c.n }
func (c *counter) Get() int                        { return c.n }
func (c counter) Bad() (int, int, error)           { return 0, 0, nil }
func (c *counter) unexported(x int) int            { return x }
func (c *counter) Reset(ctx context.Context) error { c.n = 0; return nil }

type onlyGood struct{}

func (onlyGood) Hello(name string) string { return "hello " + name }

func TestObjectFunctions(t *testing.T) {
	if _, err := objectFunctions("c", &counter{}, nil); err == nil || !strings.Contains(err.Error(), `"c.Bad"`) {
		t.Fatalf("object with an unfit method: got %v", err)
	}
	fns, err := objectFunctions("greeter", onlyGood{}, []FuncOption{Cacheable()})
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 || fns[0].info.Name != "greeter.Hello" || !fns[0].info.Cacheable {
		t.Fatalf("got %+v", fns[0].info)
	}
	if _, err := objectFunctions("x", struct{}{}, nil); err == nil {
		t.Fatal("object with no methods was accepted")
	}
}
