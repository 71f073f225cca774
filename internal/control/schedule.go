package control

import (
	"context"
	"time"

	"github.com/countersign/countersign/internal/notify"
)

// startScheduler runs the notice scheduler: every notice delivered promises
// its readers an update by its "next update at"; when one is due the
// control plane records a reminder (an audit event and a timeline entry,
// "notice.update_due") for the incident commander. Status updates are not
// sent automatically: what to tell customers next is a human's call.
func (w *World) startScheduler() error {
	sched, err := notify.NewScheduler(notify.SchedulerConfig{
		CheckInterval: w.cfg.NoticeCheckInterval,
		Logger:        w.log,
		Remind: func(ctx context.Context, r notify.Reminder) error {
			subject := "incident/" + r.Incident + "/notice/" + string(r.Phase)
			if r.Tenant != "" {
				subject += "/" + r.Tenant
			}
			return w.rec.Record(ctx, "notice.update_due", subject, map[string]any{
				"phase": string(r.Phase), "tenant": r.Tenant, "revision": r.Revision,
				"due_at": r.DueAt.UTC().Format(time.RFC3339Nano), "overdue_seconds": int64(r.Overdue / time.Second), "reminder": r.Count,
			})
		},
	})
	if err != nil {
		return err
	}
	w.sched = sched
	w.goRun("notice scheduler", func(ctx context.Context) error { return sched.Run(ctx) })
	return nil
}

// trackNotice hands a delivered notice to the scheduler.
func (w *World) trackNotice(rec NoticeRecord) {
	if w.sched != nil && rec.Delivered() && !rec.Notice.NextUpdateAt.IsZero() {
		w.sched.Track(rec.Notice)
	}
}

// Reminders lists the notice updates that are due now.
func (w *World) Reminders() []notify.Reminder {
	if w.sched == nil {
		return nil
	}
	return w.sched.Pending()
}
