package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Kind classifies an error that travels over the wire. On the wire an error
// is the string "<Kind>: <message>", so clients in any language can read it.
type Kind string

// The kinds of error a Shoal server sends. Clients should treat an unknown
// kind as a non-retryable failure of that call.
const (
	// KindUnknownFunction: no function of that name is registered.
	KindUnknownFunction Kind = "UnknownFunction"
	// KindBadArguments: the params do not fit the function's signature.
	KindBadArguments Kind = "BadArguments"
	// KindFunctionError: the function returned an error or panicked.
	KindFunctionError Kind = "FunctionError"
	// KindTimeout: the call's deadline passed.
	KindTimeout Kind = "Timeout"
	// KindOverloaded: the server refused the call for lack of capacity; retrying later
	// or elsewhere may succeed.
	KindOverloaded Kind = "Overloaded"
	// KindUnauthorized: the connection has not presented the server's token.
	KindUnauthorized Kind = "Unauthorized"
	// KindCanceled: the call was canceled by its caller.
	KindCanceled Kind = "Canceled"
	// KindUnavailable: the server is shutting down and takes no new calls.
	KindUnavailable Kind = "Unavailable"
	// KindRemote is given to an error from a peer that did not use the
	// "<Kind>: <message>" form (a third-party server, for example).
	KindRemote Kind = "Remote"
)

var knownKinds = map[Kind]bool{
	KindUnknownFunction: true, KindBadArguments: true, KindFunctionError: true,
	KindTimeout: true, KindOverloaded: true, KindUnauthorized: true,
	KindCanceled: true, KindUnavailable: true, KindRemote: true,
}

// Error is an error of a known Kind. Errors returned by a Shoal server reach
// the Go client as *Error; use errors.Is with the Err* sentinels to test the
// kind and errors.As to read the message.
type Error struct {
	Kind    Kind   // what went wrong, as sent on the wire
	Message string // the details, for people
	cause   error  // a local cause such as context.DeadlineExceeded, never sent
}

// Sentinels for errors.Is: an *Error matches the sentinel of its Kind.
var (
	ErrUnknownFunction = &Error{Kind: KindUnknownFunction}
	ErrBadArguments    = &Error{Kind: KindBadArguments}
	ErrFunctionError   = &Error{Kind: KindFunctionError}
	ErrTimeout         = &Error{Kind: KindTimeout}
	ErrOverloaded      = &Error{Kind: KindOverloaded}
	ErrUnauthorized    = &Error{Kind: KindUnauthorized}
	ErrCanceled        = &Error{Kind: KindCanceled}
	ErrUnavailable     = &Error{Kind: KindUnavailable}
)

// Errorf returns an *Error of the given kind. A function registered on a
// Server may return one to choose the kind its caller sees; any other error
// reaches the caller as a FunctionError.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Kind)
	}
	return string(e.Kind) + ": " + e.Message
}

// Is reports whether target is the sentinel of e's Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Kind == e.Kind
}

// Unwrap returns the local cause, such as context.DeadlineExceeded, if any.
func (e *Error) Unwrap() error { return e.cause }

// ParseError turns an error received on the wire into an *Error. A string
// "<Kind>: <message>" whose Kind is a single word keeps that kind; anything
// else becomes KindRemote with the whole value as its message.
func ParseError(v any) *Error {
	s, ok := v.(string)
	if !ok {
		if b, isBytes := v.([]byte); isBytes {
			s, ok = string(b), true
		}
	}
	if !ok {
		return &Error{Kind: KindRemote, Message: fmt.Sprint(v)}
	}
	if kind, msg, found := strings.Cut(s, ": "); found && isKindWord(kind) {
		return &Error{Kind: Kind(kind), Message: msg}
	}
	if isKindWord(s) && knownKinds[Kind(s)] {
		return &Error{Kind: Kind(s)}
	}
	return &Error{Kind: KindRemote, Message: s}
}

func isKindWord(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ErrorOf converts err into the *Error a caller receives for it, as a
// server does with what a function returned: an *Error anywhere in the
// chain keeps its kind, a context error becomes Timeout or Canceled,
// anything else is a FunctionError. Its Error() is the wire form
// "<Kind>: <message>".
func ErrorOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: KindTimeout, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &Error{Kind: KindCanceled, Message: err.Error()}
	}
	return &Error{Kind: KindFunctionError, Message: err.Error()}
}

// contextError is what a call returns when its context ends first. It matches
// both the Kind sentinel and the context error.
func contextError(method string, err error) *Error {
	kind := KindCanceled
	if errors.Is(err, context.DeadlineExceeded) {
		kind = KindTimeout
	}
	return &Error{Kind: kind, Message: method + ": " + err.Error(), cause: err}
}

// ErrClosed is returned by calls on a Client that was closed by its owner.
var ErrClosed = errors.New("rpc: client closed")

// ConnError reports that the connection to a server broke; every call that
// was waiting on it fails with a ConnError.
type ConnError struct {
	Addr string // the server's address
	Err  error  // what broke the connection
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("rpc: connection to %s broken: %v", e.Addr, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// DialError reports that a connection to a server could not be made: nobody
// listens there, the address does not resolve, the TLS handshake failed.
type DialError struct {
	Addr string // the address dialled
	Err  error  // why it failed
}

func (e *DialError) Error() string {
	cause := e.Err
	var op *net.OpError
	if errors.As(cause, &op) && op.Err != nil {
		cause = op.Err // its text repeats the address
	}
	return fmt.Sprintf("rpc: dial %s: %v", e.Addr, cause)
}

func (e *DialError) Unwrap() error { return e.Err }

// HandshakeError reports a TLS handshake that failed: the server does not
// serve TLS, or the certificates do not match. Trying again, or another
// node of the same grid, would fail the same way, so it is not Retryable.
type HandshakeError struct {
	Addr string // the address dialled
	Err  error  // what the handshake said
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("rpc: TLS handshake with %s: %v", e.Addr, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// ProtocolError reports bytes that are not a valid msgpack-rpc message or a
// message that breaks one of the reader's bounds. The connection that
// carried it is closed.
type ProtocolError struct {
	Reason string // which rule or bound the bytes broke
}

func (e *ProtocolError) Error() string { return "rpc: protocol error: " + e.Reason }

// Retryable reports whether a call that failed with err may succeed if tried
// again, on this server later or on another: the server was overloaded or
// shutting down, the call timed out, the connection broke or could not be
// made.
func Retryable(err error) bool {
	var ce *ConnError
	var de *DialError
	switch {
	case errors.As(err, &ce), errors.As(err, &de):
		return true
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrUnavailable), errors.Is(err, ErrTimeout):
		return true
	}
	return false
}

// DecodeError reports a reply that arrived but does not fit the result value
// the caller gave.
type DecodeError struct {
	Method string // the function called
	Err    error  // the decoder's complaint
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("rpc: %s: decoding result: %v", e.Method, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// recoverDecodePanic, deferred, turns a panic of the msgpack decoder while
// a reader handles a message into a ProtocolError in *err: hostile bytes
// cost that connection, never the process.
func recoverDecodePanic(err *error) {
	if p := recover(); p != nil {
		*err = &ProtocolError{Reason: fmt.Sprintf("message could not be decoded: %v", p)}
	}
}
