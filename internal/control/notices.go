package control

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/reconcile"
)

// Notice channel names.
const (
	ChannelFile    = "file"
	ChannelWebhook = "webhook"
)

// NoticeRecord is one rendered notice and what became of its deliveries,
// kept as <incident dir>/notices/<phase>[-<tenant>].json. It is written
// before the first delivery, so a step re-run after a crash sends the very
// same text (same digest, same delivery IDs) instead of rendering anew.
type NoticeRecord struct {
	Notice     notify.Notice    `json:"notice"`
	Deliveries []NoticeDelivery `json:"deliveries,omitempty"`
}

// NoticeDelivery is one delivery of a notice to a channel.
type NoticeDelivery struct {
	Channel    string    `json:"channel"`
	Kind       string    `json:"kind"`
	DeliveryID string    `json:"delivery_id"`
	Result     string    `json:"result"` // delivered | duplicate | failed
	File       string    `json:"file,omitempty"`
	Error      string    `json:"error,omitempty"`
	At         time.Time `json:"at"`
}

// Delivered reports whether every delivery of r succeeded.
func (r NoticeRecord) Delivered() bool {
	if len(r.Deliveries) == 0 {
		return false
	}
	for _, d := range r.Deliveries {
		if d.Result == "failed" {
			return false
		}
	}
	return true
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

func noticeFile(phase notify.Phase, tenant string) string {
	n := string(phase)
	if tenant != "" {
		n += "-" + unsafeChars.ReplaceAllString(tenant, "_")
	}
	return n + ".json"
}

// Notices lists the notice records of an incident, in phase order.
func Notices(dir, incident string) ([]NoticeRecord, error) {
	matches, err := filepath.Glob(filepath.Join(IncidentDir(dir, incident), NoticesDir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []NoticeRecord
	for _, m := range matches { // Glob sorts: A, B-…, C, D-…
		var r NoticeRecord
		if _, err := readJSON(m, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// sender builds the incident's notice sender: the file channel always, the
// webhook when configured. B and C need a sign-off on their exact digest.
func (w *World) sender(incDir string) (*notify.Sender, error) {
	fc, err := notify.NewFile(notify.FileConfig{Name: ChannelFile, Dir: filepath.Join(incDir, NoticesDir)})
	if err != nil {
		return nil, err
	}
	routes := []notify.Route{{Channel: fc}}
	if w.cfg.NotifyWebhook != "" {
		wh, err := notify.NewWebhook(notify.WebhookConfig{Name: ChannelWebhook, URL: w.cfg.NotifyWebhook, Secret: w.cfg.NotifyWebhookSecret,
			Retry: notify.Retry{Attempts: 4, Initial: 500 * time.Millisecond, Max: 5 * time.Second}, Now: w.now})
		if err != nil {
			return nil, err
		}
		routes = append(routes, notify.Route{Channel: wh})
	}
	return notify.NewSender(notify.SenderConfig{Routes: routes, Recorder: w.rec, Now: w.now, Logger: w.log,
		RequireApproval: []notify.Phase{notify.PhaseCustomer, notify.PhaseRegulator}})
}

// sendNotice renders (or reloads) and delivers one notice. approve, if not
// nil, signs off the rendered digest. A record whose deliveries all
// succeeded is not sent again.
func (w *World) sendNotice(ctx context.Context, incDir string, in notify.Input, o notify.RenderOptions,
	approve func(n notify.Notice) *notify.Approval) (NoticeRecord, error) {
	path := filepath.Join(incDir, NoticesDir, noticeFile(o.Phase, o.Tenant))
	var rec NoticeRecord
	ok, err := readJSON(path, &rec)
	if err != nil {
		return rec, err
	}
	if ok && rec.Delivered() {
		return rec, nil
	}
	if !ok {
		tpl, err := notify.DefaultTemplates()
		if err != nil {
			return rec, err
		}
		n, err := tpl.Render(in, o)
		if err != nil {
			return rec, err
		}
		if approve != nil {
			n.Approval = approve(n)
		}
		rec = NoticeRecord{Notice: n}
		if err := writeJSONAtomic(path, rec); err != nil {
			return rec, err
		}
	}
	s, err := w.sender(incDir)
	if err != nil {
		return rec, err
	}
	outs, sendErr := s.Send(ctx, rec.Notice)
	rec.Deliveries = rec.Deliveries[:0]
	for _, o := range outs {
		d := NoticeDelivery{Channel: o.Channel, Kind: o.Kind, DeliveryID: o.DeliveryID, Result: o.Result, Error: o.Error, At: o.At}
		if o.Kind == "file" {
			d.File = o.Detail
		}
		rec.Deliveries = append(rec.Deliveries, d)
	}
	if err := writeJSONAtomic(path, rec); err != nil {
		return rec, errors.Join(sendErr, err)
	}
	w.trackNotice(rec)
	return rec, sendErr
}

// noticeOutputs is the step output of sent notices.
func noticeOutputs(recs []NoticeRecord) []any {
	out := []any{}
	for _, r := range recs {
		for _, d := range r.Deliveries {
			m := map[string]any{"phase": string(r.Notice.Phase), "channel": d.Channel, "delivered": d.Result != "failed",
				"delivery_id": d.DeliveryID, "digest": r.Notice.Digest}
			if r.Notice.Tenant != "" {
				m["tenant"] = r.Notice.Tenant
			}
			if d.File != "" {
				m["file"] = d.File
			}
			out = append(out, m)
		}
	}
	return out
}

// stepApproval binds the playbook step's approval gate to a notice digest.
func (w *World) stepApproval(ctx context.Context, c playbook.Call) (func(notify.Notice) *notify.Approval, error) {
	st, err := w.engine.Status(ctx, c.RunID)
	if err != nil {
		return nil, err
	}
	s := st.Step(c.StepID)
	if s == nil || len(s.Approvals) == 0 {
		return nil, fmt.Errorf("control: step %s has no recorded approval to sign off its notices", c.StepID)
	}
	g := s.Approvals[len(s.Approvals)-1]
	return func(n notify.Notice) *notify.Approval {
		return &notify.Approval{By: g.Actor, At: g.Time, Digest: n.Digest, Note: g.Note}
	}, nil
}

// noticeInput builds what the templates render from the incident, the run
// and (when there is one) the reconciliation report. It is derived from
// stored state only, so every control process builds the same input.
func (w *World) noticeInput(ctx context.Context, inc Incident, runID string, rep *reconcile.Report, reportPath string, ev notify.Evidence) notify.Input {
	in := notify.Input{
		Incident: notify.Incident{ID: inc.ID, Classification: inc.Classification, State: inc.State, Release: inc.Release, Pool: inc.Pool,
			Commander: inc.Commander, Summary: inc.Summary, FirstBadAt: inc.FirstBadAt, DetectedAt: inc.DetectedAt,
			ContainedAt: inc.ContainedAt, RestoredAt: inc.RestoredAt, ClosedAt: inc.ClosedAt, RunID: runID},
		Evidence:     ev,
		Expectations: []string{"Signing requests refused with 503 during the incident were not accepted and can be retried with the same Idempotency-Key."},
	}
	if !inc.FirstBadAt.IsZero() {
		in.Timeline = append(in.Timeline, notify.Entry{Time: inc.FirstBadAt, Kind: "signature.first_bad", Subject: "release/" + inc.Release})
	}
	in.Timeline = append(in.Timeline, notify.Entry{Time: inc.DetectedAt, Kind: "incident.opened", Subject: "incident/" + inc.ID, Detail: inc.Summary})
	in.Signals = append(in.Signals, notify.Signal{Time: inc.DetectedAt, Source: "probe", Kind: inc.Classification, Detail: inc.Summary})
	if !inc.ContainedAt.IsZero() {
		in.Containment = append(in.Containment, notify.Action{Time: inc.ContainedAt, Action: "signing paused at the gateway",
			Detail: "503 + Retry-After; pool " + inc.Pool + " weight 0"})
		in.Timeline = append(in.Timeline, notify.Entry{Time: inc.ContainedAt, Kind: "incident.contained", Subject: "gateway"})
	}
	if st, err := w.engine.Status(ctx, runID); err == nil {
		for _, s := range st.Steps {
			if s.State == playbook.StepPending {
				continue
			}
			in.Steps = append(in.Steps, notify.Step{ID: s.ID, State: string(s.State), StartedAt: s.StartedAt, FinishedAt: s.FinishedAt,
				Error: s.Error, Note: s.Note})
			if s.State != playbook.StepSucceeded || s.FinishedAt.IsZero() {
				continue
			}
			in.Timeline = append(in.Timeline, notify.Entry{Time: s.FinishedAt, Kind: "playbook." + s.ID, Subject: "run/" + runID, Detail: s.Note})
			switch s.ID {
			case "isolate":
				in.Containment = append(in.Containment, notify.Action{Time: s.FinishedAt, Action: "regressive pool drained and scaled to 0", Detail: "release " + inc.Release})
			case "rollback":
				rel, _ := s.Outputs["release"].(string)
				in.Incident.LastGoodRelease = rel
				in.Containment = append(in.Containment, notify.Action{Time: s.FinishedAt, Action: "rolled back to release " + rel})
			case "canary":
				in.Containment = append(in.Containment, notify.Action{Time: s.FinishedAt, Action: "traffic re-admitted 1% → 100%, every canary signature verified"})
			}
		}
		if inc.ContainedAt.IsZero() {
			if s := st.Step("block-ingress"); s != nil && !s.FinishedAt.IsZero() {
				in.Containment = append(in.Containment, notify.Action{Time: s.FinishedAt, Action: "signing paused at the gateway", Detail: "503 + Retry-After"})
			}
		}
	}
	in.Impact.Summary = fmt.Sprintf("Release %s (pool %s) raised a %s alert: %s.", inc.Release, inc.Pool, inc.Classification, inc.Summary)
	in.Impact.WindowFrom = inc.FirstBadAt
	if rep == nil {
		return in
	}
	s := rep.Summary()
	a := affected(rep)
	in.Impact.WindowFrom, in.Impact.WindowTo = rep.Window.From, rep.Window.To
	in.Impact.Summary += fmt.Sprintf(" Reconciliation re-verified %d signatures: %d valid, %d invalid, %d metadata-drift, %d unverifiable; %d customer tenants affected.",
		s.Signatures, s.Classes[string(reconcile.ClassValid)], s.Classes[string(reconcile.ClassInvalid)], s.Classes[string(reconcile.ClassDrift)],
		s.Classes[string(reconcile.ClassUnverifiable)], len(a.Tenants))
	for _, t := range a.Tenants {
		in.Impact.Tenants = append(in.Impact.Tenants, notify.Tenant{ID: t, Name: t, Documents: a.Documents[t], LegallyBinding: a.LegallyBinding[t]})
	}
	if rep.Signatures != nil {
		for _, t := range rep.Signatures.Remediation {
			if t.TenantID == ProbeTenant {
				continue
			}
			for _, d := range t.Documents {
				act, ok := remediationAction(d.Remedy)
				if !ok || !needsRemedy(d) {
					continue
				}
				doc := d.DocumentID
				if doc == "" {
					doc = "signature " + d.SignatureID
				}
				in.Remediations = append(in.Remediations, notify.Remediation{Tenant: t.TenantID, Document: doc, Signature: d.SignatureID,
					Algorithm: d.Algorithm, Release: d.Release, SignedAt: d.SignedAt, LegallyBinding: legallyBinding(d),
					Finding: d.Reason, Action: act, Status: "planned"})
			}
		}
	}
	in.Requests.Replayed = s.Replayed
	in.Reconciliation = notify.Reconciliation{Verified: s.Classes[string(reconcile.ClassValid)], Invalid: s.Classes[string(reconcile.ClassInvalid)],
		Replayed: s.Replayed, Consistent: s.LogConsistent, Report: reportPath}
	verdict := "consistent"
	if !s.LogConsistent {
		verdict = "NOT consistent"
	}
	in.Reconciliation.ProofSummary = fmt.Sprintf("checkpoint %d → %d %s (RFC 6962)", s.CheckpointBefore, s.CheckpointAfter, verdict)
	in.Timeline = append(in.Timeline, notify.Entry{Time: rep.GeneratedAt, Kind: "reconcile.reported", Subject: "incident/" + inc.ID,
		Detail: in.Reconciliation.ProofSummary})
	return in
}

func remediationAction(r reconcile.Remedy) (notify.RemediationAction, bool) {
	switch r {
	case reconcile.RemedyResign:
		return notify.ReSign, true
	case reconcile.RemedyAttest:
		return notify.Attest, true
	case reconcile.RemedyVoidReissue:
		return notify.VoidAndReissue, true
	}
	return "", false
}

// phaseANotice sends the internal notice when the incident is opened.
func (w *World) phaseANotice(ctx context.Context, c playbook.Call, inc Incident) (NoticeRecord, error) {
	dir, err := w.incidentDir(inc.ID)
	if err != nil {
		return NoticeRecord{}, err
	}
	in := w.noticeInput(ctx, inc, c.RunID, nil, "", notify.Evidence{})
	return w.sendNotice(actorCtx(ctx, c), dir, in, notify.RenderOptions{Phase: notify.PhaseInternal, Revision: 1,
		NextUpdateAt: inc.DetectedAt.Add(notify.PhaseInternal.DefaultNextUpdate())}, nil)
}
