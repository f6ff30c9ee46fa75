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
//
// One goroutine at a time reads the connection: whoever holds the read
// baton. A Call alone on the connection takes it and reads its own reply,
// so that nothing is handed between goroutines (each hand-off wakes a
// thread, which costs more than the round trip itself). Replies to other
// calls that it meets on the way it delivers, and when it has its own it
// passes the baton to the client's goroutine if other calls still wait,
// which then reads and delivers for them until none waits. While no call
// waits, that goroutine takes the baton once the connection has been quiet
// for a little while (idleWatch), so that Done fires when the server closes
// an idle connection.
type Client struct {
	conn   net.Conn
	addr   string
	w      *connWriter
	log    *slog.Logger
	cfg    ClientConfig
	reader sync.WaitGroup
	gone   chan struct{} // closed when the connection is finished
	// wake tells the client's goroutine it holds the baton now.
	wake chan struct{}
	// selfRead says callers may read their own replies: the connection
	// takes read deadlines, by which one whose context ends is
	// interrupted.
	selfRead bool

	// The reading state: used only by the holder of the baton.
	in  *messageReader
	dec *decoder

	mu      sync.Mutex
	pending map[uint32]*Call
	nextID  uint32
	err     error // why the connection is finished; nil while it is up
	closing bool
	// baton says who reads the connection; readingFor is the call whose
	// caller does, when one does.
	baton      batonHolder
	readingFor *Call
	// interrupted is set while a read deadline in the past stands to stop
	// the caller reading: its call's context ended.
	interrupted bool
	// selfReads counts the times a caller took the baton, for the
	// client's goroutine to tell a quiet connection.
	selfReads uint64
}

// batonHolder is who reads the connection.
type batonHolder uint8

const (
	batonFree   batonHolder = iota // nobody: no call waits
	batonClient                    // the client's goroutine
	batonCaller                    // the caller of Client.readingFor
)

// idleWatch is how long the baton may lie free before the client's
// goroutine takes it to watch the connection. Short enough that Done fires
// within a few milliseconds of a server closing an idle connection; long
// enough that a caller making one call after another is not disturbed.
const idleWatch = 4 * time.Millisecond

// aLongTimeAgo is a read deadline that has passed: setting it interrupts a
// read under way.
var aLongTimeAgo = time.Unix(1, 0)

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
		wake:    make(chan struct{}, 1),
		in:      newMessageReader(bufio.NewReaderSize(conn, readChunk), cfg.MaxMessageSize, cfg.MaxDepth),
		dec:     newMessageDecoder(),
		pending: make(map[uint32]*Call),
		// A connection that refuses read deadlines could not interrupt
		// a caller reading, so its replies all come through the
		// client's goroutine.
		selfRead: conn.SetReadDeadline(time.Time{}) == nil,
	}
	// The client's goroutine watches the connection from the start, so
	// that Done fires if the server closes it before any call.
	c.baton = batonClient
	c.wake <- struct{}{}
	c.reader.Add(1)
	go c.readLoop()
	return c
}

// Addr returns the address of the server.
func (c *Client) Addr() string { return c.addr }

// Done is closed when the connection is finished, by Close or by a failure;
// Err then says why. A server closing a connection is noticed at once
// while calls wait on it, and within a few milliseconds (idleWatch) of the
// last call when none does.
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
	call := &Call{Method: method, Args: args, Result: result, Done: make(chan *Call, 1)}
	if c.send(ctx, call, c.selfRead) {
		c.readFor(call)
	}
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
	c.send(ctx, call, false)
	return call
}

