//go:build !unix

package main

import "errors"

// raiseOpenFileLimit does nothing where there is no RLIMIT_NOFILE.
func raiseOpenFileLimit() (before, after, hard uint64, err error) {
	return 0, 0, 0, errors.ErrUnsupported
}
