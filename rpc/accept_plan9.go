package rpc

import "syscall"

// acceptShortages are the accept errors that a passing shortage explains;
// Plan 9 names only this one of them.
var acceptShortages = []error{syscall.EMFILE}
