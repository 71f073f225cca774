package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/probe"
	"github.com/countersign/countersign/internal/store"
)

func (w *World) startEngine() error {
	js, ok := w.inst.Store.(playbook.JournalStore)
	if !ok {
		return errors.New("control: this store cannot journal playbook runs (needs schema 2)")
	}
	w.actions = playbook.NewRegistry()
	if err := w.registerActions(w.actions); err != nil {
		return err
	}
	var policy playbook.ApprovalPolicy = playbook.HumanApproval{}
	if w.cfg.Drill {
		policy = playbook.DrillApproval{}
	}
	e, err := playbook.New(playbook.Config{Store: js, Actions: w.actions, Policy: policy, PollInterval: 500 * time.Millisecond,
		Release: "control", Instance: w.rec.instance, Logger: w.log,
		Observer: func(ev playbook.Event) {
			d := map[string]any{"run": ev.RunID, "state": ev.State, "run_state": ev.RunState, "index": ev.Index, "total": ev.Total}
			w.rec.note(TimelineEntry{Time: ev.Time, Kind: "playbook." + ev.Kind, Subject: ev.Step, Details: d})
			w.crash.observe(ev)
		}})
	if err != nil {
		return err
	}
	w.engine = e
	return nil
}

// ActorRestart is the actor of what a control process does on start to pick
// up where a previous one stopped (resumed runs, the restored gate).
const ActorRestart = "control-restart"

// ErrDriving is returned by ResumeRun for a run this process is driving.
var ErrDriving = errors.New("control: the run is being driven by this control process")

// Spec returns the default rollback playbook bound to this world's actions.
func (w *World) Spec() (*playbook.Spec, error) { return playbook.Default(w.actions) }

// params builds the rollback parameters for an incident: the incident and
// its release, the world's Params, then the run's own overrides.
func (w *World) params(inc Incident, overrides map[string]string) map[string]string {
	p := map[string]string{"regressive_release": inc.Release, "incident": inc.ID}
	for k, v := range w.cfg.Params {
		p[k] = v
	}
	for k, v := range overrides {
		p[k] = v
	}
	return p
}

// drive runs f for runID in the background unless this process already
// drives the run; it reports whether it started.
func (w *World) drive(runID, what string, f func(ctx context.Context) (playbook.Status, error)) bool {
	w.mu.Lock()
	if w.driving[runID] {
		w.mu.Unlock()
		return false
	}
	w.driving[runID] = true
	w.mu.Unlock()
	w.goRun("playbook "+runID, func(ctx context.Context) error {
		defer func() {
			w.mu.Lock()
			delete(w.driving, runID)
			w.mu.Unlock()
		}()
		st, err := f(ctx)
		w.log.Info("playbook "+what+" returned", "run", runID, "state", st.State, "err", err)
		return err
	})
	return true
}

