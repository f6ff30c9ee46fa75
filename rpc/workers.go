package rpc

import "time"

// workerIdle is how long a call worker waits for another call before it
// exits.
const workerIdle = 10 * time.Second

// runCall runs call on an idle worker goroutine, or on a new one when
// every worker is busy. Workers outlive their calls because a call through
// reflect needs more stack than a goroutine starts with: a fresh goroutine
// per call grew and copied its stack on every call, which took 40% of the
// server's CPU time with 64 callers. A worker grows its stack once.
//
// runCall is called by a connection's reader, which the server's
// WaitGroup already counts, so adding a worker to it is safe; workers end
// once the server's context does.
func (s *Server) runCall(call func()) {
	select {
	case s.work <- call:
		return
	default:
	}
	s.wg.Add(1)
	go s.worker(call)
}

func (s *Server) worker(call func()) {
	defer s.wg.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		call()
		idle.Reset(workerIdle)
		select {
		case call = <-s.work:
		case <-idle.C:
			return
		case <-s.ctx.Done():
			return
		}
	}
}
