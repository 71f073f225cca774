package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/queue/queueurl"
	"github.com/countersign/countersign/internal/reconcile"
)

// replayNote says how the replay step replays: through the queue, to the
// stable pool's workers, not by a worker of its own.
const replayNote = "in-flight jobs re-published to the work queue and signed by the stable pool's workers " +
	"(idempotent per job and idempotency key); not quarantined first, since quarantine deletes the queued copy " +
	"and the broker drops a re-publish of the same message ID within its de-duplication window"

// inFlight counts accepted-but-unfinished jobs accepted up to now.
func (w *World) inFlight(ctx context.Context) (int, error) {
	f, err := reconcile.FindInFlight(ctx, w.inst.Store, reconcile.Window{To: w.now().UTC().Add(time.Nanosecond)}, true)
	if err != nil {
		return 0, err
	}
	return len(f.Replay) + len(f.ManualReview), nil
}

func windowStart(c playbook.Call) (time.Time, error) {
	s := str(c, "window_start")
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("control: window_start %q: %w", s, err)
	}
	return t, nil
}

// --- 9. replay

func (w *World) planReplay(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	n, err := w.inFlight(ctx)
	if err != nil {
		return playbook.Plan{}, err
	}
	return playbook.Plan{Changes: []playbook.Change{{Target: "queue:" + queueurl.Redact(w.QueueURL()), To: fmt.Sprintf("%d jobs re-published", n),
		Detail: "at " + replayRateOf(c) + "/s; ambiguous jobs go to manual review"}}, Notes: []string{replayNote}}, nil
}

func replayRateOf(c playbook.Call) string {
	if r := str(c, "rate"); r != "" {
		return r
	}
	return fmt.Sprint(reconcile.DefaultReplayRate)
}

func (w *World) runReplay(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	dir, err := w.incidentDir(inc.ID)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ReplayFile)
	var rep reconcile.ReplayReport
	ok, err := readJSON(path, &rep)
	if err != nil {
		return nil, err
	}
	if !ok {
		rate, err := strconv.ParseFloat(replayRateOf(c), 64)
		if err != nil || rate <= 0 {
			return nil, fmt.Errorf("control: replay rate %q: must be a number > 0", str(c, "rate"))
		}
		if err := w.rec.Record(actorCtx(ctx, c), "reconcile.replay_started", "incident/"+inc.ID,
			map[string]any{"rate": rate, "queue": queueurl.Redact(w.QueueURL())}); err != nil {
			return nil, err
		}
		r, err := reconcile.Replay(ctx, reconcile.ReplayConfig{Jobs: w.inst.Store, IncludeOlder: true, Rate: rate, Logger: w.log,
			Processor: republisher{q: w.queue.q, jobs: w.inst.Store, every: 2 * time.Second, timeout: 2 * time.Minute},
			Window:    reconcile.Window{To: w.now().UTC().Add(time.Nanosecond)}})
		if err != nil {
			return nil, err
		}
		if len(r.Failed) > 0 {
			// Retried by the engine; a later run replays what is left.
			return nil, fmt.Errorf("control: %d of %d replays did not finish, e.g. %s: %s", len(r.Failed), len(r.Found.Replay),
				r.Failed[0].MessageID, r.Failed[0].Error)
		}
		if err := writeJSONAtomic(path, r); err != nil {
			return nil, err
		}
		if err := w.rec.Record(actorCtx(ctx, c), "reconcile.replayed", "incident/"+inc.ID,
			map[string]any{"replayed": len(r.Replayed), "manual_review": len(r.Found.ManualReview), "outcome": r.Outcome}); err != nil {
			return nil, err
		}
		rep = *r
	}
	return playbook.Outputs{"replayed": len(rep.Replayed), "duplicates": w.duplicateKeys(ctx, rep), "manual_review": len(rep.Found.ManualReview),
		"report": path, "note": replayNote}, nil
}

// duplicateKeys counts the replayed jobs whose idempotency key holds a
// signature other than the one their job records (a second artifact).
func (w *World) duplicateKeys(ctx context.Context, rep reconcile.ReplayReport) int {
	n := 0
	for _, it := range rep.Found.Replay {
		j, err := w.inst.Store.JobByIdempotencyKey(ctx, it.TenantID, it.IdempotencyKey)
		if err != nil || j.SignatureID == "" {
			continue
		}
		s, err := w.inst.Store.SignatureByIdempotencyKey(ctx, it.TenantID, it.IdempotencyKey)
		if err == nil && s.ID != j.SignatureID {
			n++
		}
	}
	return n
}

// --- 10. reconcile

func (w *World) planReconcile(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	return playbook.Plan{Notes: []string{"proves the audit log consistent from the checkpoint before " + str(c, "window_start") +
			" to the latest, counts events and gaps, re-verifies every signature of " + str(c, "release") +
			" and every signature made in the window; writes the report under " + filepath.Join(w.cfg.Dir, IncidentsDir) + "; changes nothing else"}},
		nil
}

