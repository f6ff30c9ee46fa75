package rpc

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
)

// ServerConfig configures a Server. Zero fields take the defaults given.
type ServerConfig struct {
	// MaxMessageSize bounds one incoming message. Default: 64 MiB.
	MaxMessageSize int
	// MaxDepth bounds the nesting of arrays and maps in one message, the
	// envelope included. Default: 64.
	MaxDepth int
	// MaxInFlight bounds the calls running at once for one connection;
	// calls beyond it get an Overloaded error. Default: 1024.
	MaxInFlight int
	// MaxInFlightBytes bounds, across all connections, the bytes held by
	// calls: messages as they are read, calls queued and running with
	// their decoded arguments (estimated as the message twice over plus 40
	// bytes per msgpack value), and replies until written. A message that
	// would take more is refused as soon as its headers show it: the rest
	// of it is discarded as it arrives, never kept, and the call is
	// answered Overloaded; the connection serves on. Replies are counted
	// but never refused, their work being done. Calls needing under 64 KiB
	// are not counted, so they are never refused for bytes.
	// Default: DefaultMaxInFlightBytes (256 MiB).
	MaxInFlightBytes int
	// IdleTimeout closes a connection that has sent nothing and has no call
	// running for this long. Default: 5 minutes.
	IdleTimeout time.Duration
	// AuthTimeout closes a connection that has not shown the token this
	// long after it was accepted, so that strangers cannot hold
	// connections (and the node's MaxConns) by sending nothing, or calls
	// refused Unauthorized. Only with Token set. Default: 10s.
	AuthTimeout time.Duration
	// WriteTimeout bounds each write to a connection; a peer that reads
	// nothing for this long is disconnected. Default: 30s.
	WriteTimeout time.Duration
	// MaxConns bounds the connections open at once. A connection accepted
	// beyond it is closed at once and counted in Stats.Refused: that frees
	// its descriptor and tells the client promptly, where leaving it in
	// the listen backlog would leave the client waiting. Default: no bound.
	MaxConns int
	// Token, when set, must be presented with shoal.auth before any other
	// call on a connection. A wrong one closes the connection, and each
	// failure from an address makes its next attempt wait longer (100ms,
	// doubling up to 10s). Default: none.
	Token string
	// TLS, when set, serves TLS with this configuration (see LoadServerTLS).
	// Default: plain TCP.
	TLS *tls.Config
	// Logger receives connection events and protocol violations.
	// Default: slog.Default().
	Logger *slog.Logger
	// Admit, when set, is asked before each call to a user function (not
	// the shoal.* methods) and may make it wait, for a slot in an executor
	// say, or refuse it with an error such as an *Error of KindOverloaded.
	// ctx is the call's own. The call runs once Admit returns, and release
	// is called when it has finished. Admit must return promptly once ctx
	// has ended: for an Inline function the server first asks with a
	// context already ended, to run the call on the reader only if it is
	// admitted at once, and otherwise asks again from a worker. Default:
	// every call runs at once.
	Admit func(ctx context.Context, fn FunctionInfo) (release func(), err error)
	// Observe, when set, is told of every call answered: the method, the
	// Kind of its error ("" for success) and how long it took. It must not
	// block. Default: none.
	Observe func(method string, outcome Kind, elapsed time.Duration)
	// Completed, when set, is given every successful call to a cacheable
	// user function, after its reply has been sent: the function, its
	// decoded arguments and its result, to cache. The values are the
	// callee's to keep. It must not block. Default: none.
	Completed func(fn FunctionInfo, args []any, result any)
	// MaxCompletedSize, when positive, keeps from Completed the calls
	// whose reply was larger than this many bytes: a cache that cannot
	// store so large a value would only hold it, uncounted, on its way to
	// refusing it. Default: no limit.
	MaxCompletedSize int
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxDepth <= 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1024
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("rpc: server closed")

// Server serves registered Go functions over msgpack-rpc. Register
// functions, then call Serve with a listener; Shutdown drains and stops it.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	reg  registry
	ctx  context.Context // parent of every call's context; ends on Close
	stop context.CancelFunc
	wg   sync.WaitGroup // accept loops, connections and call workers
	// work hands a call to an idle worker goroutine; see runCall.
	work chan func()
	auth *authLimiter // slows down guessing the token
	// budget counts the bytes calls hold; see MaxInFlightBytes.
	budget byteBudget
	// refusing is set as Shutdown begins, before it marks each connection
	// draining, so that no connection takes a call once another has
	// refused one.
	refusing atomic.Bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	draining  bool
	closed    bool
	// backingOff counts the accept loops waiting to retry after an accept
	// error; while any is, the server is not Accepting.
	backingOff int
	// refusedLogged is when a refusal at MaxConns was last logged: one
	// line per interval, not one per connection.
	refusedLogged time.Time
	// protocolLog and notifyLog sample the lines strangers can cause.
	protocolLog, notifyLog sampledLog

	calls        atomic.Uint64
	accepted     atomic.Uint64
	refused      atomic.Uint64
	acceptErrors atomic.Uint64
}

