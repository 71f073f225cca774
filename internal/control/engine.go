package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/countersign/countersign/internal/playbook"
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
		}})
	if err != nil {
		return err
	}
	w.engine = e
	return nil
}

// Spec returns the default rollback playbook bound to this world's actions.
func (w *World) Spec() (*playbook.Spec, error) { return playbook.Default(w.actions) }

// Params builds the rollback parameters for an incident.
func (w *World) params(inc Incident) map[string]string {
	p := map[string]string{"regressive_release": inc.Release, "incident": inc.ID}
	for k, v := range w.cfg.Params {
		p[k] = v
	}
	return p
}

// StartPlaybook starts the rollback playbook for an incident in the
// background and returns its run id. A second start for the same incident
// returns the first run.
func (w *World) StartPlaybook(ctx context.Context, incidentID, actor string) (string, error) {
	inc, ok := w.incidents.get(incidentID)
	if !ok {
		return "", fmt.Errorf("control: no incident %s", incidentID)
	}
	w.mu.Lock()
	if id, ok := w.runs[incidentID]; ok {
		w.mu.Unlock()
		return id, nil
	}
	runID := playbook.NewRunID(w.now())
	w.runs[incidentID] = runID
	w.mu.Unlock()
	spec, err := w.Spec()
	if err != nil {
		return "", err
	}
	w.incidents.update(ctx, inc.ID, "incident.playbook_started", map[string]any{"run": runID, "playbook": spec.Name},
		func(i *Incident) { i.RunID = runID })
	w.goRun("playbook "+runID, func(ctx context.Context) error {
		st, err := w.engine.Run(ctx, spec, playbook.RunOptions{RunID: runID, Params: w.params(inc), Actor: actor})
		w.log.Info("playbook run returned", "run", runID, "state", st.State, "err", err)
		return err
	})
	return runID, nil
}

// PlanPlaybook is the dry run of the rollback playbook for an incident.
func (w *World) PlanPlaybook(ctx context.Context, incidentID string) (playbook.PlanReport, error) {
	inc, ok := w.incidents.get(incidentID)
	if !ok {
		return playbook.PlanReport{}, fmt.Errorf("control: no incident %s", incidentID)
	}
	spec, err := w.Spec()
	if err != nil {
		return playbook.PlanReport{}, err
	}
	return w.engine.Plan(ctx, spec, w.params(inc))
}

// Engine exposes the playbook engine (status, approve, abort, resume).
func (w *World) Engine() *playbook.Engine { return w.engine }

// RunFor returns the playbook run id of an incident.
func (w *World) RunFor(incidentID string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok := w.runs[incidentID]
	return id, ok
}

// OpenIncident opens an incident by hand (the CLI's `incident open`).
func (w *World) OpenIncident(ctx context.Context, classification, release, summary string) (Incident, error) {
	if classification == "" {
		classification = "corruption"
	}
	if summary == "" {
		summary = "opened by " + os.Getenv("USER")
	}
	return w.incidents.open(ctx, classification, release, "", summary, nil, nil)
}
