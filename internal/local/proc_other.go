//go:build !linux

package local

import "syscall"

// dieWithParent asks for nothing where the kernel cannot kill a child with
// its parent; Stop still stops it.
func dieWithParent() *syscall.SysProcAttr { return nil }
