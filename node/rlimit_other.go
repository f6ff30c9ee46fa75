//go:build !unix

package node

// openFileLimit reports no limit on open files where the system has no
// RLIMIT_NOFILE.
func openFileLimit() (uint64, bool) { return 0, false }
