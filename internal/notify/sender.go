package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// Recorder receives the audit events of deliveries (the shape the gateway
// and the control plane's recorder already have).
type Recorder interface {
	Record(ctx context.Context, typ, subject string, details map[string]any) error
}

// Audit event types of deliveries.
const (
	EventNoticeSent   = "notice.sent"
	EventNoticeFailed = "notice.failed"
)

// Route sends some notices to a channel.
type Route struct {
	Channel Channel
	Phases  []Phase  // empty: every phase
	Tenants []string // empty: every tenant (tenant-scoped notices only)
}

func (r Route) takes(n Notice) bool {
	if len(r.Phases) > 0 && !slices.Contains(r.Phases, n.Phase) {
		return false
	}
	if n.Tenant != "" && len(r.Tenants) > 0 && !slices.Contains(r.Tenants, n.Tenant) {
		return false
	}
	if a, ok := r.Channel.(accepter); ok && !a.Accepts(n) {
		return false
	}
	return true
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	Routes []Route
	// Recorder receives notice.sent / notice.failed (required).
	Recorder Recorder
	// RequireApproval lists the phases that need a sign-off on the exact
	// digest before they are sent (typically B and C).
	RequireApproval []Phase
	Now             func() time.Time // default time.Now
	Logger          *slog.Logger
}

// Sender sends rendered notices to the channels that take them.
type Sender struct {
	cfg SenderConfig
}

// NewSender returns a Sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Recorder == nil {
		return nil, fmt.Errorf("%w: a sender needs an audit recorder", ErrConfig)
	}
	seen := map[string]bool{}
	for _, r := range cfg.Routes {
		if r.Channel == nil {
			return nil, fmt.Errorf("%w: route without a channel", ErrConfig)
		}
		if seen[r.Channel.Name()] {
			return nil, fmt.Errorf("%w: channel name %q used twice", ErrConfig, r.Channel.Name())
		}
		seen[r.Channel.Name()] = true
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Sender{cfg: cfg}, nil
}

// Planned is one delivery a Send would make.
type Planned struct {
	Channel    string
	Kind       string
	DeliveryID string
}

// Plan lists the deliveries Send would make for n, without sending.
func (s *Sender) Plan(n Notice) []Planned {
	var out []Planned
	for _, r := range s.cfg.Routes {
		if r.takes(n) {
			out = append(out, Planned{Channel: r.Channel.Name(), Kind: r.Channel.Kind(), DeliveryID: n.DeliveryID(r.Channel.Name())})
		}
	}
	return out
}

// NeedsApproval reports whether phase p needs a sign-off.
func (s *Sender) NeedsApproval(p Phase) bool { return slices.Contains(s.cfg.RequireApproval, p) }

// Channels lists the routes.
func (s *Sender) Channels() []Route { return slices.Clone(s.cfg.Routes) }

// Outcome is the result of one delivery, as audited.
type Outcome struct {
	Channel    string
	Kind       string
	DeliveryID string
	Incident   string
	Phase      Phase
	Tenant     string
	Revision   int
	Digest     string
	Result     string // delivered | duplicate | failed
	Attempts   int
	Detail     string
	Error      string
	At         time.Time
}

// Entry is the outcome as a timeline entry.
func (o Outcome) Entry() Entry {
	kind := EventNoticeSent
	if o.Result == "failed" {
		kind = EventNoticeFailed
	}
	detail := fmt.Sprintf("phase %s rev %d via %s (%s): %s, %s", o.Phase, o.Revision, o.Channel, o.Kind, o.Result, o.Digest)
	if o.Error != "" {
		detail += ": " + o.Error
	}
	subject := "incident/" + o.Incident + "/notice/" + string(o.Phase)
	if o.Tenant != "" {
		subject += "/" + o.Tenant
	}
	return Entry{Time: o.At, Kind: kind, Subject: subject, Detail: detail, Tenant: o.Tenant}
}

