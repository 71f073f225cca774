package control

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/store"
)

// TimelineEntry is one thing that happened in the world, as the drill, the
// console and the postmortem see it.
type TimelineEntry struct {
	Time    time.Time      `json:"time"`
	Kind    string         `json:"kind"`
	Subject string         `json:"subject,omitempty"`
	Details map[string]any `json:"details,omitempty"`
}

// recorder writes control-plane events to the audit log (evidence first)
// and keeps them on the in-memory timeline.
type recorder struct {
	st       store.Store
	release  string
	instance string
	now      func() time.Time

	mu       sync.Mutex
	timeline []TimelineEntry // r.mu must be held
	subs     []chan TimelineEntry
}

// Record implements gateway.Recorder and is used by every control action.
func (r *recorder) Record(ctx context.Context, typ, subject string, details map[string]any) error {
	now := r.now()
	actor := gateway.ActorFrom(ctx)
	if actor == "" {
		actor = "control"
	}
	ev, err := auditlog.Event{Type: typ, Time: now, Actor: actor, Release: r.release, Instance: r.instance,
		Subject: subject, Details: details}.Record()
	if err != nil {
		return err
	}
	if _, err := r.st.AppendEvents(ctx, []store.AuditEvent{ev}); err != nil {
		return fmt.Errorf("control: record %s: %w", typ, err)
	}
	r.note(TimelineEntry{Time: now, Kind: typ, Subject: subject, Details: details})
	return nil
}

// note adds to the timeline without an audit event (for observations that
// are not changes, e.g. a probe finding, whose evidence lives elsewhere).
func (r *recorder) note(e TimelineEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timeline = append(r.timeline, e)
	for _, c := range r.subs {
		select {
		case c <- e:
		default: // a slow subscriber misses entries rather than stalling the control plane
		}
	}
}

// Timeline returns a copy of the timeline.
func (r *recorder) Timeline() []TimelineEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]TimelineEntry(nil), r.timeline...)
}

// Subscribe returns a channel of new timeline entries and a cancel func.
func (r *recorder) Subscribe() (<-chan TimelineEntry, func()) {
	c := make(chan TimelineEntry, 256)
	r.mu.Lock()
	r.subs = append(r.subs, c)
	r.mu.Unlock()
	return c, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, s := range r.subs {
			if s == c {
				r.subs = append(r.subs[:i], r.subs[i+1:]...)
				close(c)
				return
			}
		}
	}
}