// NewServer returns a server with no functions registered.
func NewServer(cfg ServerConfig) *Server {
	cfg = cfg.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		ctx:       ctx,
		work:      make(chan func()),
		auth:      newAuthLimiter(cfg.Logger),
		stop:      stop,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
	}
	s.budget.limit = int64(cfg.MaxInFlightBytes)
	return s
}

// InFlightBytes returns the bytes counted against MaxInFlightBytes now.
func (s *Server) InFlightBytes() int64 { return s.budget.used.Load() }

// Register makes fn callable as name. fn is a function such as
// func(ctx context.Context, a, b int) (int, error): the context is optional
// and must come first, the arguments are decoded from the request's params,
// and the results may be (), (R), (error) or (R, error). The context ends
// when the caller cancels, the connection closes or the server is closed.
// Functions may be registered while the server runs.
func (s *Server) Register(name string, fn any, opts ...FuncOption) error {
	f, err := newFunction(name, fn, opts)
	if err != nil {
		return err
	}
	return s.reg.add(f)
}

// RegisterSystem makes fn callable under a name with the reserved prefix
// "shoal.", for the methods Shoal's own packages add to a server (the
// node's shoal.members, for one). System methods are not listed by
// Functions or shoal.describe and are not subject to ServerConfig.Admit.
func (s *Server) RegisterSystem(name string, fn any, opts ...FuncOption) error {
	f, err := newFunction(name, fn, opts)
	if err != nil {
		return err
	}
	f.system = true
	return s.reg.addSystem(f)
}

// RegisterObject makes each exported method of obj callable as
// prefix.Method, as Pyro exposes an object; opts apply to every method.
func (s *Server) RegisterObject(prefix string, obj any, opts ...FuncOption) error {
	fns, err := objectFunctions(prefix, obj, opts)
	if err != nil {
		return err
	}
	return s.reg.add(fns...)
}

// Functions lists the registered functions by name.
func (s *Server) Functions() []FunctionInfo { return s.reg.list() }

// Stats is a snapshot of a server's activity.
type Stats struct {
	Connections  int    // open connections
	Accepted     uint64 // connections accepted since the server was made
	Refused      uint64 // connections closed on arrival because MaxConns were open
	AcceptErrors uint64 // accepts that failed and were retried (out of file descriptors, say)
	InFlight     int    // calls running now
	Calls        uint64 // calls of registered functions started since the server was made
}

// Stats returns a snapshot of the server's activity.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Connections: len(s.conns), Accepted: s.accepted.Load(), Calls: s.calls.Load(),
		Refused: s.refused.Load(), AcceptErrors: s.acceptErrors.Load()}
	for c := range s.conns {
		c.mu.Lock()
		st.InFlight += c.running
		c.mu.Unlock()
	}
	return st
}

// Accepting reports whether the server takes new connections now: it
// serves at least one listener and no accept loop is backing off after an
// accept error, such as running out of file descriptors. It is false
// before Serve, once Shutdown or Close has begun, and after Serve has
// returned an error. A server at MaxConns is still accepting: it closes
// what it accepts.
func (s *Server) Accepting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && !s.draining && len(s.listeners) > 0 && s.backingOff == 0
}

