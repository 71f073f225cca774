package control

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/countersign/countersign/internal/playbook"
)

// crashPoint kills the control process with SIGKILL when the playbook
// journal reaches a step state: the drill's way to prove that a control
// plane killed at any step boundary resumes without repeating a completed
// step. A real crash: no deferred function, no graceful fleet shutdown (the
// node processes die with their parent through Pdeathsig).
type crashPoint struct {
	step  string
	state playbook.StepState
	delay time.Duration
}

// parseCrashPoint parses "STEP/STATE[+DELAY]", e.g. "snapshot/succeeded" or
// "canary/running+1s".
func parseCrashPoint(s string) (*crashPoint, error) {
	if s == "" {
		return nil, nil
	}
	spec, delay, hasDelay := strings.Cut(s, "+")
	step, state, ok := strings.Cut(spec, "/")
	if !ok || step == "" || state == "" {
		return nil, fmt.Errorf("control: crash point %q: want STEP/STATE[+DELAY]", s)
	}
	cp := &crashPoint{step: step, state: playbook.StepState(state)}
	if hasDelay {
		d, err := time.ParseDuration(delay)
		if err != nil {
			return nil, fmt.Errorf("control: crash point %q: %w", s, err)
		}
		cp.delay = d
	}
	return cp, nil
}

var errCrashNeedsDrill = errors.New("control: crash points are honoured only in drill worlds")

// observe fires the crash point on the matching journal event.
func (cp *crashPoint) observe(ev playbook.Event) {
	if cp == nil || ev.Kind != "step" || ev.Step != cp.step || ev.State != cp.state {
		return
	}
	kill := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	if cp.delay <= 0 {
		kill()
		return
	}
	time.AfterFunc(cp.delay, kill)
}
