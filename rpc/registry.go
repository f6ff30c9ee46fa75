package rpc

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"github.com/vmihailenco/msgpack/v5"
)

// ReservedPrefix starts the names of the methods Shoal itself serves;
// user functions may not use it.
const ReservedPrefix = "shoal."

// The methods every Server answers itself, on the connection's reader.
const (
	// MethodPing answers "pong".
	MethodPing = "shoal.ping"
	// MethodDescribe answers the registered functions as []FunctionInfo.
	MethodDescribe = "shoal.describe"
	// MethodAuth [token] authenticates the connection; a wrong token
	// closes it.
	MethodAuth = "shoal.auth"
	// MethodCancel [msgid, ...] ends the context of the caller's running
	// calls with those ids, as a request or a notification.
	MethodCancel = "shoal.cancel"
)

// FunctionInfo describes a registered function; shoal.describe returns a
// list of them.
type FunctionInfo struct {
	Name      string `msgpack:"name" json:"name"`                 // what callers call it by
	Signature string `msgpack:"signature" json:"signature"`       // e.g. "add(a int, b int) int"
	Doc       string `msgpack:"doc" json:"doc,omitempty"`         // one line, from WithDoc
	Version   string `msgpack:"version" json:"version,omitempty"` // from WithVersion
	Cacheable bool   `msgpack:"cacheable" json:"cacheable"`       // pure: results may be cached
}

// FuncOption sets an option of a registered function.
type FuncOption func(*funcOptions)

type funcOptions struct {
	version   string
	doc       string
	cacheable bool
	inline    bool
	argNames  []string
}

// WithVersion sets the function's version string. Change it whenever the
// function's results change for the same arguments: cached results are keyed
// by it.
func WithVersion(v string) FuncOption { return func(o *funcOptions) { o.version = v } }

// WithDoc sets the one-line description shown by shoal.describe.
func WithDoc(doc string) FuncOption { return func(o *funcOptions) { o.doc = doc } }

// Cacheable marks the function as pure: the same arguments always give the
// same result, so results may be cached. Leave it off for anything with side
// effects or that depends on time.
func Cacheable() FuncOption { return func(o *funcOptions) { o.cacheable = true } }

// Inline marks the function as quick: it returns within microseconds and
// never blocks. When a call of it is the only message waiting on its
// connection, the connection's reader runs it itself instead of handing it
// to a worker goroutine, which saves the wake-up of that goroutine: about a
// quarter of a sequential call on a 2-core VM (`shoal bench rpc` shows both
// ways). Requests that arrive on the connection meanwhile wait for it, so
// leave it off for anything slower. Under ServerConfig.Admit (a node's
// executor), a call runs on the reader only if it is admitted at once.
func Inline() FuncOption { return func(o *funcOptions) { o.inline = true } }

// WithArgNames names the function's arguments (after the context) in its
// signature, for shoal.describe and BadArguments errors.
func WithArgNames(names ...string) FuncOption {
	return func(o *funcOptions) { o.argNames = names }
}

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// function is one registered Go function and what is needed to call it from
// a params array.
type function struct {
	info     FunctionInfo
	system   bool // a shoal.* method registered by Shoal itself
	inline   bool // quick: may run on the connection's reader (Inline)
	fn       reflect.Value
	withCtx  bool
	args     []reflect.Type // not counting the context
	checked  []bool         // per argument (for a variadic one, per element): holdsIntegers
	variadic bool
	result   bool // returns a value besides the error
	withErr  bool
}

// newFunction checks fn's shape: an optional leading context.Context, any
// number of arguments (the last may be variadic), and results (), (R),
// (error) or (R, error).
func newFunction(name string, fn any, opts []FuncOption) (*function, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("rpc: register %q: %T is not a function", name, fn)
	}
	return newFunctionValue(name, v, opts)
}