// Serve accepts connections on l until Shutdown or Close, when it returns
// ErrServerClosed. With cfg.TLS set, connections are served over TLS. An
// accept error that a shortage explains (out of file descriptors, buffers
// or memory; see retryableAccept) is retried with a backoff of up to a
// second, during which the server is not Accepting; any other ends Serve
// with that error.
func (s *Server) Serve(l net.Listener) error {
	if s.cfg.TLS != nil {
		l = tls.NewListener(l, s.cfg.TLS)
	}
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration // non-zero while this loop is backing off
	setBackingOff := func(on bool) {
		s.mu.Lock()
		if on {
			s.backingOff++
		} else {
			s.backingOff--
		}
		s.mu.Unlock()
	}
	defer func() {
		if backoff > 0 {
			setBackingOff(false)
		}
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.closed || s.draining
			s.mu.Unlock()
			if stopping {
				return ErrServerClosed
			}
			if !retryableAccept(err) {
				s.mu.Lock()
				delete(s.listeners, l)
				s.mu.Unlock()
				return err
			}
			// Out of file descriptors and the like: the shortage passes
			// when connections close, so wait and retry rather than spin
			// or give up for good.
			if backoff == 0 {
				setBackingOff(true)
			}
			s.acceptErrors.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("rpc: accept failed; retrying", "err", err, "in", backoff)
			wait := time.NewTimer(backoff)
			select {
			case <-wait.C:
			case <-s.ctx.Done():
				wait.Stop()
				return ErrServerClosed
			}
			continue
		}
		if backoff > 0 {
			backoff = 0
			setBackingOff(false)
			s.log.Info("rpc: accepting connections again", "addr", l.Addr())
		}
		s.startConn(conn)
	}
}

// retryableAccept reports whether an accept error is a shortage that
// passes (see acceptShortages) or a timeout, which the accept loop waits
// out, rather than a broken listener. Go's net package reports EMFILE as
// an error whose Timeout is false, so the errno is what tells.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, shortage := range acceptShortages {
		if errors.Is(err, shortage) {
			return true
		}
	}
	return false
}

// refusedLogInterval spaces the warnings about connections refused at
// MaxConns.
const refusedLogInterval = 10 * time.Second

func (s *Server) startConn(conn net.Conn) {
	ctx, cancel := context.WithCancel(s.ctx)
	c := &serverConn{
		s:      s,
		conn:   conn,
		remote: conn.RemoteAddr().String(),
		w:      newConnWriter(conn, s.cfg.WriteTimeout),
		ctx:    ctx,
		cancel: cancel,
		calls:  make(map[uint32]*runningCall),
		authed: s.cfg.Token == "",
	}
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		cancel()
		conn.Close()
		return
	}
	if s.cfg.MaxConns > 0 && len(s.conns) >= s.cfg.MaxConns {
		now := time.Now()
		logIt := now.Sub(s.refusedLogged) >= refusedLogInterval
		if logIt {
			s.refusedLogged = now
		}
		s.mu.Unlock()
		cancel()
		conn.Close()
		refused := s.refused.Add(1)
		if logIt {
			s.log.Warn("rpc: at the connection limit; closing new connections until some end",
				"max_conns", s.cfg.MaxConns, "remote", c.remote, "refused_total", refused)
		}
		return
	}
	s.conns[c] = struct{}{}
	s.accepted.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
}

// Shutdown stops accepting connections, answers new calls with Unavailable,
// waits for the calls in flight to finish and their replies to be written,
// then closes every connection. If ctx ends first it closes at once, as
// Close does, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.refusing.Store(true)
	s.mu.Lock()
	s.draining = true
	s.closeListenersLocked()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	// Every connection refuses new calls before any is waited for: one
	// slow call must not leave the others taking work meanwhile.
	for _, c := range conns {
		c.startDrain()
	}
	for _, c := range conns {
		if err := c.drain(ctx); err != nil {
			s.Close()
			return err
		}
	}
	return s.Close()
}

// Close stops the server at once: listeners and connections are closed and
// the contexts of running calls end. It returns when every goroutine the
// server started has finished, so functions should honour their context.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.closeListenersLocked()
	for c := range s.conns {
		c.conn.Close()
	}
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	s.auth.close()
	return nil
}

func (s *Server) closeListenersLocked() {
	for l := range s.listeners {
		l.Close()
		delete(s.listeners, l)
	}
}

// serverConn is one client connection. Its reader goroutine decodes
// messages and answers built-in methods itself; each call to a registered
// function runs on a worker goroutine (see Server.runCall), or on the
// reader for an Inline function when nothing else is waiting.
type serverConn struct {
	s      *Server
	conn   net.Conn
	remote string
	w      *connWriter
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc
	// Touched only by the reader goroutine:
	authed        bool
	deadlineMoved time.Time
	in            *messageReader

	// others counts the calls running, as running does, for a reply's
	// writer to tell without the lock whether others will reply soon.
	others atomic.Int32

	mu       sync.Mutex
	running  int
	calls    map[uint32]*runningCall // by msgid, for shoal.cancel
	draining bool
	drained  chan struct{} // closed when draining and nothing runs
}