// send registers call, writes its request and arranges for its reply to be
// read: by the caller, when it may read (self) and it finds the baton free,
// which send then reports; otherwise by whoever holds the baton. A call
// that cannot start is delivered at once.
func (c *Client) send(ctx context.Context, call *Call, self bool) (readOwnReply bool) {
	if err := ctx.Err(); err != nil {
		call.Error = contextError(call.Method, err)
		call.done()
		return false
	}

	c.mu.Lock()
	if c.err != nil {
		call.Error = c.err
		c.mu.Unlock()
		call.done()
		return false
	}
	for {
		c.nextID++
		if _, used := c.pending[c.nextID]; !used {
			break
		}
	}
	call.id = c.nextID
	c.pending[call.id] = call
	company := len(c.pending) > 1
	c.mu.Unlock()

	e := getEncoder()
	err := e.request(call.id, call.Method, call.Args)
	if err == nil {
		if err = c.w.write(e.buf.Bytes(), company); err != nil {
			err = c.fail(err)
		}
	}
	e.free()
	if err != nil {
		if c.take(call.id, call) != nil {
			call.Error = err
			call.done()
		}
		return false
	}
	// The watcher starts after the request is written, so a cancel
	// notification can never overtake its request.
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.abandon(call, ctx.Err()) })
	}
	c.mu.Lock()
	waiting := c.pending[call.id] == call
	if waiting && stop != nil {
		call.stopCtx, stop = stop, nil
	}
	wake := false
	if c.baton == batonFree && c.err == nil {
		switch {
		case waiting && self:
			c.baton, c.readingFor = batonCaller, call
			c.selfReads++
			readOwnReply = true
		case len(c.pending) > 0:
			c.baton, wake = batonClient, true
		}
	}
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	if wake {
		c.wake <- struct{}{}
	}
	return readOwnReply
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
	if err := c.w.write(e.buf.Bytes(), false); err != nil {
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
// and asks the server to stop working on it. A caller reading for the call
// is interrupted.
func (c *Client) abandon(call *Call, ctxErr error) {
	c.mu.Lock()
	if c.pending[call.id] != call {
		c.mu.Unlock()
		return
	}
	delete(c.pending, call.id)
	call.stopCtx = nil // it is what runs this
	if c.baton == batonCaller && c.readingFor == call && !c.interrupted && c.err == nil {
		c.interrupted = true
		if err := c.conn.SetReadDeadline(aLongTimeAgo); err != nil {
			c.log.Debug("rpc: could not interrupt a read", "addr", c.addr, "err", err)
		}
	}
	c.mu.Unlock()
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

// readLoop is the client's goroutine: it reads for the calls whose
// callers do not, whenever it is handed the baton, and takes the baton
// itself once the connection has been quiet for idleWatch.
func (c *Client) readLoop() {
	defer c.reader.Done()
	quiet := time.NewTimer(idleWatch)
	defer quiet.Stop()
	var seen uint64 // selfReads when the timer was last set
	for {
		select {
		case <-c.wake:
		case <-quiet.C:
			c.mu.Lock()
			take := c.baton == batonFree && c.selfReads == seen && c.err == nil
			if take {
				c.baton = batonClient
			}
			seen = c.selfReads
			c.mu.Unlock()
			if !take {
				quiet.Reset(idleWatch)
				continue
			}
		case <-c.gone:
			return
		}
		if !c.dispatch() {
			return
		}
		quiet.Reset(idleWatch)
	}
}

// dispatch reads and delivers replies for the client's goroutine, holding
// the baton, until a message leaves no call waiting; then it frees the
// baton. It returns false once the connection is finished.
func (c *Client) dispatch() bool {
	for {
		_, left, err := c.readOne(nil)
		if err != nil {
			c.fail(err)
			return false
		}
		if left == 0 {
			c.mu.Lock()
			if len(c.pending) == 0 {
				c.baton = batonFree
				c.mu.Unlock()
				return true
			}
			c.mu.Unlock()
		}
	}
}

// readFor reads, holding the baton, until call's reply has come or the
// call has ended otherwise, delivering the replies to other calls it
// meets; then it passes the baton on.
func (c *Client) readFor(call *Call) {
	for {
		own, _, err := c.readOne(call)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && c.yieldInterrupted() {
				return
			}
			c.fail(err)
			return
		}
		if own {
			c.passBaton()
			return
		}
	}
}

// readOne reads one message and acts on it, for the holder of the baton,
// on whose behalf own (if not nil) is called. It reports whether the
// message was own's reply, and how many calls were left waiting after a
// reply (-1 after any other message). An error means nothing more can be
// read: a bad message has failed the connection already, and the
// connection's own error (which may be a deadline passing) is the
// holder's to act on.
func (c *Client) readOne(own *Call) (isOwn bool, left int, err error) {
	msg, err := c.in.next()
	if err != nil {
		return false, -1, err
	}
	isOwn, left, err = c.handle(msg, own)
	if err != nil {
		c.log.Warn("rpc: closing connection: bad message from server", "addr", c.addr, "err", err)
		return false, -1, c.fail(err)
	}
	c.in.release()
	return isOwn, left, nil
}

// yieldInterrupted passes the baton on from a caller whose read stopped at
// a deadline, if that was the interruption abandon makes, and reports
// whether it was. The client's goroutine goes on reading if calls are
// waiting or a message is half read.
func (c *Client) yieldInterrupted() bool {
	c.mu.Lock()
	if !c.interrupted {
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	c.passBaton()
	return true
}

// passBaton gives up the caller's baton: to the client's goroutine while
// calls are waiting or a message is half read, else to nobody. A read
// deadline set to interrupt the caller is lifted first.
func (c *Client) passBaton() {
	c.mu.Lock()
	if c.interrupted {
		c.interrupted = false
		if err := c.conn.SetReadDeadline(time.Time{}); err != nil {
			c.mu.Unlock()
			c.fail(err)
			return
		}
	}
	c.readingFor = nil
	wake := c.err == nil && (len(c.pending) > 0 || c.in.partial)
	if wake {
		c.baton = batonClient
	} else {
		c.baton = batonFree
	}
	c.mu.Unlock()
	if wake {
		c.wake <- struct{}{}
	}
}

// handle acts on one message: a reply is delivered to its call. It
// reports whether the message was own's reply and, after a reply, how many
// calls are left waiting (-1 after any other message).
func (c *Client) handle(msg []byte, own *Call) (isOwn bool, left int, err error) {
	defer recoverDecodePanic(&err)
	dec := c.dec
	dec.reset(msg)
	env, err := dec.envelope()
	if err != nil {
		return false, -1, err
	}
	switch env.typ {
	case typeResponse:
		call, left := c.takeCounting(env.id)
		if call != nil {
			c.complete(call, dec)
		}
		return call != nil && call == own, left, nil
	case typeRequest:
		// A server may call back on this connection; this client serves
		// nothing, so say so rather than leave the server waiting.
		e := getEncoder()
		e.response(env.id, &Error{Kind: KindUnknownFunction, Message: "the client serves no functions"}, nil)
		err := c.w.write(e.buf.Bytes(), false)
		e.free()
		return false, -1, err
	}
	return false, -1, nil // notifications from the server are ignored
}

// takeCounting is take for a reply: it also returns how many calls are
// left waiting.
func (c *Client) takeCounting(id uint32) (*Call, int) {
	c.mu.Lock()
	call := c.pending[id]
	var stop func() bool
	if call != nil {
		delete(c.pending, id)
		stop, call.stopCtx = call.stopCtx, nil
	}
	left := len(c.pending)
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	return call, left
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