// Send delivers n to every channel that takes it and records each result
// as a notice.sent or notice.failed audit event. Deliveries are
// idempotent, so a Send that failed (on a channel or on recording) may be
// repeated as a whole. The error is an *ApprovalError, ErrNoChannel, a
// *DeliveryError naming the failed channels, or the recorder's error.
func (s *Sender) Send(ctx context.Context, n Notice) ([]Outcome, error) {
	if err := n.Verify(); err != nil {
		return nil, err
	}
	if s.NeedsApproval(n.Phase) {
		switch {
		case n.Approval == nil || n.Approval.By == "":
			return nil, &ApprovalError{Phase: n.Phase, Digest: n.Digest, Reason: "no approval"}
		case n.Approval.Digest != n.Digest:
			return nil, &ApprovalError{Phase: n.Phase, Digest: n.Digest,
				Reason: fmt.Sprintf("%s approved %s, which is not this text", n.Approval.By, n.Approval.Digest)}
		}
	}
	var outs []Outcome
	failed := map[string]error{}
	var recErrs []error
	for _, r := range s.cfg.Routes {
		if !r.takes(n) {
			continue
		}
		ch := r.Channel
		d := Delivery{ID: n.DeliveryID(ch.Name()), Notice: n, SentAt: s.cfg.Now().UTC()}
		rc, err := ch.Deliver(ctx, d)
		o := Outcome{Channel: ch.Name(), Kind: ch.Kind(), DeliveryID: d.ID, Incident: n.Incident, Phase: n.Phase,
			Tenant: n.Tenant, Revision: n.Revision, Digest: n.Digest, Result: "delivered", Attempts: rc.Attempts,
			Detail: rc.Detail, At: s.cfg.Now().UTC()}
		typ := EventNoticeSent
		switch {
		case err != nil:
			o.Result, o.Error, typ = "failed", err.Error(), EventNoticeFailed
			failed[ch.Name()] = err
			s.cfg.Logger.WarnContext(ctx, "notice delivery failed", "incident", n.Incident, "phase", string(n.Phase),
				"tenant", n.Tenant, "channel", ch.Name(), "delivery_id", d.ID, "attempts", rc.Attempts, "err", err)
		case rc.Duplicate:
			o.Result = "duplicate"
		}
		if err == nil {
			s.cfg.Logger.InfoContext(ctx, "notice delivered", "incident", n.Incident, "phase", string(n.Phase),
				"tenant", n.Tenant, "channel", ch.Name(), "delivery_id", d.ID, "result", o.Result, "attempts", rc.Attempts)
		}
		if rerr := s.cfg.Recorder.Record(ctx, typ, n.AuditSubject(), auditDetails(n, o)); rerr != nil {
			recErrs = append(recErrs, fmt.Errorf("notify: record %s for %s: %w", typ, ch.Name(), rerr))
		}
		outs = append(outs, o)
	}
	if len(outs) == 0 {
		return nil, fmt.Errorf("%w: phase %s, tenant %q", ErrNoChannel, n.Phase, n.Tenant)
	}
	var err error
	if len(failed) > 0 {
		err = &DeliveryError{Failed: failed}
	}
	return outs, errors.Join(append([]error{err}, recErrs...)...)
}

func auditDetails(n Notice, o Outcome) map[string]any {
	d := map[string]any{"incident": n.Incident, "phase": string(n.Phase), "revision": n.Revision,
		"channel": o.Channel, "kind": o.Kind, "delivery_id": o.DeliveryID, "digest": n.Digest,
		"result": o.Result, "attempts": o.Attempts, "subject": n.Subject}
	if n.Tenant != "" {
		d["tenant"] = n.Tenant
	}
	if !n.NextUpdateAt.IsZero() {
		d["next_update_at"] = n.NextUpdateAt.UTC().Format(time.RFC3339)
	}
	if n.Approval != nil {
		d["approved_by"] = n.Approval.By
		d["approved_at"] = n.Approval.At.UTC().Format(time.RFC3339)
	}
	if o.Error != "" {
		d["error"] = o.Error
	}
	if o.Detail != "" && o.Kind != "file" {
		d["detail"] = o.Detail
	}
	return d
}