type runningCall struct {
	cancel   context.CancelFunc
	admitted func() // the release of an Inline call admitted at once
}

func (c *serverConn) serve() {
	defer c.s.wg.Done()
	defer func() {
		c.cancel()
		c.conn.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()
	maxSize := c.s.cfg.MaxMessageSize
	if !c.authed {
		// Until it has shown the token a connection may ask for nothing
		// but shoal.auth: it gets no room to make the server buffer more.
		maxSize = min(maxSize, maxUnauthedMessage)
	}
	mr := newMessageReader(bufio.NewReaderSize(c.conn, readChunk), maxSize, c.s.cfg.MaxDepth)
	mr.budget = &c.s.budget
	defer mr.abandon()
	c.in = mr
	dec := newMessageDecoder()
	for {
		msg, err := c.next(mr)
		var refused *overBudget
		if errors.As(err, &refused) {
			err = c.refuse(dec, msg, refused)
		} else if err == nil {
			charge := mr.takeCharge()
			err = c.handle(dec, msg, charge)
			if charge > 0 {
				// msgpack keeps the scratch buffer it read a string
				// into; after a large message, let it go.
				dec = newMessageDecoder()
			}
		}
		if err != nil {
			c.logEnd(err)
			return
		}
		mr.release()
	}
}

// next reads the next message, keeping a connection whose calls are still
// running open past the idle timeout.
func (c *serverConn) next(mr *messageReader) ([]byte, error) {
	if !c.authed {
		// Nothing runs before shoal.auth: the only deadline is the one
		// for showing the token.
		if c.deadlineMoved.IsZero() {
			c.conn.SetReadDeadline(time.Now().Add(c.s.cfg.AuthTimeout))
			c.deadlineMoved = time.Now()
		}
		msg, err := mr.next()
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() {
			return nil, errAuthTimeout
		}
		return msg, err
	}
	for {
		// Moving the deadline costs a timer update; on a busy connection
		// it is moved only when an eighth of the timeout has passed, so
		// idleness is measured to within that.
		if now := time.Now(); now.Sub(c.deadlineMoved) > c.s.cfg.IdleTimeout/8 {
			c.conn.SetReadDeadline(now.Add(c.s.cfg.IdleTimeout))
			c.deadlineMoved = now
		}
		msg, err := mr.next()
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() && len(mr.buf) == 0 {
			c.mu.Lock()
			busy := c.running > 0
			c.mu.Unlock()
			if busy {
				c.deadlineMoved = time.Time{}
				continue
			}
			return nil, errIdle
		}
		return msg, err
	}
}

// maxUnauthedMessage bounds each message of a connection that has not yet
// shown the server's token: enough for shoal.auth with any sane token.
const maxUnauthedMessage = 64 << 10

var (
	errIdle        = errors.New("idle timeout")
	errAuthTimeout = errors.New("no token shown in time")
	errWrongToken  = errors.New("wrong token")
)

func (c *serverConn) logEnd(err error) {
	var pe *ProtocolError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.s.log.Debug("rpc: connection closed", "remote", c.remote)
	case errors.As(err, &pe):
		if ok, skipped := c.s.protocolLog.allow(); ok {
			c.s.log.Warn("rpc: closing connection", "remote", c.remote, "reason", pe.Reason, "unlogged_before", skipped)
		} else {
			c.s.log.Debug("rpc: closing connection", "remote", c.remote, "reason", pe.Reason)
		}
	case errors.Is(err, errAuthTimeout):
		// As many as strangers open: not worth a line each.
		c.s.log.Debug("rpc: closing connection: no token shown in time", "remote", c.remote, "within", c.s.cfg.AuthTimeout)
	case errors.Is(err, errIdle):
		c.s.log.Info("rpc: closing idle connection", "remote", c.remote, "idle", c.s.cfg.IdleTimeout)
	case errors.Is(err, errWrongToken):
		// Logged as counts by the server's authLimiter: a line per guess
		// would let a guesser flood the log.
		c.s.log.Debug("rpc: closing connection: wrong token", "remote", c.remote)
	default:
		c.s.log.Info("rpc: connection ended", "remote", c.remote, "err", err)
	}
}

