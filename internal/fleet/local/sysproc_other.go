//go:build unix && !linux

package local

import "syscall"

// sysProcAttr puts each replica in its own process group so a stop reaches
// everything it started. Only Linux offers a parent-death signal; elsewhere
// Close is what guarantees no replica outlives the supervisor.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
