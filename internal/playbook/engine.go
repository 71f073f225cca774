package playbook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/store"
)

// Errors of the engine's operator API.
var (
	ErrTimeout     = errors.New("playbook: step timed out")
	ErrFinished    = errors.New("playbook: run already finished")
	ErrSuperseded  = errors.New("playbook: another engine resumed this run")
	ErrForbidden   = errors.New("playbook: approver holds none of the required roles")
	ErrDuplicate   = errors.New("playbook: approver already approved this step")
	ErrWrongState  = errors.New("playbook: step is not in a state that allows this")
	ErrUnknownStep = errors.New("playbook: unknown step")
)

var (
	errReload  = errors.New("playbook: journal changed")
	errStop    = errors.New("playbook: run stopped")
	errAborted = errors.New("playbook: run aborted by operator")
)

const (
	noteResumed   = "resumed by operator"
	noteRecovered = "driver restarted; continuing from the journal"
)

// Defaults for Config.
const (
	DefaultStepTimeout  = 10 * time.Minute
	DefaultPollInterval = 2 * time.Second
)

// Config configures an Engine.
type Config struct {
	Store   JournalStore // required
	Actions *Registry    // required
	// Policy decides approval gates; default HumanApproval.
	Policy ApprovalPolicy
	// Clock is the time source; default the system clock.
	Clock Clock
	// DefaultTimeout bounds a step without its own timeout; default DefaultStepTimeout.
	DefaultTimeout time.Duration
	// PollInterval is how often a run that waits (for approvals, or for a
	// retry's backoff) re-reads its journal to see approvals and aborts made
	// by other processes; default DefaultPollInterval.
	PollInterval time.Duration
	// Observer, if set, is called after every durable journal record, in
	// order, from the goroutine that wrote it. It must not block for long.
	Observer func(Event)
	// Release and Instance are stamped on audit events.
	Release, Instance string
	Logger            *slog.Logger
}

// Engine runs playbooks durably. It is safe for concurrent use; each run is
// driven by the goroutine that called Run or Resume.
type Engine struct {
	cfg Config

	mu      sync.Mutex
	wake    map[string]chan struct{}           // closed to wake a waiting driver
	cancels map[string]context.CancelCauseFunc // in-process running actions
}

// New returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Actions == nil {
		return nil, errors.New("playbook: Config.Store and Config.Actions are required")
	}
	if cfg.Policy == nil {
		cfg.Policy = HumanApproval{}
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultStepTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Engine{cfg: cfg, wake: map[string]chan struct{}{}, cancels: map[string]context.CancelCauseFunc{}}, nil
}

// NewRunID returns a fresh run ID stamped with t.
func NewRunID(t time.Time) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "run-" + t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// RunOptions are the inputs of a new run.
type RunOptions struct {
	RunID  string            // default NewRunID(now)
	Params map[string]string // merged over the playbook's defaults
	Actor  string            // who started the run; required
}

// Run starts a run of spec and drives it until it succeeds, fails, is
// aborted or pauses, or until ctx is done (the run can then be resumed).
func (e *Engine) Run(ctx context.Context, spec *Spec, o RunOptions) (Status, error) {
	if o.Actor == "" {
		return Status{}, errors.New("playbook: RunOptions.Actor is required")
	}
	params, err := spec.resolveParams(o.Params)
	if err != nil {
		return Status{}, err
	}
	if o.RunID == "" {
		o.RunID = NewRunID(e.cfg.Clock.Now())
	}
	f := &runFold{ID: o.RunID}
	tok := newDriver()
	rec := Record{Kind: kindStarted, Actor: o.Actor, Driver: tok, Source: spec.Source, Params: params}
	if err := e.append(ctx, f, rec); err != nil {
		if errors.Is(err, errReload) {
			return Status{}, fmt.Errorf("playbook: run %s already exists: %w", o.RunID, store.ErrExists)
		}
		return Status{}, err
	}
	return e.drive(ctx, f, o.Actor, tok)
}

// Resume continues a run from its journal. A paused run is resumed (a failed
// or unavailable step is tried again); a run whose driver died continues
// where the journal says, re-running a step that was journaled as running
// with the same idempotency token. A finished run returns its status.
func (e *Engine) Resume(ctx context.Context, runID, actor string) (Status, error) {
	for range 5 {
		f, err := e.load(ctx, runID, e.cfg.Actions)
		if err != nil {
			return Status{}, err
		}
		if f.State.Terminal() {
			return e.status(f), nil
		}
		note := noteRecovered
		if f.State == RunPaused {
			note = noteResumed
		}
		tok := newDriver()
		err = e.append(ctx, f, Record{Kind: kindRunState, RunState: RunRunning, Actor: actor, Driver: tok, Note: note})
		if errors.Is(err, errReload) {
			continue
		}
		if err != nil {
			return Status{}, err
		}
		return e.drive(ctx, f, actor, tok)
	}
	return Status{}, fmt.Errorf("playbook: run %s: journal keeps changing under resume", runID)
}

