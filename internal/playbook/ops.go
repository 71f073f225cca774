package playbook

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Approver is a person approving a gate, with the roles the caller has
// authenticated them to hold.
type Approver struct {
	Name  string
	Roles []string
}

// Approve records an approval of a step awaiting approval. The approver must
// hold one of the step's roles and not have approved it already; the gate
// opens when Approval.Required distinct approvers have approved. The driver
// of the run (in this process, or polling in another) then runs the step.
func (e *Engine) Approve(ctx context.Context, runID, stepID string, who Approver) error {
	if who.Name == "" {
		return errors.New("playbook: approver name is required")
	}
	return e.operate(ctx, runID, func(f *runFold) (*Record, error) {
		i := f.Spec.stepIndex(stepID)
		if i < 0 {
			return nil, fmt.Errorf("%w %q in run %s", ErrUnknownStep, stepID, runID)
		}
		st, s := &f.Spec.Steps[i], &f.Steps[i]
		if s.State != StepAwaitingApproval {
			return nil, fmt.Errorf("%w: approve %s: step is %s", ErrWrongState, stepID, s.State)
		}
		var held []string
		for _, r := range who.Roles {
			if slices.Contains(st.Approval.Roles, r) {
				held = append(held, r)
			}
		}
		if len(held) == 0 {
			return nil, fmt.Errorf("%w: %s needs one of %v, %s has %v", ErrForbidden, stepID, st.Approval.Roles, who.Name, who.Roles)
		}
		for _, g := range s.Approvals {
			if g.Actor == who.Name {
				return nil, fmt.Errorf("%w: %s by %s", ErrDuplicate, stepID, who.Name)
			}
		}
		return &Record{Kind: kindApproval, Step: stepID, Actor: who.Name, Roles: held}, nil
	})
}

// Abort ends a run: the step in progress is journaled as aborted (its action
// is cancelled if it runs in this process), then the run.
func (e *Engine) Abort(ctx context.Context, runID, actor, reason string) error {
	note := "aborted by " + actor
	if reason != "" {
		note += ": " + reason
	}
	err := e.operate(ctx, runID, func(f *runFold) (*Record, error) {
		for i, s := range f.Steps {
			switch s.State {
			case StepRunning, StepRetrying, StepAwaitingApproval:
				return &Record{Kind: kindStep, Step: f.Spec.Steps[i].ID, State: StepAborted, Attempt: s.Attempt,
					Actor: actor, Note: note}, nil
			}
		}
		return &Record{Kind: kindRunState, RunState: RunAborted, Actor: actor, Note: note}, nil
	})
	if err != nil {
		return err
	}
	e.mu.Lock()
	if c, ok := e.cancels[runID]; ok {
		c(errAborted)
	}
	e.mu.Unlock()
	// If a step was aborted, journal the run's end too (a driver would do
	// it on its next move; an idle paused run has none).
	err = e.operate(ctx, runID, func(f *runFold) (*Record, error) {
		return &Record{Kind: kindRunState, RunState: RunAborted, Actor: actor, Note: note}, nil
	})
	if errors.Is(err, ErrFinished) {
		err = nil
	}
	return err
}

// Skip marks a failed or unavailable step of a paused run as skipped, so
// that Resume goes on with the next step. The reason is journaled.
func (e *Engine) Skip(ctx context.Context, runID, stepID, actor, reason string) error {
	return e.operate(ctx, runID, func(f *runFold) (*Record, error) {
		i := f.Spec.stepIndex(stepID)
		if i < 0 {
			return nil, fmt.Errorf("%w %q in run %s", ErrUnknownStep, stepID, runID)
		}
		s := &f.Steps[i]
		if f.State != RunPaused || (s.State != StepFailed && s.State != StepUnavailable) {
			return nil, fmt.Errorf("%w: skip %s: run is %s, step is %s (want a paused run and a failed or unavailable step)",
				ErrWrongState, stepID, f.State, s.State)
		}
		return &Record{Kind: kindStep, Step: stepID, State: StepSkipped, Attempt: s.Attempt, Actor: actor,
			Error: s.Error, Note: fmt.Sprintf("skipped by %s after %s: %s", actor, s.State, reason)}, nil
	})
}

