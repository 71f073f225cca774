package local

import "syscall"

// sysProcAttr puts each replica in its own process group (so a stop reaches
// everything it started) and has the kernel kill it if the supervisor dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