func (w *World) runReconcile(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	dir, err := w.incidentDir(inc.ID)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ReportFile)
	var rep reconcile.Report
	ok, err := readJSON(path, &rep)
	if err != nil {
		return nil, err
	}
	if !ok {
		r, err := w.reconcileReport(ctx, c, inc, dir)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(filepath.Join(dir, ReportMarkdownFile), r.Markdown(), 0o640); err != nil {
			return nil, err
		}
		js, err := r.JSON()
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(path, js, 0o640); err != nil {
			return nil, err
		}
		s := r.Summary()
		if err := w.rec.Record(actorCtx(ctx, c), "reconcile.reported", "incident/"+inc.ID, map[string]any{
			"report": path, "signatures": s.Signatures, "classes": s.Classes, "log_consistent": s.LogConsistent,
			"checkpoint_before": s.CheckpointBefore, "checkpoint_after": s.CheckpointAfter, "gaps": s.Gaps}); err != nil {
			return nil, err
		}
		rep = *r
	}
	if rep.Audit != nil && !rep.Audit.Consistent {
		return nil, fmt.Errorf("reconcile: the audit log is not consistent with the checkpoint before the window (report %s)", path)
	}
	return reconcileOutputs(&rep, path), nil
}

// reconcileReport runs reconcile.Run for the incident's window.
func (w *World) reconcileReport(ctx context.Context, c playbook.Call, inc Incident, dir string) (*reconcile.Report, error) {
	from, err := windowStart(c)
	if err != nil {
		return nil, err
	}
	rel := str(c, "release")
	if rel == "" {
		rel = inc.Release
	}
	before, err := reconcile.CheckpointBefore(w.inst.HistoryPath(), from)
	if errors.Is(err, reconcile.ErrNoCheckpointBefore) {
		before = nil // nothing was signed before the window: prove from the empty tree
	} else if err != nil {
		return nil, err
	}
	var replay *reconcile.ReplayReport
	var rr reconcile.ReplayReport
	if ok, err := readJSON(filepath.Join(dir, ReplayFile), &rr); err != nil {
		return nil, err
	} else if ok {
		replay = &rr
	}
	return reconcile.Run(ctx, reconcile.Config{Store: w.inst.Store, VerifierKey: w.inst.Config.LogVerifierKey, Before: before,
		Window: reconcile.Window{From: from, To: w.now().UTC(), Releases: []string{rel}}, Incident: inc.ID, Replay: replay, Now: w.now})
}

// Affected is the customer impact of a reconciliation report: tenants
// (the probe tenant excluded: its signatures are ours) with signatures
// that are invalid or metadata-drift, and whether any of them is legally
// binding. No per-document legal flag is stored, so every invalid or
// drifted CMS signature — the format of contracts and qualified
// signatures — is taken as legally binding.
type Affected struct {
	Tenants        []string
	Documents      map[string]int
	LegallyBinding map[string]int
}

func affected(rep *reconcile.Report) Affected {
	a := Affected{Tenants: []string{}, Documents: map[string]int{}, LegallyBinding: map[string]int{}}
	if rep.Signatures == nil {
		return a
	}
	for _, t := range rep.Signatures.Remediation {
		if t.TenantID == ProbeTenant {
			continue
		}
		for _, d := range t.Documents {
			if !needsRemedy(d) {
				continue
			}
			a.Documents[t.TenantID]++
			if legallyBinding(d) {
				a.LegallyBinding[t.TenantID]++
			}
		}
		if a.Documents[t.TenantID] > 0 {
			a.Tenants = append(a.Tenants, t.TenantID)
		}
	}
	slices.Sort(a.Tenants)
	return a
}

func needsRemedy(d reconcile.Verdict) bool {
	return d.Class == reconcile.ClassInvalid || d.Class == reconcile.ClassDrift
}

func legallyBinding(d reconcile.Verdict) bool {
	return needsRemedy(d) && d.Format == string(api.FormatCMS)
}

// Any reports whether any affected signature is legally binding.
func (a Affected) Any() bool {
	for _, n := range a.LegallyBinding {
		if n > 0 {
			return true
		}
	}
	return false
}

func reconcileOutputs(rep *reconcile.Report, path string) playbook.Outputs {
	s := rep.Summary()
	a := affected(rep)
	counts := map[string]any{}
	for k, v := range s.Classes {
		counts[k] = v
	}
	out := playbook.Outputs{
		"report": path, "report_markdown": filepath.Join(filepath.Dir(path), ReportMarkdownFile),
		"affected_tenants": a.Tenants, "legally_binding_affected": a.Any(), "counts": counts,
		"signatures": s.Signatures, "valid": s.Classes[string(reconcile.ClassValid)], "invalid": s.Classes[string(reconcile.ClassInvalid)],
		"metadata_drift": s.Classes[string(reconcile.ClassDrift)], "unverifiable": s.Classes[string(reconcile.ClassUnverifiable)],
		"replayed": s.Replayed, "manual_review": s.ManualReview, "log_consistent": s.LogConsistent,
		"checkpoint_before": s.CheckpointBefore, "checkpoint_after": s.CheckpointAfter, "gaps": s.Gaps,
	}
	return out
}

// loadReport reads the reconciliation report a step's "report" parameter
// names (the reconcile step's output), or the incident's.
func (w *World) loadReport(c playbook.Call, incident string) (*reconcile.Report, string, error) {
	path := str(c, "report")
	if path == "" {
		path = filepath.Join(IncidentDir(w.cfg.Dir, incident), ReportFile)
	}
	var rep reconcile.Report
	ok, err := readJSON(path, &rep)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", fmt.Errorf("control: no reconciliation report at %s: %w", path, os.ErrNotExist)
	}
	return &rep, path, nil
}