func newFunctionValue(name string, v reflect.Value, opts []FuncOption) (*function, error) {
	var o funcOptions
	for _, opt := range opts {
		opt(&o)
	}
	t := v.Type()
	f := &function{fn: v, variadic: t.IsVariadic()}
	for i := 0; i < t.NumIn(); i++ {
		in := t.In(i)
		if i == 0 && in == contextType {
			f.withCtx = true
			continue
		}
		if in == contextType {
			return nil, fmt.Errorf("rpc: register %q: context.Context must be the first argument", name)
		}
		f.args = append(f.args, in)
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errorType {
			f.withErr = true
		} else {
			f.result = true
		}
	case 2:
		if t.Out(1) != errorType || t.Out(0) == errorType {
			return nil, fmt.Errorf("rpc: register %q: two results must be (value, error), have %v", name, t)
		}
		f.result, f.withErr = true, true
	default:
		return nil, fmt.Errorf("rpc: register %q: returns %d results, want at most (value, error)", name, t.NumOut())
	}
	for i := range f.args {
		f.checked = append(f.checked, holdsIntegers(f.argType(i)))
	}
	if o.argNames != nil && len(o.argNames) != len(f.args) {
		return nil, fmt.Errorf("rpc: register %q: %d argument names for %d arguments", name, len(o.argNames), len(f.args))
	}
	f.info = FunctionInfo{
		Name:      name,
		Signature: f.signature(name, o.argNames),
		Doc:       o.doc,
		Version:   o.version,
		Cacheable: o.cacheable,
	}
	f.inline = o.inline
	return f, nil
}

// signature renders the function as a caller sees it, for example
// "add(a int, b int) int": no context, no error result.
func (f *function) signature(name string, argNames []string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('(')
	for i, t := range f.args {
		if i > 0 {
			b.WriteString(", ")
		}
		if argNames != nil {
			b.WriteString(argNames[i])
			b.WriteByte(' ')
		}
		if f.variadic && i == len(f.args)-1 {
			b.WriteString("..." + typeName(t.Elem()))
		} else {
			b.WriteString(typeName(t))
		}
	}
	b.WriteByte(')')
	if f.result {
		b.WriteString(" " + typeName(f.fn.Type().Out(0)))
	}
	return b.String()
}

func typeName(t reflect.Type) string {
	return strings.ReplaceAll(t.String(), "interface {}", "any")
}

// decodeArgs reads n params from d into values of the function's argument
// types. A wrong count or type, or an integer out of the range of its
// type, is a BadArguments error that shows the signature.
func (f *function) decodeArgs(d *msgpack.Decoder, n int) ([]reflect.Value, *Error) {
	fixed := len(f.args)
	if f.variadic {
		fixed--
	}
	if n < fixed || (!f.variadic && n > fixed) {
		want := fmt.Sprintf("%d", fixed)
		if f.variadic {
			want = fmt.Sprintf("at least %d", fixed)
		}
		return nil, &Error{Kind: KindBadArguments, Message: fmt.Sprintf(
			"%s takes %s argument%s, got %d", f.info.Signature, want, plural(fixed), n)}
	}
	in := make([]reflect.Value, 0, n+1)
	for i := 0; i < n; i++ {
		t := f.argType(i)
		c, _ := d.PeekCode()
		v := reflect.New(t).Elem()
		if err := decodeValue(d, v, f.checked[min(i, len(f.args)-1)]); err != nil {
			// A type's own decoder may refuse a value for a reason of its
			// own (too many items, say) that the caller should read.
			if e := (*Error)(nil); errors.As(err, &e) && e.Kind == KindBadArguments {
				return nil, &Error{Kind: KindBadArguments, Message: fmt.Sprintf(
					"%s: argument %d: %s", f.info.Signature, i+1, e.Message)}
			}
			got := wireType(c)
			var re *rangeError
			if errors.As(err, &re) {
				got = re.describe(t)
			}
			return nil, &Error{Kind: KindBadArguments, Message: fmt.Sprintf(
				"%s: argument %d: want %s, got %s", f.info.Signature, i+1, typeName(t), got)}
		}
		in = append(in, v)
	}
	return in, nil
}

// decodeValue decodes into v, with decodeChecked when checked, turning a
// panic of the decoder on hostile input (msgpack panics on some) into an
// error.
func decodeValue(d *msgpack.Decoder, v reflect.Value, checked bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("msgpack decoder panicked: %v", p)
		}
	}()
	if checked {
		return decodeChecked(d, v)
	}
	return d.DecodeValue(v)
}