// operate appends the record build returns, re-reading the journal and
// deciding again if another writer got there first, then wakes the driver.
func (e *Engine) operate(ctx context.Context, runID string, build func(*runFold) (*Record, error)) error {
	for range 10 {
		f, err := e.load(ctx, runID, nil)
		if err != nil {
			return err
		}
		if f.State.Terminal() {
			return fmt.Errorf("%w: run %s is %s", ErrFinished, runID, f.State)
		}
		r, err := build(f)
		if err != nil {
			return err
		}
		err = e.append(ctx, f, *r)
		if errors.Is(err, errReload) {
			continue
		}
		if err != nil {
			return err
		}
		e.wakeRun(runID)
		return nil
	}
	return fmt.Errorf("playbook: run %s: journal keeps changing", runID)
}

// Status reads a run's state from its journal.
func (e *Engine) Status(ctx context.Context, runID string) (Status, error) {
	f, err := e.load(ctx, runID, nil)
	if err != nil {
		return Status{}, err
	}
	return e.status(f), nil
}

// Runs lists every run's status, oldest first.
func (e *Engine) Runs(ctx context.Context) ([]Status, error) {
	ids, err := e.cfg.Store.Runs(ctx)
	if err != nil {
		return nil, fmt.Errorf("playbook: list runs: %w", err)
	}
	out := make([]Status, 0, len(ids))
	for _, id := range ids {
		st, err := e.Status(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// StepPlan is one step of a dry run.
type StepPlan struct {
	ID       string         `json:"id"`
	Action   string         `json:"action"`
	With     map[string]any `json:"with,omitempty"`
	When     string         `json:"when,omitempty"`
	Approval *Approval      `json:"approval,omitempty"`
	Plan     Plan           `json:"plan"`
	// Unavailable is set when the action cannot run in this build.
	Unavailable bool   `json:"unavailable,omitempty"`
	Error       string `json:"error,omitempty"`
}

// PlanReport is what a run of the playbook would change.
type PlanReport struct {
	Playbook string            `json:"playbook"`
	Params   map[string]string `json:"params"`
	Steps    []StepPlan        `json:"steps"`
}

// Plan asks every step's action what it would change, touching nothing: no
// journal record, no action Run. Outputs of earlier steps are unknown and
// appear as "<steps.ID.outputs.KEY>" in With.
func (e *Engine) Plan(ctx context.Context, spec *Spec, params map[string]string) (PlanReport, error) {
	p, err := spec.resolveParams(params)
	if err != nil {
		return PlanReport{}, err
	}
	rep := PlanReport{Playbook: spec.Name, Params: p}
	sc := &scope{runID: "plan", params: p, deferred: true}
	for _, st := range spec.Steps {
		sp := StepPlan{ID: st.ID, Action: st.Action, When: st.When, Approval: st.Approval}
		with, err := sc.expand(st.With)
		if m, ok := with.(map[string]any); ok {
			sp.With = m
		}
		a, ok := e.cfg.Actions.Lookup(st.Action)
		switch {
		case err != nil:
			sp.Error = err.Error()
		case !ok:
			sp.Error = fmt.Sprintf("action %q is not registered", st.Action)
		default:
			pl, perr := a.Plan(ctx, Call{RunID: "plan", StepID: st.ID, Token: Token("plan", st.ID), With: sp.With, Params: p})
			sp.Plan = pl
			if perr != nil {
				sp.Unavailable = errors.Is(perr, ErrUnavailable)
				sp.Error = perr.Error()
			}
		}
		rep.Steps = append(rep.Steps, sp)
	}
	return rep, nil
}
