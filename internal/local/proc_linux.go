package local

import "syscall"

// dieWithParent has the kernel kill a started process when the process
// that started it dies, so an interrupted benchmark leaves nothing behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