// refuse answers a message the reader refused for lack of room in the
// budget, from its head: a request gets Overloaded, a notification is
// dropped. The message's bytes are gone already, so this costs nothing.
func (c *serverConn) refuse(dec *decoder, head []byte, why *overBudget) (err error) {
	defer recoverDecodePanic(&err)
	dec.reset(head)
	n, err := dec.dec.DecodeArrayLen()
	if err != nil || n < 3 {
		return &ProtocolError{Reason: "message is not a msgpack-rpc array"}
	}
	typ, err := dec.dec.DecodeInt()
	if err != nil || typ != typeRequest {
		if err == nil && typ == typeNotification {
			method, _ := dec.method()
			c.logNotification("rpc: notification dropped", method, why)
			return nil
		}
		return &ProtocolError{Reason: "message over the in-flight budget is not a request or notification"}
	}
	id, err := dec.dec.DecodeUint32()
	if err != nil {
		return &ProtocolError{Reason: "msgid is not a 32-bit unsigned integer"}
	}
	callErr := &Error{Kind: KindOverloaded, Message: why.Error()}
	if method, err := dec.method(); err == nil {
		c.observe(method, callErr, time.Now())
		callErr.Message = method + ": " + callErr.Message
	}
	c.reply(id, callErr, nil)
	return nil
}

// logNotification logs a notification that came to nothing, sampled:
// nobody hears of it otherwise, and anyone can send them by the thousand.
func (c *serverConn) logNotification(msg, method string, err any) {
	if ok, skipped := c.s.notifyLog.allow(); ok {
		c.s.log.Info(msg, "remote", c.remote, "method", method, "err", err, "unlogged_before", skipped)
	} else {
		c.s.log.Debug(msg, "remote", c.remote, "method", method, "err", err)
	}
}

// handle acts on one message. An error means the bytes were not
// msgpack-rpc and the connection must close. A panic while decoding is
// such an error: it costs this connection, never the server. charge is
// what the message took from the budget: the call it starts gives it back
// when done, or else handle does.
func (c *serverConn) handle(dec *decoder, msg []byte, charge int64) (err error) {
	defer func() { c.s.budget.give(charge) }()
	defer recoverDecodePanic(&err)
	dec.reset(msg)
	env, err := dec.envelope()
	if err != nil {
		return err
	}
	switch env.typ {
	case typeResponse:
		return &ProtocolError{Reason: "unexpected response: the server sends no requests"}
	case typeNotification:
		if c.notification(dec, env.method, charge) {
			charge = 0
		}
		return nil
	}

	id := env.id
	if !c.authed && env.method != MethodAuth {
		c.reply(id, &Error{Kind: KindUnauthorized, Message: "call shoal.auth with the server's token first"}, nil)
		return nil
	}
	n, ok := dec.paramsLen()
	if !ok {
		c.reply(id, &Error{Kind: KindBadArguments, Message: env.method + ": params must be an array"}, nil)
		return nil
	}
	if isBuiltin(env.method) {
		start := time.Now()
		result, callErr := c.builtin(dec, env.method, n)
		c.observe(env.method, callErr, start)
		c.reply(id, callErr, result)
		if env.method == MethodAuth && callErr != nil {
			// One guess per connection makes guessing the token slow.
			c.w.flushed()
			return errWrongToken
		}
		return nil
	}
	f := c.s.reg.lookup(env.method)
	if f == nil {
		callErr := &Error{Kind: KindUnknownFunction, Message: fmt.Sprintf("no function named %q", env.method)}
		c.observe(env.method, callErr, time.Now())
		c.reply(id, callErr, nil)
		return nil
	}
	args, argErr := f.decodeArgs(dec.dec, n)
	if argErr != nil {
		c.observe(env.method, argErr, time.Now())
		c.reply(id, argErr, nil)
		return nil
	}
	c.dropMessage(dec)
	if callErr := c.start(f, id, true, args, charge); callErr != nil {
		c.observe(env.method, callErr, time.Now())
		c.reply(id, callErr, nil)
	} else {
		charge = 0
	}
	return nil
}