func newDriver() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// drive advances the run until it stops.
func (e *Engine) drive(ctx context.Context, f *runFold, actor, tok string) (Status, error) {
	for {
		err := e.advance(ctx, f, actor)
		switch {
		case err == nil:
			continue
		case errors.Is(err, errStop):
			return e.status(f), nil
		case errors.Is(err, errReload):
			nf, lerr := e.load(ctx, f.ID, e.cfg.Actions)
			if lerr != nil {
				return e.status(f), lerr
			}
			f = nf
			if f.Driver != tok && !f.State.Terminal() {
				return e.status(f), fmt.Errorf("run %s: %w", f.ID, ErrSuperseded)
			}
		default:
			return e.status(f), err
		}
	}
}

// advance takes one step of the state machine: at most one journal record,
// or one action attempt, or one wait.
func (e *Engine) advance(ctx context.Context, f *runFold, actor string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.State != RunRunning {
		return errStop
	}
	i := 0
	for i < len(f.Steps) && f.done(i) {
		i++
	}
	if i == len(f.Steps) {
		return e.append(ctx, f, Record{Kind: kindRunState, RunState: RunSucceeded, Actor: actor})
	}
	st, s := &f.Spec.Steps[i], &f.Steps[i]
	switch s.State {
	case StepPending:
		if st.when != nil {
			ok, err := st.when.eval(f.scope())
			if err != nil {
				return e.finishFailed(ctx, f, i, actor, err)
			}
			if !ok {
				return e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepSkipped, Actor: actor,
					Note: "condition false: " + st.When})
			}
		}
		if st.Approval != nil {
			return e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepAwaitingApproval, Actor: actor,
				Note: fmt.Sprintf("needs %d approval(s) by %s", st.Approval.Required, strings.Join(st.Approval.Roles, " or "))})
		}
		return e.startAttempt(ctx, f, i, 1, actor, "")
	case StepAwaitingApproval:
		if s.granted(st.Approval) {
			var who []string
			for _, g := range s.Approvals {
				who = append(who, g.Actor)
			}
			return e.startAttempt(ctx, f, i, 1, actor, "approved by "+strings.Join(who, ", "))
		}
		d, err := e.cfg.Policy.Gate(ctx, GateRequest{RunID: f.ID, Playbook: f.Spec.Name, StepID: st.ID, Action: st.Action,
			Required: st.Approval.Required, Roles: st.Approval.Roles, Approvals: s.Approvals})
		if err != nil {
			return fmt.Errorf("playbook: approval policy: %w", err)
		}
		if d.Approve {
			return e.append(ctx, f, Record{Kind: kindApproval, Step: st.ID, Actor: d.Actor, Auto: true, Note: d.Note})
		}
		return e.wait(ctx, f.ID, time.Time{})
	case StepRunning:
		return e.runAttempt(ctx, f, i, actor)
	case StepRetrying:
		if e.cfg.Clock.Now().Before(s.NextAttemptAt) {
			return e.wait(ctx, f.ID, s.NextAttemptAt)
		}
		return e.startAttempt(ctx, f, i, s.Attempt+1, actor, "retry after: "+s.Error)
	case StepFailed, StepUnavailable:
		if s.Rearmed {
			return e.startAttempt(ctx, f, i, s.Attempt+1, actor, "tried again after resume")
		}
		// The driver stopped between journaling the step's end and the run's.
		return e.applyPolicy(ctx, f, i, actor)
	case StepAborted:
		return e.append(ctx, f, Record{Kind: kindRunState, RunState: RunAborted, Actor: actor, Note: s.Note})
	}
	return fmt.Errorf("playbook: run %s step %s: unexpected state %q", f.ID, st.ID, s.State)
}