// StartPlaybook starts the rollback playbook for an incident in the
// background and returns its run id. params override the playbook's
// parameters (e.g. stable_release). While the incident's run has not
// failed or been aborted, a second start returns that run.
func (w *World) StartPlaybook(ctx context.Context, incidentID, actor string, params map[string]string) (string, error) {
	w.startMu.Lock()
	defer w.startMu.Unlock()
	inc, err := w.incidents.get(ctx, incidentID)
	if err != nil {
		return "", err
	}
	if inc.RunID != "" {
		st, err := w.engine.Status(ctx, inc.RunID)
		if err != nil || (st.State != playbook.RunFailed && st.State != playbook.RunAborted) {
			return inc.RunID, nil
		}
	}
	if inc.State == IncidentClosed {
		return "", fmt.Errorf("control: incident %s is closed", inc.ID)
	}
	spec, err := w.Spec()
	if err != nil {
		return "", err
	}
	p := w.params(inc, params)
	runID := playbook.NewRunID(w.now())
	// The incident names its run before the run's first journal record:
	// a control process that dies in between starts the run on restart.
	if _, err := w.incidents.update(ctx, inc.ID, "incident.playbook_started",
		map[string]any{"run": runID, "playbook": spec.Name, "params": p},
		func(i *Incident) { i.RunID, i.runParams = runID, p }); err != nil {
		return "", err
	}
	w.startRun(spec, runID, p, actor)
	// Answer once the run's first record is journaled, so its status can
	// be read at once.
	for range 500 {
		if _, err := w.engine.Status(ctx, runID); !errors.Is(err, store.ErrNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			return runID, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return runID, nil
}

func (w *World) startRun(spec *playbook.Spec, runID string, params map[string]string, actor string) {
	w.drive(runID, "run", func(ctx context.Context) (playbook.Status, error) {
		return w.engine.Run(ctx, spec, playbook.RunOptions{RunID: runID, Params: params, Actor: actor})
	})
}

// recoverRuns continues what a previous control process left: every run
// journaled as running is resumed (actor ActorRestart), and a run an
// incident names but that never journaled its start is started. Paused
// runs stay paused for an operator.
func (w *World) recoverRuns(ctx context.Context) error {
	runs, err := w.engine.Runs(ctx)
	if err != nil {
		return fmt.Errorf("control: recover playbook runs: %w", err)
	}
	for _, st := range runs {
		if st.State != playbook.RunRunning {
			continue
		}
		id := st.RunID
		w.log.Warn("resuming playbook run left running by a previous control process", "run", id)
		w.drive(id, "resume", func(ctx context.Context) (playbook.Status, error) {
			return w.engine.Resume(ctx, id, ActorRestart)
		})
	}
	incs, err := w.incidents.list(ctx)
	if err != nil {
		return err
	}
	for _, inc := range incs {
		if inc.RunID == "" || inc.State == IncidentClosed {
			continue
		}
		if _, err := w.engine.Status(ctx, inc.RunID); !errors.Is(err, store.ErrNotFound) {
			continue
		}
		spec, err := w.Spec()
		if err != nil {
			return err
		}
		w.log.Warn("starting the playbook run an incident names but that never started", "incident", inc.ID, "run", inc.RunID)
		w.startRun(spec, inc.RunID, inc.runParams, ActorRestart)
	}
	return nil
}

// ResumeRun resumes a paused run (or one whose driver died) in the
// background. ErrDriving if this process drives it already.
func (w *World) ResumeRun(ctx context.Context, runID, actor string) error {
	if _, err := w.engine.Status(ctx, runID); err != nil {
		return err
	}
	if !w.drive(runID, "resume", func(ctx context.Context) (playbook.Status, error) {
		return w.engine.Resume(ctx, runID, actor)
	}) {
		return fmt.Errorf("%w: %s (approve, abort or wait)", ErrDriving, runID)
	}
	return nil
}

// PlanPlaybook is the dry run of the rollback playbook for an incident.
func (w *World) PlanPlaybook(ctx context.Context, incidentID string, params map[string]string) (playbook.PlanReport, error) {
	inc, err := w.incidents.get(ctx, incidentID)
	if err != nil {
		return playbook.PlanReport{}, err
	}
	spec, err := w.Spec()
	if err != nil {
		return playbook.PlanReport{}, err
	}
	return w.engine.Plan(ctx, spec, w.params(inc, params))
}

// Engine exposes the playbook engine (status, approve, abort, resume).
func (w *World) Engine() *playbook.Engine { return w.engine }

// RunFor returns the playbook run id of an incident.
func (w *World) RunFor(incidentID string) (string, bool) {
	inc, err := w.incidents.get(w.runCtx, incidentID)
	if err != nil || inc.RunID == "" {
		return "", false
	}
	return inc.RunID, true
}

// Incident returns one incident with its run's state.
func (w *World) Incident(ctx context.Context, id string) (Incident, error) {
	inc, err := w.incidents.get(ctx, id)
	if err != nil {
		return Incident{}, err
	}
	w.withRunState(ctx, &inc)
	return inc, nil
}

// ListIncidents lists incidents, oldest first, with their runs' states.
func (w *World) ListIncidents(ctx context.Context) ([]Incident, error) {
	incs, err := w.incidents.list(ctx)
	for i := range incs {
		w.withRunState(ctx, &incs[i])
	}
	return incs, err
}

func (w *World) withRunState(ctx context.Context, inc *Incident) {
	if inc.RunID == "" {
		return
	}
	if st, err := w.engine.Status(ctx, inc.RunID); err == nil {
		inc.RunState = string(st.State)
	}
}

// OpenIncident opens an incident by hand (the CLI's `incident open`).
func (w *World) OpenIncident(ctx context.Context, classification, release, summary string) (Incident, error) {
	if release == "" {
		return Incident{}, errors.New("control: an incident needs the suspected release")
	}
	if classification == "" {
		classification = string(probe.Corruption)
	}
	if summary == "" {
		summary = "opened by " + gateway.ActorFrom(ctx)
	}
	return w.incidents.open(ctx, classification, release, "", summary, nil, nil)
}