// dropMessage lets a large message go once its arguments have been
// decoded (copied out of it), so that a call does not hold both while it
// waits and runs, on the reader (Inline) or not.
func (c *serverConn) dropMessage(dec *decoder) {
	dec.reset(nil)
	c.in.release()
}

// isBuiltin reports whether method is answered by the reader itself.
func isBuiltin(method string) bool {
	switch method {
	case MethodPing, MethodDescribe, MethodAuth, MethodCancel:
		return true
	}
	return false
}

// observe reports an answered call to ServerConfig.Observe.
func (c *serverConn) observe(method string, callErr *Error, start time.Time) {
	if c.s.cfg.Observe == nil {
		return
	}
	var kind Kind
	if callErr != nil {
		kind = callErr.Kind
	}
	c.s.cfg.Observe(method, kind, time.Since(start))
}

// notification runs a one-way call; nothing is sent back, so failures are
// only logged. Unknown notifications are ignored, as the spec asks. It
// reports whether a call was started, which then owns charge.
func (c *serverConn) notification(dec *decoder, method string, charge int64) (started bool) {
	n, ok := dec.paramsLen()
	if !ok || !c.authed {
		return false
	}
	if method == MethodCancel {
		c.cancelCalls(dec, n)
		return false
	}
	f := c.s.reg.lookup(method)
	if f == nil {
		c.s.log.Debug("rpc: ignoring unknown notification", "remote", c.remote, "method", method)
		return false
	}
	args, argErr := f.decodeArgs(dec.dec, n)
	if argErr == nil {
		c.dropMessage(dec)
		argErr = c.start(f, 0, false, args, charge)
	}
	if argErr != nil {
		c.logNotification("rpc: notification dropped", method, argErr)
		return false
	}
	return true
}

// start runs f on a worker goroutine (or, when f is Inline and nothing else
// waits, on the reader) unless the connection is at its in-flight limit or
// the server is draining. A call started owns charge, its share of the
// budget, and gives it back once its reply is written.
func (c *serverConn) start(f *function, id uint32, wantReply bool, args []reflect.Value, charge int64) *Error {
	ctx, cancel := context.WithCancel(c.ctx)
	rc := &runningCall{cancel: cancel}
	c.mu.Lock()
	switch {
	case c.draining || c.s.refusing.Load():
		c.mu.Unlock()
		cancel()
		return &Error{Kind: KindUnavailable, Message: "server is shutting down"}
	case c.running >= c.s.cfg.MaxInFlight:
		c.mu.Unlock()
		cancel()
		return &Error{Kind: KindOverloaded, Message: fmt.Sprintf("%d calls already in flight on this connection", c.running)}
	}
	c.running++
	if wantReply {
		c.calls[id] = rc
	}
	c.mu.Unlock()
	c.others.Add(1)
	c.s.calls.Add(1)

	run := func() {
		start := time.Now()
		result, callErr := c.run(ctx, f, args, rc.admitted)
		cancel()
		c.observe(f.info.Name, callErr, start)
		complete := callErr == nil
		if wantReply {
			e := getEncoder()
			e.response(id, callErr, result)
			if limit := c.s.cfg.MaxCompletedSize; limit > 0 && e.buf.Len() > limit {
				complete = false
			}
			if !complete {
				// Only the encoded reply is needed now: let the
				// arguments and the result go while it is written.
				args, result = nil, nil
			}
			c.send(e, c.others.Load() > 1)
		} else if callErr != nil {
			c.logNotification("rpc: notification failed", f.info.Name, callErr)
		}
		c.s.budget.give(charge)
		if complete {
			c.s.completed(f, args, result)
		}
		c.others.Add(-1)
		c.mu.Lock()
		c.running--
		if wantReply && c.calls[id] == rc {
			delete(c.calls, id)
		}
		if c.draining && c.running == 0 {
			close(c.drained)
		}
		c.mu.Unlock()
	}
	if f.inline && c.in.r.Buffered() == 0 {
		// Nothing else waits to be read: run the quick function here
		// rather than wake a worker for it, if it may run at once.
		if release, ok := c.s.admitNow(f); ok {
			rc.admitted = release
			run()
			return nil
		}
	}
	c.s.runCall(run)
	return nil
}

