// Package builtins holds the functions every `shoal node` serves, so a grid
// can be tried and measured before it runs any code of its own. The shoal
// command registers them on its nodes, and the bench package on the nodes it
// runs in its own process.
package builtins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/shoalgrid/shoal/rpc"
)

// function is one built-in and the options it is registered with.
type function struct {
	name string
	fn   any
	opts []rpc.FuncOption
}

// functions are the built-ins. All but sleep and fail are pure and so
// cacheable; add, square, echo and fib are quick enough to run Inline.
var functions = []function{
	{"add", add, []rpc.FuncOption{rpc.Inline(), rpc.WithArgNames("a", "b"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("returns a + b")}},
	{"square", square, []rpc.FuncOption{rpc.Inline(), rpc.WithArgNames("x"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("returns x * x")}},
	{"echo", echo, []rpc.FuncOption{rpc.Inline(), rpc.WithArgNames("x"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("returns its argument unchanged")}},
	{"sleep", sleep, []rpc.FuncOption{rpc.WithArgNames("ms"), rpc.WithVersion("1"),
		rpc.WithDoc("waits ms milliseconds, or until canceled, and returns ms")}},
	{"sha256", SHA256Rounds, []rpc.FuncOption{rpc.WithArgNames("text", "rounds"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("hex SHA-256 of text hashed rounds times (CPU work)")}},
	{"fib", fib, []rpc.FuncOption{rpc.Inline(), rpc.WithArgNames("n"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("the n-th Fibonacci number, fib(0) = 0, for 0 <= n <= 92")}},
	{"wordcount", wordcount, []rpc.FuncOption{rpc.WithArgNames("text"), rpc.Cacheable(), rpc.WithVersion("1"),
		rpc.WithDoc("counts words (runs of letters and digits), lower-cased")}},
	{"fail", fail, []rpc.FuncOption{rpc.WithArgNames("message"), rpc.WithVersion("1"),
		rpc.WithDoc("always fails with a FunctionError carrying message")}},
}

// Registrar is what functions can be registered on: an rpc.Server or a
// node.Node.
type Registrar interface {
	Register(name string, fn any, opts ...rpc.FuncOption) error
}

// Register registers every built-in on r.
func Register(r Registrar) error {
	for _, b := range functions {
		if err := r.Register(b.name, b.fn, b.opts...); err != nil {
			return err
		}
	}
	return nil
}

// add and square fail rather than wrap: a wrapped sum is a wrong answer
// that, the functions being cacheable, would be served again from the
// cache.
func add(a, b int) (int, error) {
	sum := a + b
	if (b > 0 && sum < a) || (b < 0 && sum > a) {
		return 0, fmt.Errorf("add: %d + %d overflows int (%d to %d)", a, b, math.MinInt, math.MaxInt)
	}
	return sum, nil
}

func square(x int) (int, error) {
	p := x * x
	if x != 0 && (p/x != x || p < 0) {
		return 0, fmt.Errorf("square: %d * %d overflows int (at most %d)", x, x, math.MaxInt)
	}
	return p, nil
}

func echo(x any) any { return x }

// maxSleepMs is the longest sleep a time.Duration can hold, about 292
// years; a longer one would wrap to a negative duration and return at once.
const maxSleepMs = int64(math.MaxInt64 / time.Millisecond)

func sleep(ctx context.Context, ms int) (int, error) {
	if ms < 0 {
		return 0, rpc.Errorf(rpc.KindBadArguments, "sleep: ms must not be negative, got %d", ms)
	}
	if int64(ms) > maxSleepMs {
		return 0, rpc.Errorf(rpc.KindBadArguments, "sleep: ms must be at most %d (about 292 years), got %d", maxSleepMs, ms)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return ms, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// SHA256Rounds is the sha256 built-in: it hashes text, then the digest,
// rounds times in all, and returns the last digest in hex. It checks for
// cancellation every few thousand rounds so a long job can be stopped.
func SHA256Rounds(ctx context.Context, text string, rounds int) (string, error) {
	if rounds < 1 {
		return "", rpc.Errorf(rpc.KindBadArguments, "sha256: rounds must be at least 1, got %d", rounds)
	}
	sum := sha256.Sum256([]byte(text))
	for i := 1; i < rounds; i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return "", ctx.Err()
		}
		sum = sha256.Sum256(sum[:])
	}
	return hex.EncodeToString(sum[:]), nil
}

func fib(n int) (int, error) {
	if n < 0 || n > 92 {
		return 0, rpc.Errorf(rpc.KindBadArguments, "fib: n must be between 0 and 92 (larger overflows int64), got %d", n)
	}
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a, nil
}

func wordcount(text string) map[string]int {
	counts := make(map[string]int)
	for _, w := range strings.FieldsFunc(text, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		counts[strings.ToLower(w)]++
	}
	return counts
}

func fail(message string) error { return errors.New(message) }
