package notify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// auditLog is a Recorder that keeps the events.
type auditLog struct {
	mu     sync.Mutex
	events []auditEvent
	fail   error
}

type auditEvent struct {
	typ, subject string
	details      map[string]any
}

func (a *auditLog) Record(_ context.Context, typ, subject string, details map[string]any) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.events = append(a.events, auditEvent{typ, subject, details})
	return nil
}

func TestFileChannelIdempotent(t *testing.T) {
	dir := t.TempDir()
	ch, err := NewFile(FileConfig{Name: "archive", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	n := testNotice(t, PhaseCustomer, "acme")
	d := delivery(n, "archive")
	first, err := ch.Deliver(context.Background(), d)
	if err != nil || first.Duplicate {
		t.Fatalf("first delivery: %+v, %v", first, err)
	}
	// A retry, later, of the same delivery writes nothing new.
	d.SentAt = d.SentAt.Add(time.Minute)
	again, err := ch.Deliver(context.Background(), d)
	if err != nil || !again.Duplicate {
		t.Fatalf("repeat: %+v, %v", again, err)
	}
	// Concurrent repeats: still exactly one file.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := ch.Deliver(context.Background(), d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	files, _ := filepath.Glob(filepath.Join(dir, "INC-7", "*"))
	if len(files) != 1 || filepath.Base(files[0]) != d.ID+".json" {
		t.Fatalf("files %v, want exactly %s.json", files, d.ID)
	}
	var p WebhookPayload
	b, _ := os.ReadFile(files[0])
	decodeStrict(t, b, &p)
	if p.Digest != n.Digest || !p.SentAt.Equal(delivery(n, "").SentAt) {
		t.Errorf("file holds %+v", p)
	}
	// The same delivery ID with different text is a conflict, not an overwrite.
	changed := n
	changed.Body += "changed\n"
	changed.Digest = changed.ComputeDigest()
	_, err = ch.Deliver(context.Background(), Delivery{ID: d.ID, Notice: changed, SentAt: d.SentAt})
	if !errors.Is(err, ErrDeliveryConflict) {
		t.Fatalf("conflicting delivery = %v", err)
	}
	// Unsafe names never reach the file system.
	bad := n
	bad.Incident = "../etc"
	if _, err := ch.Deliver(context.Background(), Delivery{ID: bad.DeliveryID("archive"), Notice: bad}); err == nil {
		t.Error("path traversal accepted")
	}
}

func TestSenderApprovalAuditAndRetriedSend(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]int{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ids[r.Header.Get(HeaderWebhookID)]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hs.Close()
	dir := t.TempDir()
	hook, err := NewWebhook(WebhookConfig{Name: "partners", URL: hs.URL, Secret: NewSecret([]byte("k"), "test")})
	if err != nil {
		t.Fatal(err)
	}
	file, _ := NewFile(FileConfig{Name: "archive", Dir: dir})
	broken, _ := NewWebhook(WebhookConfig{Name: "broken", URL: "http://127.0.0.1:1/", Secret: NewSecret([]byte("k"), "test"),
		Retry: Retry{Attempts: 2, Sleep: (&sleeps{}).sleep}})
	audit := &auditLog{}
	now := time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)
	s, err := NewSender(SenderConfig{
		Routes: []Route{
			{Channel: hook, Phases: []Phase{PhaseCustomer, PhaseRegulator}},
			{Channel: file},
			{Channel: broken, Phases: []Phase{PhaseInternal}},
		},
		Recorder: audit, RequireApproval: []Phase{PhaseCustomer, PhaseRegulator}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := testNotice(t, PhaseCustomer, "acme")

	// Approval gate.
	if _, err := s.Send(ctx, n); !errors.Is(err, ErrApprovalRequired) {
		t.Fatalf("unapproved send = %v", err)
	}
	n.Approval = &Approval{By: "legal:j.doe", At: now, Digest: "sha256:something-else"}
	if _, err := s.Send(ctx, n); !errors.Is(err, ErrApprovalRequired) {
		t.Fatalf("send approved for other text = %v", err)
	}
	if len(audit.events) != 0 {
		t.Fatalf("refused sends were audited as sent: %+v", audit.events)
	}
	n.Approval.Digest = n.Digest
	plan := s.Plan(n)
	if len(plan) != 2 || plan[0].Channel != "partners" || plan[1].Channel != "archive" {
		t.Fatalf("plan %+v", plan)
	}

	outs, err := s.Send(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	// Retrying the whole send: same IDs, the file is not written twice.
	outs2, err := s.Send(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 || outs[1].Result != "delivered" || outs2[1].Result != "duplicate" {
		t.Fatalf("outcomes %+v then %+v", outs, outs2)
	}
	if outs[0].DeliveryID != outs2[0].DeliveryID || ids[outs[0].DeliveryID] != 2 || len(ids) != 1 {
		t.Errorf("webhook ids %v", ids)
	}
	if len(audit.events) != 4 {
		t.Fatalf("%d audit events, want 4", len(audit.events))
	}
	ev := audit.events[0]
	if ev.typ != EventNoticeSent || ev.subject != "incident/INC-7/notice/B/acme" || ev.details["digest"] != n.Digest ||
		ev.details["channel"] != "partners" || ev.details["result"] != "delivered" || ev.details["approved_by"] != "legal:j.doe" ||
		ev.details["delivery_id"] != outs[0].DeliveryID {
		t.Errorf("audit event %+v", ev)
	}
	if e := outs[0].Entry(); e.Kind != EventNoticeSent || e.Tenant != "acme" || !e.Time.Equal(now) {
		t.Errorf("timeline entry %+v", e)
	}

	// A failing channel: notice.failed, DeliveryError naming it; the
	// others still deliver.
	a := testNotice(t, PhaseInternal, "")
	outs, err = s.Send(ctx, a)
	var de *DeliveryError
	if !errors.As(err, &de) || de.Failed["broken"] == nil || len(de.Failed) != 1 {
		t.Fatalf("send with a broken channel = %v", err)
	}
	if len(outs) != 2 || outs[0].Channel != "archive" || outs[1].Result != "failed" || outs[1].Attempts != 2 {
		t.Fatalf("outcomes %+v", outs)
	}
	last := audit.events[len(audit.events)-1]
	if last.typ != EventNoticeFailed || last.details["error"] == nil || last.details["attempts"] != 2 {
		t.Errorf("failure audit %+v", last)
	}

	// A tampered notice is refused before any delivery.
	a.Body = "edited"
	if _, err := s.Send(ctx, a); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("tampered send = %v", err)
	}
	// Recording failures are reported (the send may be repeated).
	audit.fail = errors.New("store down")
	if _, err := s.Send(ctx, n); err == nil || !errors.Is(err, audit.fail) {
		t.Errorf("send with a failing recorder = %v", err)
	}
}

func TestSenderNoChannel(t *testing.T) {
	file, _ := NewFile(FileConfig{Name: "archive", Dir: t.TempDir()})
	s, err := NewSender(SenderConfig{Routes: []Route{{Channel: file, Phases: []Phase{PhaseInternal}}}, Recorder: &auditLog{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), testNotice(t, PhaseRemediation, "acme")); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("Send = %v, want ErrNoChannel", err)
	}
	if _, err := NewSender(SenderConfig{Routes: []Route{{Channel: file}, {Channel: file}}, Recorder: &auditLog{}}); !errors.Is(err, ErrConfig) {
		t.Errorf("duplicate channel names accepted: %v", err)
	}
}
