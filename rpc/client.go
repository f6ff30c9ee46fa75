package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ClientConfig configures a Client. The zero value is ready to use.
type ClientConfig struct {
	// Token is sent with shoal.auth when the connection opens, for servers
	// that require one. Default: none.
	Token string
	// TLS, when set, wraps the connection in TLS with this configuration.
	// Default: plain TCP.
	TLS *tls.Config
	// AllowPlaintextToken lets Dial send Token over plain TCP to a server
	// beyond loopback, where anyone on the path can read it and use it.
	// Default: false: without TLS the token goes only to loopback
	// addresses, and Dial elsewhere fails with ErrPlaintextToken before
	// connecting (or, for a host name, before authenticating).
	AllowPlaintextToken bool
	// DialTimeout bounds connecting (and authenticating) when the context
	// has no earlier deadline. Default: 5s.
	DialTimeout time.Duration
	// WriteTimeout bounds each write to the socket; a peer that reads
	// nothing for this long breaks the connection. Default: 30s.
	WriteTimeout time.Duration
	// MaxMessageSize bounds a reply. Default: 64 MiB.
	MaxMessageSize int
	// MaxDepth bounds the nesting of a reply. Default: 64.
	MaxDepth int
	// Logger receives connection events. Default: slog.Default().
	Logger *slog.Logger
}

func (c *ClientConfig) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return 5 * time.Second
}

func (c *ClientConfig) writeTimeout() time.Duration {
	if c.WriteTimeout > 0 {
		return c.WriteTimeout
	}
	return 30 * time.Second
}

func (c *ClientConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Call is one call in flight, as returned by Client.Go.
type Call struct {
	Method string     // the function called
	Args   []any      // its arguments
	Result any        // where the reply is decoded; nil discards it
	Error  error      // set when Done delivers the call
	Done   chan *Call // receives the call when it completes

	id      uint32
	stopCtx func() bool // unregisters the context watcher; guarded by Client.mu
}

func (call *Call) done() {
	select {
	case call.Done <- call:
	default:
		// Done was given without room; as with net/rpc, the caller chose
		// to miss this completion rather than block the reader.
	}
}

// Client is a msgpack-rpc client on one connection. It is safe for use by
// many goroutines: calls share the connection, their replies are matched by
// msgid in whatever order they come, and their writes are coalesced.
type Client struct {
	conn   net.Conn
	addr   string
	w      *connWriter
	log    *slog.Logger
	cfg    ClientConfig
	reader sync.WaitGroup
	gone   chan struct{} // closed when the connection is finished

	mu      sync.Mutex
	pending map[uint32]*Call
	nextID  uint32
	err     error // why the connection is finished; nil while it is up
	closing bool
}

// ErrPlaintextToken is matched (with errors.Is) by Dial's error when it
// would have sent the token over plain TCP to a server beyond loopback;
// see ClientConfig.AllowPlaintextToken.
var ErrPlaintextToken = errors.New("rpc: refusing to send the token in the clear beyond loopback; use TLS, or allow it explicitly")

// Dial connects to a msgpack-rpc server at addr ("host:port") and, when
// cfg.Token is set, authenticates before returning.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	guardToken := cfg.Token != "" && cfg.TLS == nil && !cfg.AllowPlaintextToken
	if guardToken {
		// An address given as an IP is refused before any packet is sent.
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
				return nil, fmt.Errorf("%w (to %s)", ErrPlaintextToken, addr)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	if guardToken {
		// A host name is judged by the address it resolved to.
		if tcp, ok := conn.RemoteAddr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
			conn.Close()
			return nil, fmt.Errorf("%w (to %s, at %s)", ErrPlaintextToken, addr, conn.RemoteAddr())
		}
	}
	if cfg.TLS != nil {
		tlsCfg := cfg.TLS
		if tlsCfg.ServerName == "" {
			// As tls.Dialer does: verify the certificate against the host dialled.
			tlsCfg = tlsCfg.Clone()
			tlsCfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &HandshakeError{Addr: addr, Err: err}
		}
		conn = tc
	}
	c := NewClient(conn, cfg)
	if cfg.Token != "" {
		if err := c.Call(ctx, MethodAuth, nil, cfg.Token); err != nil {
			c.Close()
			return nil, fmt.Errorf("rpc: authenticate to %s: %w", addr, err)
		}
	}
	return c, nil
}

