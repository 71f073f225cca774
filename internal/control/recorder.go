package control

import (
	"context"
	"encoding/json"
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

// Settings that keep the gateway's routing across restarts of the control
// plane: each is written in the same transaction as the audit event of the
// change, so the evidence and the state that comes back never disagree.
const (
	settingWeights = "control.gateway.weights"
	settingGate    = "control.gateway.gate"
)

// event builds the audit event of a control-plane change.
func (r *recorder) event(ctx context.Context, typ, subject string, details map[string]any) (store.AuditEvent, error) {
	actor := gateway.ActorFrom(ctx)
	if actor == "" {
		actor = "control"
	}
	return auditlog.Event{Type: typ, Time: r.now(), Actor: actor, Release: r.release, Instance: r.instance,
		Subject: subject, Details: details}.Record()
}

// Record implements gateway.Recorder and is used by every control action.
// Weight and gate changes are also persisted (see settingWeights).
func (r *recorder) Record(ctx context.Context, typ, subject string, details map[string]any) error {
	ev, err := r.event(ctx, typ, subject, details)
	if err != nil {
		return err
	}
	setting := ""
	switch typ {
	case gateway.EventWeights:
		setting = settingWeights
	case gateway.EventGate:
		setting = settingGate
	}
	if setting != "" {
		b, jerr := json.Marshal(details["after"])
		if jerr != nil {
			return fmt.Errorf("control: record %s: %w", typ, jerr)
		}
		err = r.st.SetSetting(ctx, setting, string(b), ev)
	} else {
		_, err = r.st.AppendEvents(ctx, []store.AuditEvent{ev})
	}
	if err != nil {
		return fmt.Errorf("control: record %s: %w", typ, err)
	}
	r.note(TimelineEntry{Time: ev.Time, Kind: typ, Subject: subject, Details: details})
	return nil
}

// routing is the gateway routing persisted by Record.
type routing struct {
	Weights map[string]int
	Gate    *gateway.Gate
}

// loadRouting reads the routing the previous control process left, if any.
func loadRouting(ctx context.Context, st store.Store) (routing, error) {
	var rt routing
	if v, err := st.Setting(ctx, settingWeights); err != nil {
		return rt, err
	} else if v != "" {
		if err := json.Unmarshal([]byte(v), &rt.Weights); err != nil {
			return rt, fmt.Errorf("control: setting %s: %w", settingWeights, err)
		}
	}
	if v, err := st.Setting(ctx, settingGate); err != nil {
		return rt, err
	} else if v != "" {
		var g struct {
			On         bool   `json:"on"`
			RetryAfter int    `json:"retry_after"`
			Reason     string `json:"reason"`
			BlockReads bool   `json:"block_reads"`
		}
		if err := json.Unmarshal([]byte(v), &g); err != nil {
			return rt, fmt.Errorf("control: setting %s: %w", settingGate, err)
		}
		rt.Gate = &gateway.Gate{On: g.On, RetryAfter: g.RetryAfter, Reason: g.Reason, BlockReads: g.BlockReads}
	}
	return rt, nil
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

// NewRecorder returns the recorder the control plane uses, for a gateway
// that runs on its own (countersign gateway): every change is an audit event
// in st, and weight and gate changes are persisted with their event, so a
// restarted gateway routes as it was left (LoadRouting).
func NewRecorder(st store.Store, release, instance string, now func() time.Time) gateway.Recorder {
	if now == nil {
		now = time.Now
	}
	return &recorder{st: st, release: release, instance: instance, now: now}
}

// LoadRouting returns the weights and gate last recorded by a recorder of
// NewRecorder in st; nil where none was recorded.
func LoadRouting(ctx context.Context, st store.Store) (weights map[string]int, gate *gateway.Gate, err error) {
	rt, err := loadRouting(ctx, st)
	return rt.Weights, rt.Gate, err
}
