package control

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

// TestOverdueNoticeUpdateIsRecorded: a delivered notice whose promised
// update time has passed produces a "notice.update_due" audit event; an
// undelivered one, and one of a closed incident, produce none.
func TestOverdueNoticeUpdateIsRecorded(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cs.db"), store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(t.Context())
	w := &World{cfg: Config{NoticeCheckInterval: 10 * time.Millisecond}, log: slog.New(slog.DiscardHandler), now: time.Now,
		rec: &recorder{st: st, release: "control", instance: "test", now: time.Now}, runCtx: ctx, cancel: cancel}
	if err := w.startScheduler(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); w.wg.Wait() }()

	past := time.Now().Add(-time.Minute)
	delivered := []NoticeDelivery{{Channel: "file", Kind: "file", Result: "delivered"}}
	w.trackNotice(NoticeRecord{Notice: notify.Notice{Incident: "INC-1", Phase: notify.PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: past}, Deliveries: delivered})
	w.trackNotice(NoticeRecord{Notice: notify.Notice{Incident: "INC-2", Phase: notify.PhaseInternal, Revision: 1, NextUpdateAt: past}}) // never delivered
	w.trackNotice(NoticeRecord{Notice: notify.Notice{Incident: "INC-3", Phase: notify.PhaseInternal, Revision: 1, NextUpdateAt: past}, Deliveries: delivered})
	w.sched.Forget("INC-3") // closed

	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, err := st.AuditEvents(t.Context(), 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var due []store.AuditEvent
		for _, e := range evs {
			if e.Type == "notice.update_due" {
				due = append(due, e)
			}
		}
		if len(due) > 0 {
			for _, e := range due {
				if e.Subject != "incident/INC-1/notice/B/acme" {
					t.Errorf("reminder for %s; want only incident/INC-1/notice/B/acme", e.Subject)
				}
				if !strings.Contains(string(e.Entry), `"overdue_seconds"`) {
					t.Errorf("reminder entry lacks overdue_seconds: %s", e.Entry)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no notice.update_due event within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
