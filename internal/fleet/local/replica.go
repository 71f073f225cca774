package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/countersign/countersign/internal/fleet"
)

// replica is one supervised node process. Its loop restarts the process
// when it exits unasked, with exponential backoff, until stop is called.
type replica struct {
	f        *Fleet
	pool     string
	index    int
	rev      fleet.Revision
	exe      string // verified copy of the artifact
	instance string // <pool>-r<revision>-<index>
	dataDir  string
	logPath  string

	cancel context.CancelFunc // ends the supervision loop
	done   chan struct{}      // closed when the loop has returned and the process is gone

	mu       sync.Mutex // guards the fields below
	port     int
	ready    bool
	cmd      *exec.Cmd
	restarts int
	killed   bool // the last stop had to use SIGKILL
}

func (r *replica) url() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

func (r *replica) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

func (r *replica) restartCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.restarts
}

// pid returns the running process id, or 0.
func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// supervise runs until ctx ends; then it stops the process gracefully.
func (r *replica) supervise(ctx context.Context) {
	defer close(r.done)
	log := r.f.log.With("instance", r.instance, "release", r.rev.Release.ID)
	backoff := r.f.cfg.RestartBackoffMin
	for {
		started := time.Now()
		exited, everReady, err := r.runOnce(ctx, log)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.ErrorContext(ctx, "fleet: replica could not start", "err", err)
		} else {
			log.WarnContext(ctx, "fleet: replica exited unasked, restarting", "exit", exited, "backoff", backoff)
		}
		r.mu.Lock()
		r.restarts++
		if !everReady {
			// Perhaps the port was taken; try another one next time.
			if p, perr := freePort(); perr == nil {
				r.port = p
			}
		}
		r.mu.Unlock()
		if time.Since(started) >= r.f.cfg.BackoffReset {
			backoff = r.f.cfg.RestartBackoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.f.cfg.RestartBackoffMax)
	}
}

// runOnce starts the process and returns when it exits unasked (with its
// exit state) or, once ctx ends, after stopping it.
func (r *replica) runOnce(ctx context.Context, log *slog.Logger) (exit string, everReady bool, err error) {
	cmd, logFile, err := r.command()
	if err != nil {
		return "", false, err
	}
	defer logFile.Close()
	if err := cmd.Start(); err != nil {
		return "", false, fmt.Errorf("start %s: %w", r.exe, err)
	}
	fmt.Fprintf(logFile, "=== countersign fleet: started pid %d at %s (%s)\n", cmd.Process.Pid, time.Now().UTC().Format(time.RFC3339Nano), r.instance)
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	readyDone := make(chan bool, 1)
	pollCtx, stopPoll := context.WithCancel(ctx)
	go func() { readyDone <- r.pollReady(pollCtx) }()

	defer func() {
		stopPoll()
		everReady = everReady || <-readyDone
		r.mu.Lock()
		r.ready, r.cmd = false, nil
		r.mu.Unlock()
		// Nothing the replica started may outlive it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		fmt.Fprintf(logFile, "=== countersign fleet: pid %d ended: %s\n", cmd.Process.Pid, exit)
	}()
	select {
	case werr := <-waited:
		return exitText(werr), false, nil
	case <-ctx.Done():
	}
	// Asked to stop: SIGTERM the group, then SIGKILL after the grace period.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	timer := time.NewTimer(r.f.cfg.StopTimeout)
	defer timer.Stop()
	select {
	case werr := <-waited:
		return "stopped: " + exitText(werr), false, nil
	case <-timer.C:
	}
	log.WarnContext(ctx, "fleet: replica did not stop in time, killing", "timeout", r.f.cfg.StopTimeout)
	r.mu.Lock()
	r.killed = true
	r.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return "killed: " + exitText(<-waited), false, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// pollReady polls GET /readyz until it answers 200 (true) or ctx ends.
func (r *replica) pollReady(ctx context.Context) bool {
	u := r.url() + "/readyz"
	t := time.NewTicker(r.f.cfg.ReadyInterval)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false
		}
		if resp, err := r.f.http.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.mu.Lock()
				r.ready = true
				r.mu.Unlock()
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// command builds the exec.Cmd of one start and opens its log file.
func (r *replica) command() (*exec.Cmd, *os.File, error) {
	r.mu.Lock()
	port := r.port
	r.mu.Unlock()
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rel := r.rev.Release
	args, err := fleet.RenderArgs(rel.Args, r.f.cfg.ListenArgs, argData{
		Listen: listen, Port: port, Pool: r.pool, Replica: r.index, Instance: r.instance,
		Release: rel.ID, DataDir: r.dataDir, FlagsFile: rel.FlagsFile,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(r.dataDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("data dir: %w", err)
	}
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	cmd := exec.Command(r.exe, args...)
	cmd.Dir = r.dataDir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	cmd.Env = append(os.Environ(),
		"COUNTERSIGN_RELEASE="+rel.ID,
		"COUNTERSIGN_INSTANCE="+r.instance,
		"COUNTERSIGN_POOL="+r.pool,
		"COUNTERSIGN_LISTEN="+listen,
	)
	if rel.FlagsFile != "" {
		cmd.Env = append(cmd.Env, "COUNTERSIGN_FLAGS_FILE="+rel.FlagsFile)
	}
	cmd.Env = append(cmd.Env, r.f.cfg.Env...)
	cmd.Env = append(cmd.Env, rel.Env...)
	return cmd, logFile, nil
}

// stop ends supervision: SIGTERM, then SIGKILL after StopTimeout. It reports
// whether the process had to be killed.
func (r *replica) stop() (killed bool) {
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killed
}

// kill ends the process group at once.
func (r *replica) kill() {
	if pid := r.pid(); pid != 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	r.cancel()
	<-r.done
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var errClosed = errors.New("fleet/local: closed")
