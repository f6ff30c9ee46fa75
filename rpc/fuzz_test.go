package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

const fuzzMaxSize = 1 << 16

// FuzzMessageReader feeds arbitrary bytes to the server's message reader
// and envelope decoder. Whatever it accepts must be exactly one value that
// msgpack itself can decode, within the bounds; it must never panic, and its
// buffer must follow the bytes given, not the lengths claimed.
// Seeds are in testdata/fuzz/FuzzMessageReader.
func FuzzMessageReader(f *testing.F) {
	echo, err := newFunction("echo", func(x any) any { return x }, nil)
	if err != nil {
		f.Fatal(err)
	}
	add, err := newFunction("add", func(a, b int) int { return a + b }, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		mr := newMessageReader(bufio.NewReader(bytes.NewReader(input)), fuzzMaxSize, 8)
		dec := newDecoder()
		consumed := 0
		for {
			msg, err := mr.next()
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &pe) {
					t.Fatalf("unexpected error kind %T: %v", err, err)
				}
				break
			}
			consumed += len(msg)
			if len(msg) > fuzzMaxSize || consumed > len(input) {
				t.Fatalf("message of %d bytes from %d input bytes", len(msg), len(input))
			}
			// msgpack agrees that this is exactly one value.
			r := bytes.NewReader(msg)
			if err := msgpack.NewDecoder(r).Skip(); err != nil || r.Len() != 0 {
				t.Fatalf("accepted % x, but msgpack says err=%v with %d bytes left", msg, err, r.Len())
			}
			dec.reset(msg)
			env, err := dec.envelope()
			if err != nil || env.typ == typeResponse {
				continue
			}
			if n, ok := dec.paramsLen(); ok {
				f := echo
				if env.method == "add" {
					f = add
				}
				f.decodeArgs(dec.dec, n)
			}
		}
		if cap(mr.buf) > 2*len(input)+2*readChunk {
			t.Fatalf("buffer grew to %d for %d input bytes", cap(mr.buf), len(input))
		}
	})
}

// FuzzServerConn runs arbitrary bytes through a real server connection:
// the server must not panic, and must go on serving other connections.
func FuzzServerConn(f *testing.F) {
	s := NewServer(ServerConfig{MaxMessageSize: fuzzMaxSize, MaxDepth: 8, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	testFunctions(f, s)
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, input []byte) {
		client, server := net.Pipe()
		s.startConn(server)
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, client)
			close(drained)
		}()
		client.Write(input) // fails if the server hangs up first
		client.Close()
		<-drained

		other, server := net.Pipe()
		s.startConn(server)
		c := NewClient(other, ClientConfig{})
		defer c.Close()
		var pong string
		if err := c.Call(context.Background(), "shoal.ping", &pong); err != nil || pong != "pong" {
			t.Fatalf("server stopped serving after % x: %q, %v", input, pong, err)
		}
	})
}