// startAttempt resolves the step's inputs and journals it as running.
func (e *Engine) startAttempt(ctx context.Context, f *runFold, i, attempt int, actor, note string) error {
	st := &f.Spec.Steps[i]
	with, err := f.scope().expand(st.With)
	if err != nil {
		// An input that comes from a step that is unavailable in this build
		// (or was skipped) makes this step unavailable too, not failed:
		// nothing went wrong, something is missing.
		if dep := missingDependency(f, i, err); dep != "" {
			if aerr := e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepUnavailable, Attempt: attempt, Actor: actor,
				Error: fmt.Sprintf("%v: needs outputs of step %q, which did not run: %v", ErrUnavailable, dep, err)}); aerr != nil {
				return aerr
			}
			return e.applyPolicy(ctx, f, i, actor)
		}
		return e.finishFailed(ctx, f, i, actor, err)
	}
	m, _ := with.(map[string]any)
	inputs, err := roundTrip(m)
	if err != nil {
		return e.finishFailed(ctx, f, i, actor, fmt.Errorf("inputs are not JSON: %w", err))
	}
	return e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepRunning, Attempt: attempt, Actor: actor,
		Inputs: inputs, Note: note})
}

// missingDependency names the earlier unavailable or skipped step whose
// outputs an unresolved reference asked for, or "".
func missingDependency(f *runFold, i int, err error) string {
	if !errors.Is(err, ErrReference) {
		return ""
	}
	for j := 0; j < i; j++ {
		s := f.Steps[j]
		if (s.State == StepUnavailable || s.State == StepSkipped) && strings.Contains(err.Error(), `"`+f.Spec.Steps[j].ID+`"`) {
			return f.Spec.Steps[j].ID
		}
	}
	return ""
}

// Token is the idempotency token of a step in a run.
func Token(runID, stepID string) string { return runID + "/" + stepID }

// runAttempt runs the journaled attempt and journals its outcome.
func (e *Engine) runAttempt(ctx context.Context, f *runFold, i int, actor string) error {
	st, s := &f.Spec.Steps[i], &f.Steps[i]
	a, ok := e.cfg.Actions.Lookup(st.Action)
	if !ok {
		return fmt.Errorf("playbook: action %q is not registered", st.Action)
	}
	timeout := time.Duration(st.Timeout)
	if timeout <= 0 {
		timeout = e.cfg.DefaultTimeout
	}
	call := Call{RunID: f.ID, StepID: st.ID, Token: Token(f.ID, st.ID), Attempt: s.Attempt, Actor: f.Actor,
		With: s.Inputs, Params: f.Params}
	actx, cancel := context.WithCancelCause(ctx)
	e.mu.Lock()
	e.cancels[f.ID] = cancel
	e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		select {
		case <-e.cfg.Clock.After(timeout):
			cancel(ErrTimeout)
		case <-done:
		}
	}()
	out, err := safeRun(actx, a, call)
	close(done)
	cause := context.Cause(actx)
	cancel(nil)
	e.mu.Lock()
	delete(e.cancels, f.ID)
	e.mu.Unlock()

	if ctx.Err() != nil {
		// Shutting down: leave the step journaled as running for Resume.
		return ctx.Err()
	}
	if errors.Is(cause, errAborted) {
		return errReload
	}
	if err == nil {
		outs, jerr := roundTrip(out)
		if jerr == nil {
			return e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepSucceeded, Attempt: s.Attempt,
				Actor: actor, Outputs: outs, OutputsDigest: digest(outs)})
		}
		err = fmt.Errorf("outputs are not JSON: %w", jerr)
	}
	if errors.Is(err, ErrUnavailable) {
		if aerr := e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepUnavailable, Attempt: s.Attempt,
			Actor: actor, Error: err.Error()}); aerr != nil {
			return aerr
		}
		return e.applyPolicy(ctx, f, i, actor)
	}
	if errors.Is(cause, ErrTimeout) && !errors.Is(err, ErrTimeout) {
		err = fmt.Errorf("%w after %s: %w", ErrTimeout, timeout, err)
	}
	if s.Attempt <= st.Retries.Count {
		next := e.cfg.Clock.Now().Add(st.Retries.delay(s.Attempt))
		return e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepRetrying, Attempt: s.Attempt,
			Actor: actor, Error: err.Error(), NextAttemptAt: next})
	}
	return e.finishFailed(ctx, f, i, actor, err)
}

func safeRun(ctx context.Context, a Action, c Call) (out Outputs, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("action panicked: %v", r)
		}
	}()
	return a.Run(ctx, c)
}

// finishFailed journals the step as failed and applies its failure policy.
func (e *Engine) finishFailed(ctx context.Context, f *runFold, i int, actor string, cause error) error {
	st, s := &f.Spec.Steps[i], &f.Steps[i]
	if err := e.append(ctx, f, Record{Kind: kindStep, Step: st.ID, State: StepFailed, Attempt: s.Attempt,
		Actor: actor, Error: cause.Error()}); err != nil {
		return err
	}
	return e.applyPolicy(ctx, f, i, actor)
}

