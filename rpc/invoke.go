package rpc

import (
	"context"
	"fmt"
	"reflect"
	"sync"
)

var decoderPool = sync.Pool{New: func() any { return newDecoder() }}

// Invoke calls the user function name in this process with params, the
// msgpack encoding of its argument array, exactly as a request would: the
// same BadArguments, FunctionError and panic handling, and
// ServerConfig.Completed is told of a cacheable success. It does not ask
// ServerConfig.Admit; the caller owns that. It is how batched methods (a
// node's shoal.map) run many items inside one call.
func (s *Server) Invoke(ctx context.Context, name string, params []byte) (any, error) {
	f := s.reg.lookup(name)
	if f == nil || f.system {
		return nil, &Error{Kind: KindUnknownFunction, Message: fmt.Sprintf("no function named %q", name)}
	}
	args, err := s.decodeParams(f, params)
	if err != nil {
		return nil, err
	}
	result, callErr := f.call(ctx, args)
	if callErr != nil {
		return nil, callErr
	}
	s.completed(f, args, result)
	return result, nil
}

// Prepared is a user function looked up once, to be called many times in
// a row (a node's shoal.map chunk): each Call decodes one argument array
// and runs the function as Invoke does, with the same errors, but skips the
// lookup and does not report to ServerConfig.Completed; whoever drives it
// decides what is cached.
type Prepared struct {
	s *Server
	f *function
}

// Prepare looks up the user function name for a run of calls.
func (s *Server) Prepare(name string) (*Prepared, bool) {
	f := s.reg.lookup(name)
	if f == nil || f.system {
		return nil, false
	}
	return &Prepared{s: s, f: f}, true
}

// Info describes the prepared function.
func (p *Prepared) Info() FunctionInfo { return p.f.info }

// Call runs the function with params, the msgpack encoding of its argument
// array.
func (p *Prepared) Call(ctx context.Context, params []byte) (any, error) {
	args, err := p.s.decodeParams(p.f, params)
	if err != nil {
		return nil, err
	}
	result, callErr := p.f.call(ctx, args)
	if callErr != nil {
		return nil, callErr
	}
	return result, nil
}

// completed reports a successful call of a cacheable user function to
// ServerConfig.Completed; other calls cost nothing here.
func (s *Server) completed(f *function, args []reflect.Value, result any) {
	if s.cfg.Completed == nil || f.system || !f.info.Cacheable {
		return
	}
	values := make([]any, len(args))
	for i, a := range args {
		values[i] = a.Interface()
	}
	s.cfg.Completed(f.info, values, result)
}

// Lookup returns the description of the user function name.
func (s *Server) Lookup(name string) (FunctionInfo, bool) {
	f := s.reg.lookup(name)
	if f == nil || f.system {
		return FunctionInfo{}, false
	}
	return f.info, true
}

func (s *Server) decodeParams(f *function, params []byte) (args []reflect.Value, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &Error{Kind: KindBadArguments, Message: fmt.Sprintf("%s: params could not be decoded: %v", f.info.Name, p)}
		}
	}()
	d := decoderPool.Get().(*decoder)
	defer func() {
		// A large item may have left a large scratch buffer in the
		// decoder; such a decoder is not kept.
		if len(params) <= uncountedBytes {
			d.reset(nil)
			decoderPool.Put(d)
		}
	}()
	d.reset(params)
	n, ok := d.paramsLen()
	if !ok {
		return nil, &Error{Kind: KindBadArguments, Message: f.info.Name + ": params must be an array"}
	}
	args, argErr := f.decodeArgs(d.dec, n)
	if argErr != nil {
		return nil, argErr
	}
	return args, nil
}
