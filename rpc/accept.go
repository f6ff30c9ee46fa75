//go:build !plan9

package rpc

import "syscall"

// acceptShortages are the accept errors that a lack of something explains
// (descriptors for this process or the system, socket buffers, kernel
// memory) or that one connection caused (aborted before it was taken):
// all pass, so the accept loop retries after them.
var acceptShortages = []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED}
