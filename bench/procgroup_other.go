//go:build !unix

package bench

import "os/exec"

// ownGroup does nothing here: the process is killed alone.
func ownGroup(*exec.Cmd) {}

// killGroup kills cmd's process.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}