// applyPolicy journals what the run does after step i failed or was unavailable.
func (e *Engine) applyPolicy(ctx context.Context, f *runFold, i int, actor string) error {
	st, s := &f.Spec.Steps[i], &f.Steps[i]
	policy := st.OnFailure
	if s.State == StepUnavailable {
		policy = st.OnUnavailable
	}
	switch policy {
	case PolicyContinue:
		return nil
	case PolicyPause:
		return e.append(ctx, f, Record{Kind: kindRunState, RunState: RunPaused, Actor: actor,
			Note: fmt.Sprintf("step %s %s; waiting for an operator (resume, skip or abort)", st.ID, s.State)})
	default:
		return e.append(ctx, f, Record{Kind: kindRunState, RunState: RunFailed, Actor: actor,
			Note: fmt.Sprintf("step %s %s", st.ID, s.State)})
	}
}

// wait blocks until woken in-process, until (if set), the poll interval, or ctx.
func (e *Engine) wait(ctx context.Context, runID string, until time.Time) error {
	d := e.cfg.PollInterval
	if !until.IsZero() {
		if dd := until.Sub(e.cfg.Clock.Now()); dd < d {
			d = dd
		}
	}
	if d <= 0 {
		return errReload
	}
	e.mu.Lock()
	ch, ok := e.wake[runID]
	if !ok {
		ch = make(chan struct{})
		e.wake[runID] = ch
	}
	e.mu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-ch:
	case <-e.cfg.Clock.After(d):
	}
	return errReload
}

func (e *Engine) wakeRun(runID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch, ok := e.wake[runID]; ok {
		close(ch)
		delete(e.wake, runID)
	}
}

func (e *Engine) load(ctx context.Context, runID string, actions ActionSet) (*runFold, error) {
	raw, err := e.cfg.Store.Journal(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("playbook: read journal of %s: %w", runID, err)
	}
	return fold(runID, raw, actions)
}

// append journals r as the run's next record (with its audit event), then
// applies it to f and tells the observer. A concurrent writer makes it
// return errReload and leaves f unchanged.
func (e *Engine) append(ctx context.Context, f *runFold, r Record) error {
	r.Seq, r.RunID, r.Time = f.n, f.ID, e.cfg.Clock.Now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("playbook: encode journal record: %w", err)
	}
	ev, err := e.auditEvent(f, &r)
	if err != nil {
		return err
	}
	if err := e.cfg.Store.AppendJournal(ctx, f.ID, r.Seq, b, ev); err != nil {
		if errors.Is(err, store.ErrExists) {
			return errReload
		}
		return fmt.Errorf("playbook: journal %s: %w", f.ID, err)
	}
	if err := f.apply(&r, nil); err != nil {
		return fmt.Errorf("playbook: apply journal record: %w", err)
	}
	e.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "playbook transition", slog.String("run", f.ID),
		slog.String("kind", r.Kind), slog.String("step", r.Step), slog.String("state", string(r.State)),
		slog.String("run_state", string(r.RunState)), slog.String("actor", r.Actor))
	if e.cfg.Observer != nil {
		e.cfg.Observer(newEvent(f, &r))
	}
	return nil
}

func (e *Engine) auditEvent(f *runFold, r *Record) (store.AuditEvent, error) {
	details := map[string]any{"run": f.ID, "seq": r.Seq, "kind": r.Kind}
	subject := "playbook-run/" + f.ID
	if r.Kind == kindStarted {
		details["source_digest"] = digest(string(r.Source))
		details["params"] = r.Params
		if spec, err := Parse(r.Source, nil); err == nil {
			details["playbook"] = spec.Name
		}
	} else {
		details["playbook"] = f.Spec.Name
	}
	if r.Step != "" {
		subject += "/" + r.Step
		details["step"] = r.Step
		if i := f.Spec.stepIndex(r.Step); i >= 0 {
			details["action"] = f.Spec.Steps[i].Action
		}
	}
	for k, v := range map[string]any{"run_state": string(r.RunState), "state": string(r.State),
		"error": r.Error, "note": r.Note, "outputs_digest": r.OutputsDigest} {
		if v != "" {
			details[k] = v
		}
	}
	if r.Attempt > 0 {
		details["attempt"] = r.Attempt
	}
	if r.Inputs != nil {
		details["inputs"] = r.Inputs
	}
	if len(r.Roles) > 0 {
		details["roles"] = r.Roles
	}
	if r.Auto {
		details["auto"] = true
	}
	return auditlog.Event{Type: r.auditType(), Time: r.Time, Actor: r.Actor, Release: e.cfg.Release,
		Instance: e.cfg.Instance, Subject: subject, Details: details}.Record()
}
