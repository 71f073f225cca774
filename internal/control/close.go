package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/internal/evidence"
	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/store"
)

// --- 11. notify

func (w *World) planNotify(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	pl := playbook.Plan{Notes: []string{"phase B: one notice per affected tenant; phase C to regulators if legally binding signatures are affected; " +
		"each signed off with the step's approval on its exact digest"}}
	pl.Changes = append(pl.Changes, playbook.Change{Target: "notify:" + ChannelFile, To: filepath.Join(w.cfg.Dir, IncidentsDir, str(c, "incident"), NoticesDir)})
	if w.cfg.NotifyWebhook != "" {
		pl.Changes = append(pl.Changes, playbook.Change{Target: "notify:" + ChannelWebhook, To: w.cfg.NotifyWebhook})
	}
	return pl, nil
}

func (w *World) runNotify(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	dir, err := w.incidentDir(inc.ID)
	if err != nil {
		return nil, err
	}
	rep, reportPath, err := w.loadReport(c, inc.ID)
	if err != nil {
		return nil, err
	}
	approve, err := w.stepApproval(ctx, c)
	if err != nil {
		return nil, err
	}
	a := affected(rep)
	in := w.noticeInput(ctx, inc, c.RunID, rep, reportPath, notify.Evidence{Bundle: filepath.Join(dir, BundleFile)})
	// The promise of the next update is anchored to the restore, not to
	// the clock, so a re-run renders the same text.
	base := inc.RestoredAt
	if base.IsZero() {
		base = inc.DetectedAt
	}
	actx := actorCtx(ctx, c)
	var recs []NoticeRecord
	var errs []error
	for _, t := range a.Tenants {
		r, err := w.sendNotice(actx, dir, in, notify.RenderOptions{Phase: notify.PhaseCustomer, Tenant: t, Revision: 1,
			NextUpdateAt: base.Add(notify.PhaseCustomer.DefaultNextUpdate())}, approve)
		recs = append(recs, r)
		errs = append(errs, err)
	}
	if a.Any() {
		r, err := w.sendNotice(actx, dir, in, notify.RenderOptions{Phase: notify.PhaseRegulator, Revision: 1,
			NextUpdateAt: base.Add(notify.PhaseRegulator.DefaultNextUpdate())}, approve)
		recs = append(recs, r)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	out := playbook.Outputs{"notices": noticeOutputs(recs), "tenants": len(a.Tenants), "regulators": a.Any()}
	if len(recs) == 0 {
		out["note"] = "no customer tenant has an invalid or drifted signature: no phase B or C notice is due"
	}
	return out, nil
}

// --- 12. close

// BundleRecord is <incident dir>/evidence.json: the bundle's digests and
// the audit event that anchors its statement.
type BundleRecord struct {
	Bundle          string `json:"bundle"`
	SHA256          string `json:"sha256"`
	StatementSHA256 string `json:"statement_sha256"`
	LeadKeyID       string `json:"lead_key_id"`
	AnchorIndex     int64  `json:"anchor_index"`
}

func (w *World) planClose(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	dir := IncidentDir(w.cfg.Dir, str(c, "incident"))
	return playbook.Plan{Changes: []playbook.Change{
		{Target: "file:" + filepath.Join(dir, BundleFile), To: "evidence bundle signed by " + LeadKeyLabel + ", anchored in the audit log, verified"},
		{Target: "file:" + filepath.Join(dir, PostmortemFile), To: "postmortem draft"},
		{Target: "incident", To: IncidentClosed, Detail: "phase D remediation notice per affected tenant"},
	}}, nil
}

func (w *World) runClose(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	dir, err := w.incidentDir(inc.ID)
	if err != nil {
		return nil, err
	}
	rep, reportPath, err := w.loadReport(c, inc.ID)
	if err != nil {
		return nil, err
	}
	actx := actorCtx(ctx, c)
	br, err := w.bundle(actx, c, inc, rep, dir)
	if err != nil {
		return nil, err
	}
	pub, err := LeadPublicKey(w.cfg.Dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(br.Bundle)
	if err != nil {
		return nil, err
	}
	v, err := evidence.Verify(ctx, f, pub)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("close: the evidence bundle does not verify: %w", err)
	}
	if v.StatementSHA256 != br.StatementSHA256 {
		return nil, fmt.Errorf("close: bundle statement %s is not the anchored %s", v.StatementSHA256, br.StatementSHA256)
	}
	now := w.now().UTC()
	closed := inc
	if closed.ClosedAt.IsZero() {
		closed.ClosedAt, closed.State = now, IncidentClosed
	}
	ev := notify.Evidence{Bundle: br.Bundle, Digest: "sha256:" + br.SHA256}
	if rep.Audit != nil {
		ev.Checkpoint = rep.Audit.After.Note
	}
	in := w.noticeInput(ctx, closed, c.RunID, rep, reportPath, ev)
	tpl, err := notify.DefaultTemplates()
	if err != nil {
		return nil, err
	}
	pmPath := filepath.Join(dir, PostmortemFile)
	if _, err := os.Stat(pmPath); errors.Is(err, fs.ErrNotExist) {
		pm, err := tpl.Postmortem(in)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(pmPath, []byte(pm), 0o640); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	var recs []NoticeRecord
	var errs []error
	for _, t := range affected(rep).Tenants {
		r, err := w.sendNotice(actx, dir, in, notify.RenderOptions{Phase: notify.PhaseRemediation, Tenant: t, Revision: 1}, nil)
		recs = append(recs, r)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("close: phase D: %w", err)
	}
	if inc.State != IncidentClosed {
		if _, err := w.incidents.update(actx, inc.ID, "incident.closed", map[string]any{"closed_at": now.Format(time.RFC3339Nano),
			"evidence_bundle_sha256": br.SHA256, "statement_sha256": br.StatementSHA256, "postmortem": pmPath},
			func(i *Incident) { i.State, i.ClosedAt = IncidentClosed, now }); err != nil {
			return nil, err
		}
	}
	if w.sched != nil {
		w.sched.Forget(inc.ID) // closed: no further updates are owed
	}
	return playbook.Outputs{"bundle": br.Bundle, "bundle_sha256": br.SHA256, "statement_sha256": br.StatementSHA256,
		"anchor_index": br.AnchorIndex, "lead_key_id": br.LeadKeyID, "verified": true, "verified_files": v.Files,
		"postmortem": pmPath, "notices": noticeOutputs(recs)}, nil
}

// bundle builds, writes and anchors the incident's evidence bundle once:
// a re-run finds the bundle and its record and reuses them.
func (w *World) bundle(ctx context.Context, c playbook.Call, inc Incident, rep *reconcile.Report, dir string) (BundleRecord, error) {
	recPath := filepath.Join(dir, BundleRecordFile)
	path := filepath.Join(dir, BundleFile)
	var br BundleRecord
	if ok, err := readJSON(recPath, &br); err != nil || ok {
		return br, err
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = w.buildBundle(ctx, c, inc, rep)
		if err == nil {
			err = writeFileAtomic(path, raw, 0o444)
		}
	}
	if err != nil {
		return br, err
	}
	// The bundle exists but was not anchored yet (first run, or a crash
	// between writing it and recording the anchor).
	pub, err := LeadPublicKey(w.cfg.Dir)
	if err != nil {
		return br, err
	}
	v, err := evidence.Verify(ctx, bytes.NewReader(raw), pub)
	if err != nil {
		return br, fmt.Errorf("close: evidence bundle %s: %w", path, err)
	}
	sum := sha256.Sum256(raw)
	ev, err := evidence.AnchorEvent(inc.ID, evidence.Result{StatementSHA256: v.StatementSHA256, KeyID: v.KeyID, Files: make([]string, v.Files)},
		"playbook:"+c.RunID+"/"+c.StepID, w.now().UTC())
	if err != nil {
		return br, err
	}
	idx, err := w.inst.Store.AppendEvents(ctx, []store.AuditEvent{ev})
	if err != nil {
		return br, fmt.Errorf("close: anchor the evidence statement: %w", err)
	}
	br = BundleRecord{Bundle: path, SHA256: hex.EncodeToString(sum[:]), StatementSHA256: v.StatementSHA256, LeadKeyID: v.KeyID, AnchorIndex: idx[0]}
	return br, writeJSONAtomic(recPath, br)
}

// buildBundle gathers and signs the bundle's contents.
func (w *World) buildBundle(ctx context.Context, c playbook.Call, inc Incident, rep *reconcile.Report) ([]byte, error) {
	cts := &evidence.Contents{Incident: inc.ID, Report: rep, LogVerifierKey: w.inst.Config.LogVerifierKey}
	var err error
	if cts.CAChainPEM, err = os.ReadFile(filepath.Join(w.inst.Dir, w.inst.Config.CACert)); err != nil {
		return nil, err
	}
	if m := str(c, "manifest"); m != "" {
		ims, err := w.snapshotStore()
		if err != nil {
			return nil, err
		}
		rc, err := ims.Get(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("close: snapshot manifest: %w", err)
		}
		cts.SnapshotManifest, err = io.ReadAll(io.LimitReader(rc, 64<<20))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("close: snapshot manifest: %w", err)
		}
	}
	tl := w.noticeInput(ctx, inc, c.RunID, rep, "", notify.Evidence{}).Timeline
	if cts.Timeline, err = json.MarshalIndent(tl, "", "  "); err != nil {
		return nil, err
	}
	if err := w.waitCovered(ctx, rep); err != nil {
		return nil, err
	}
	if err := evidence.Gather(ctx, w.inst.Store, cts); err != nil {
		return nil, err
	}
	files, err := cts.Files()
	if err != nil {
		return nil, err
	}
	lead, err := w.leadSigner(ctx)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := evidence.Build(ctx, &buf, files, rep.Summary(), lead); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// waitCovered waits until a signed checkpoint covers every remediated
// signature of rep (the integrator signs one per second while events arrive).
func (w *World) waitCovered(ctx context.Context, rep *reconcile.Report) error {
	var need int64
	if rep.Signatures != nil {
		for _, t := range rep.Signatures.Remediation {
			for _, d := range t.Documents {
				need = max(need, d.AuditIndex+1)
			}
		}
	}
	if need == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		cp, err := w.inst.Store.LatestCheckpoint(ctx)
		if err == nil && cp.Size >= need {
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("close: no checkpoint covers audit index %d yet: %w", need-1, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
