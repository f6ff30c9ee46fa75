// Package rpc speaks msgpack-rpc over TCP, exactly as its specification
// says, so that clients written in any language can call Shoal functions.
//
// Messages are msgpack arrays concatenated on the stream with no other
// framing:
//
//	request       [0, msgid, method, params]
//	response      [1, msgid, error, result]
//	notification  [2, method, params]
//
// msgid is a 32-bit unsigned integer chosen by the caller, method is a str
// (or bin) and params an array. A failed call carries error as the string
// "<Kind>: <message>", Kind being one of the Kind constants, and result nil;
// a successful one carries error nil.
//
// A Server exposes plain Go functions by name:
//
//	srv := rpc.NewServer(rpc.ServerConfig{})
//	srv.Register("add", func(ctx context.Context, a, b int) (int, error) {
//		return a + b, nil
//	}, rpc.Cacheable())
//	go srv.Serve(listener)
//
// and a Client calls them, with many calls in flight on one connection:
//
//	c, err := rpc.Dial(ctx, "127.0.0.1:7373", rpc.ClientConfig{})
//	var sum int
//	err = c.Call(ctx, "add", &sum, 2, 3)
//
// Methods whose names start with "shoal." belong to Shoal itself:
//
//	shoal.ping             returns "pong"
//	shoal.describe         returns the registered functions: name, signature,
//	                       doc, version and whether results may be cached
//	shoal.auth [token]     authenticates the connection when the server has a
//	                       token; a wrong one closes the connection and makes
//	                       the next guess from that address wait longer
//	shoal.cancel [msgid…]  ends the context of the caller's running calls
//	                       (as a request or a notification)
//
// A Client sends its token over plain TCP only to loopback addresses, unless
// ClientConfig.AllowPlaintextToken says otherwise; elsewhere it needs TLS.
//
// Every server reader is bounded: a message larger than MaxMessageSize or
// nested deeper than MaxDepth, or bytes that are not msgpack-rpc, close that
// connection with a logged reason, and no buffer is grown ahead of the bytes
// that actually arrive. Across connections, MaxInFlightBytes bounds what
// calls hold, from the first bytes of their messages to their replies: a
// message that would pass it is discarded as it arrives and answered
// Overloaded, and the connection serves on.
package rpc