func (f *function) argType(i int) reflect.Type {
	if f.variadic && i >= len(f.args)-1 {
		return f.args[len(f.args)-1].Elem()
	}
	return f.args[i]
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// call runs the function. A panic becomes a FunctionError for this call.
func (f *function) call(ctx context.Context, args []reflect.Value) (result any, callErr *Error) {
	defer func() {
		if p := recover(); p != nil {
			result, callErr = nil, &Error{Kind: KindFunctionError, Message: fmt.Sprintf("%s panicked: %v", f.info.Name, p)}
		}
	}()
	if f.withCtx {
		args = append([]reflect.Value{reflect.ValueOf(ctx)}, args...)
	}
	out := f.fn.Call(args)
	if f.withErr {
		if err, _ := out[len(out)-1].Interface().(error); err != nil {
			return nil, ErrorOf(err)
		}
	}
	if f.result {
		return out[0].Interface(), nil
	}
	return nil, nil
}

// registry maps names to functions. Lookups read an immutable map without
// locking; registration copies it.
type registry struct {
	mu    sync.Mutex
	funcs atomic.Pointer[map[string]*function]
}

func (r *registry) lookup(name string) *function {
	m := r.funcs.Load()
	if m == nil {
		return nil
	}
	return (*m)[name]
}

func (r *registry) add(fns ...*function) error {
	return r.addChecked(checkName, fns...)
}

// addSystem registers methods of Shoal's own, which must carry the
// reserved prefix.
func (r *registry) addSystem(fns ...*function) error {
	return r.addChecked(checkSystemName, fns...)
}

func (r *registry) addChecked(check func(string) error, fns ...*function) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.funcs.Load()
	next := make(map[string]*function)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	for _, f := range fns {
		if err := check(f.info.Name); err != nil {
			return err
		}
		if _, dup := next[f.info.Name]; dup {
			return fmt.Errorf("rpc: register %q: already registered", f.info.Name)
		}
		next[f.info.Name] = f
	}
	r.funcs.Store(&next)
	return nil
}

func (r *registry) list() []FunctionInfo {
	m := r.funcs.Load()
	if m == nil {
		return []FunctionInfo{}
	}
	out := make([]FunctionInfo, 0, len(*m))
	for _, f := range *m {
		if !f.system {
			out = append(out, f.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

var errEmptyName = errors.New("rpc: register: empty function name")

func checkName(name string) error {
	if name == "" {
		return errEmptyName
	}
	if strings.HasPrefix(name, ReservedPrefix) {
		return fmt.Errorf("rpc: register %q: names starting with %q are reserved for Shoal", name, ReservedPrefix)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("rpc: register %q: names may not contain spaces or control characters", name)
		}
	}
	return nil
}

func checkSystemName(name string) error {
	if !strings.HasPrefix(name, ReservedPrefix) || len(name) == len(ReservedPrefix) {
		return fmt.Errorf("rpc: register system method %q: name must start with %q", name, ReservedPrefix)
	}
	switch name {
	case MethodPing, MethodDescribe, MethodAuth, MethodCancel:
		return fmt.Errorf("rpc: register system method %q: built into the server", name)
	}
	return nil
}

// objectFunctions returns a function for each exported method of obj, named
// prefix.Method.
func objectFunctions(prefix string, obj any, opts []FuncOption) ([]*function, error) {
	v := reflect.ValueOf(obj)
	if !v.IsValid() {
		return nil, fmt.Errorf("rpc: register object %q: nil object", prefix)
	}
	t := v.Type()
	var fns []*function
	for i := 0; i < t.NumMethod(); i++ {
		m := t.Method(i)
		if !m.IsExported() {
			continue
		}
		f, err := newFunctionValue(prefix+"."+m.Name, v.Method(i), opts)
		if err != nil {
			return nil, err
		}
		fns = append(fns, f)
	}
	if len(fns) == 0 {
		return nil, fmt.Errorf("rpc: register object %q: %T has no exported methods (use a pointer for pointer-receiver methods)", prefix, obj)
	}
	return fns, nil
}