// NewClient runs a client on an established connection and takes ownership
// of it. It does not authenticate; see Dial.
func NewClient(conn net.Conn, cfg ClientConfig) *Client {
	c := &Client{
		conn:    conn,
		addr:    conn.RemoteAddr().String(),
		w:       newConnWriter(conn, cfg.writeTimeout()),
		log:     cfg.logger(),
		cfg:     cfg,
		gone:    make(chan struct{}),
		pending: make(map[uint32]*Call),
	}
	c.reader.Add(1)
	go c.readLoop()
	return c
}

// Addr returns the address of the server.
func (c *Client) Addr() string { return c.addr }

// Done is closed when the connection is finished, by Close or by a failure;
// Err then says why.
func (c *Client) Done() <-chan struct{} { return c.gone }

// Err returns why the connection finished, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Call calls method with args and decodes the reply into result (a pointer,
// or nil to discard it). It returns when the reply arrives, when the
// connection breaks (a *ConnError), or when ctx ends (an *Error of kind
// Timeout or Canceled that also matches ctx.Err() with errors.Is); in the
// last case the server is asked to cancel the call.
func (c *Client) Call(ctx context.Context, method string, result any, args ...any) error {
	call := c.Go(ctx, method, result, make(chan *Call, 1), args...)
	<-call.Done
	return call.Error
}

// Go starts a call and returns at once; done receives the call when it
// completes (a new channel is made when done is nil). done must have room:
// the client never blocks to deliver a completion. ctx bounds the call as
// in Call.
func (c *Client) Go(ctx context.Context, method string, result any, done chan *Call, args ...any) *Call {
	if done == nil {
		done = make(chan *Call, 1)
	} else if cap(done) == 0 {
		panic("rpc: Go called with unbuffered done channel")
	}
	call := &Call{Method: method, Args: args, Result: result, Done: done}
	if err := ctx.Err(); err != nil {
		call.Error = contextError(method, err)
		call.done()
		return call
	}

	c.mu.Lock()
	if c.err != nil {
		call.Error = c.err
		c.mu.Unlock()
		call.done()
		return call
	}
	for {
		c.nextID++
		if _, used := c.pending[c.nextID]; !used {
			break
		}
	}
	call.id = c.nextID
	c.pending[call.id] = call
	c.mu.Unlock()

	e := getEncoder()
	err := e.request(call.id, method, args)
	if err == nil {
		if err = c.w.write(e.buf.Bytes()); err != nil {
			err = c.fail(err)
		}
	}
	e.free()
	if err != nil {
		if c.take(call.id, call) != nil {
			call.Error = err
			call.done()
		}
		return call
	}
	// The watcher starts after the request is written, so a cancel
	// notification can never overtake its request.
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.abandon(call, ctx.Err()) })
		c.mu.Lock()
		if c.pending[call.id] == call {
			call.stopCtx = stop
			stop = nil
		}
		c.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
	return call
}

// Notify sends a notification: a call that gets no reply.
func (c *Client) Notify(method string, args ...any) error {
	if err := c.Err(); err != nil {
		return err
	}
	e := getEncoder()
	defer e.free()
	if err := e.notification(method, args); err != nil {
		return err
	}
	if err := c.w.write(e.buf.Bytes()); err != nil {
		return c.fail(err)
	}
	return nil
}

// take removes the call with id from the pending set and returns it; nil
// means someone else (the reader, a cancellation, a failure) owns it now.
// When want is not nil, only that call is taken.
func (c *Client) take(id uint32, want *Call) *Call {
	c.mu.Lock()
	call := c.pending[id]
	if want != nil && call != want {
		call = nil
	}
	var stop func() bool
	if call != nil {
		delete(c.pending, id)
		stop, call.stopCtx = call.stopCtx, nil
	}
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	return call
}