// run calls f once ServerConfig.Admit lets it, or at once if admitted (a
// release from admitNow) is not nil.
func (c *serverConn) run(ctx context.Context, f *function, args []reflect.Value, admitted func()) (any, *Error) {
	if admitted != nil {
		defer admitted()
	} else if c.s.cfg.Admit != nil && !f.system {
		release, err := c.s.cfg.Admit(ctx, f.info)
		if err != nil {
			return nil, ErrorOf(err)
		}
		defer release()
	}
	return f.call(ctx, args)
}

// endedCtx asks Admit for what it can give without waiting.
var endedCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// admitNow returns the release of a call of f admitted without waiting, or
// false.
func (s *Server) admitNow(f *function) (release func(), ok bool) {
	if s.cfg.Admit == nil || f.system {
		return func() {}, true
	}
	release, err := s.cfg.Admit(endedCtx, f.info)
	return release, err == nil
}

// builtin answers the methods the reader serves itself.
func (c *serverConn) builtin(dec *decoder, method string, n int) (any, *Error) {
	switch method {
	case MethodPing:
		return "pong", nil
	case MethodDescribe:
		return c.s.reg.list(), nil
	case MethodAuth:
		var token string
		if n != 1 || dec.dec.Decode(&token) != nil {
			return nil, &Error{Kind: KindBadArguments, Message: "shoal.auth takes one string: the token"}
		}
		if err := c.s.CheckToken(c.ctx, c.remote, []byte(token)); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Kind: KindUnavailable, Message: "connection closing"}
			}
			return nil, e
		}
		c.authed = true
		c.in.maxSize = c.s.cfg.MaxMessageSize
		c.deadlineMoved = time.Time{} // the idle timeout takes over
		return true, nil
	case MethodCancel:
		return c.cancelCalls(dec, n), nil
	}
	panic("rpc: not a built-in method: " + method)
}

// CheckToken checks a token that remote presents at another door of the
// same process (a node's HTTP endpoint, say) under the per-address limits
// that slow down guessing through shoal.auth, so that no door guesses
// faster than the other. It returns nil when the server has no token or
// token is the server's, an *Error of KindUnauthorized when it is wrong or
// the address has guessed too much lately, and ctx's error when ctx ends
// while the address's delay runs.
func (s *Server) CheckToken(ctx context.Context, remote string, token []byte) error {
	if s.cfg.Token == "" {
		return nil
	}
	ok, err := s.auth.check(ctx, remote, func() bool {
		return subtle.ConstantTimeCompare(token, []byte(s.cfg.Token)) == 1
	})
	switch {
	case errors.Is(err, errAuthBacklog):
		return &Error{Kind: KindUnauthorized, Message: err.Error() + "; try again later"}
	case err != nil:
		return err
	case !ok:
		return &Error{Kind: KindUnauthorized, Message: "wrong token"}
	}
	return nil
}

// cancelCalls ends the contexts of the calls whose msgids are in params and
// returns how many were running.
func (c *serverConn) cancelCalls(dec *decoder, n int) int {
	canceled := 0
	for i := 0; i < n; i++ {
		id, err := dec.dec.DecodeUint32()
		if err != nil {
			break
		}
		c.mu.Lock()
		rc := c.calls[id]
		c.mu.Unlock()
		if rc != nil {
			rc.cancel()
			canceled++
			c.s.log.Debug("rpc: call canceled by its caller", "remote", c.remote, "msgid", id)
		}
	}
	return canceled
}

func (c *serverConn) reply(id uint32, callErr *Error, result any) {
	e := getEncoder()
	e.response(id, callErr, result)
	c.send(e, false)
}

// send writes the response encoded in e and frees e; company says other
// calls on the connection are running (see connWriter.write). A large
// response is counted against the budget until written, never refused:
// its work is done.
func (c *serverConn) send(e *encoder, company bool) {
	if size := int64(e.buf.Len()); size > uncountedBytes {
		c.s.budget.force(size)
		defer c.s.budget.give(size)
	}
	if err := c.w.write(e.buf.Bytes(), company); err != nil {
		// The reader sees the broken connection too and ends it.
		c.conn.Close()
	}
	e.free()
}

// startDrain makes the connection refuse new calls.
func (c *serverConn) startDrain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.draining {
		c.draining = true
		c.drained = make(chan struct{})
		if c.running == 0 {
			close(c.drained)
		}
	}
}

// drain refuses new calls and waits for running ones and their replies.
func (c *serverConn) drain(ctx context.Context) error {
	c.startDrain()
	select {
	case <-c.drained:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.w.flushed()
	return nil
}
