package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is one control-plane binary running in its own process group,
// its stdout and stderr appended to a log file in the cluster directory.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status; read only after done is closed
}

// startProcess starts bin with args. Setpgid puts it (and anything it forks)
// in a group of its own, so Stop signals the whole group; Pdeathsig kills it
// if the test binary dies without running Stop (a panic, go test -timeout).
func startProcess(name, bin, logPath string, args []string, env []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("kubetest: start %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, and SIGKILL after grace. An exit
// caused by our own signal is not an error; an earlier crash is.
func (p *process) stop(grace time.Duration) error {
	if done, err := p.exited(); done {
		if err != nil && !killedBySignal(err) {
			return fmt.Errorf("kubetest: %s had exited before stop: %w", p.name, err)
		}
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// No group signal after the leader is reaped: its pid (and so the
	// group id) may then belong to someone else. None of the binaries forks.
	return nil
}

func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// tailLines returns at most n last lines of data.
func tailLines(data []byte, n int) string {
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 || n <= 0 {
		return ""
	}
	idx := len(data)
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(data[:idx], '\n')
		if j < 0 {
			return string(data)
		}
		idx = j
	}
	return string(data[idx+1:])
}

// logTail is the last lines of the process's log, indented for an error
// message.
func (p *process) logTail(n int) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("    (cannot read %s: %v)", p.log, err)
	}
	t := tailLines(data, n)
	if t == "" {
		return "    (log is empty)"
	}
	return "    " + strings.ReplaceAll(t, "\n", "\n    ")
}