// abandon ends a call whose context ended, unless its reply got there first,
// and asks the server to stop working on it.
func (c *Client) abandon(call *Call, ctxErr error) {
	if c.take(call.id, call) == nil {
		return
	}
	// The cancel goes out before the caller hears back, so a caller that
	// closes the client at once still stops the work on the server.
	if err := c.Notify(MethodCancel, call.id); err != nil {
		c.log.Debug("rpc: could not send cancel", "addr", c.addr, "err", err)
	}
	call.Error = contextError(call.Method, ctxErr)
	call.done()
}

// fail finishes the connection with cause and fails every pending call.
// It returns the error the calls received.
func (c *Client) fail(cause error) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.closing {
		c.err = ErrClosed
	} else {
		c.err = &ConnError{Addr: c.addr, Err: cause}
	}
	err := c.err
	calls := c.pending
	c.pending = make(map[uint32]*Call)
	stops := make([]func() bool, 0, len(calls))
	for _, call := range calls {
		if call.stopCtx != nil {
			stops = append(stops, call.stopCtx)
			call.stopCtx = nil
		}
	}
	c.mu.Unlock()

	c.conn.Close()
	close(c.gone)
	for _, stop := range stops {
		stop()
	}
	for _, call := range calls {
		call.Error = err
		call.done()
	}
	return err
}

// Close closes the connection; calls still waiting fail with ErrClosed.
// It returns when the client's goroutine has stopped and is safe to call
// more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.fail(ErrClosed)
	c.reader.Wait()
	return nil
}

func (c *Client) readLoop() {
	defer c.reader.Done()
	mr := newMessageReader(bufio.NewReaderSize(c.conn, readChunk), c.cfg.MaxMessageSize, c.cfg.MaxDepth)
	dec := newMessageDecoder()
	for {
		msg, err := mr.next()
		if err != nil {
			c.fail(err)
			return
		}
		if err := c.handle(dec, msg); err != nil {
			c.log.Warn("rpc: closing connection: bad message from server", "addr", c.addr, "err", err)
			c.fail(err)
			return
		}
		mr.release()
	}
}

func (c *Client) handle(dec *decoder, msg []byte) (err error) {
	defer recoverDecodePanic(&err)
	dec.reset(msg)
	env, err := dec.envelope()
	if err != nil {
		return err
	}
	switch env.typ {
	case typeResponse:
		if call := c.take(env.id, nil); call != nil {
			c.complete(call, dec)
		}
	case typeRequest:
		// A server may call back on this connection; this client serves
		// nothing, so say so rather than leave the server waiting.
		e := getEncoder()
		e.response(env.id, &Error{Kind: KindUnknownFunction, Message: "the client serves no functions"}, nil)
		err := c.w.write(e.buf.Bytes())
		e.free()
		return err
	}
	return nil // notifications from the server are ignored
}

// complete reads the error and result of a response into call and
// delivers it. The decoder can panic on some destinations (a reused []any
// holding values, for one); that costs this call, never the reader, and the
// call is delivered whatever happens.
func (c *Client) complete(call *Call, dec *decoder) {
	defer func() {
		if p := recover(); p != nil {
			call.Error = &DecodeError{Method: call.Method, Err: fmt.Errorf("decoder panicked: %v", p)}
		}
		call.done()
	}()
	errVal, err := dec.dec.DecodeInterface()
	switch {
	case err != nil:
		call.Error = &DecodeError{Method: call.Method, Err: fmt.Errorf("decoding error value: %w", err)}
	case errVal != nil:
		call.Error = ParseError(errVal)
	case call.Result != nil:
		if err := dec.dec.Decode(call.Result); err != nil {
			call.Error = &DecodeError{Method: call.Method, Err: err}
		}
	}
}
