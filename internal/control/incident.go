package control

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/probe"
)

// Incident states move forward only.
const (
	IncidentOpen      = "open"
	IncidentContained = "contained"
	IncidentRestored  = "restored"
	IncidentClosed    = "closed"
)

// Incident is what the control plane knows of an incident. Every change is
// an audit event ("incident.*"), which is the durable record; the struct is
// the working view.
type Incident struct {
	ID             string    `json:"id"`
	Classification string    `json:"classification"`
	State          string    `json:"state"`
	Release        string    `json:"release"`
	Pool           string    `json:"pool,omitempty"`
	Commander      string    `json:"commander,omitempty"`
	Summary        string    `json:"summary"`
	FirstBadAt     time.Time `json:"first_bad_at,omitzero"`
	DetectedAt     time.Time `json:"detected_at"`
	ContainedAt    time.Time `json:"contained_at,omitzero"`
	RestoredAt     time.Time `json:"restored_at,omitzero"`
	RunID          string    `json:"run_id,omitempty"`
}

type incidents struct {
	rec *recorder
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*Incident // i.mu must be held
	n    int
}

func newIncidents(rec *recorder, now func() time.Time) *incidents {
	return &incidents{rec: rec, now: now, byID: map[string]*Incident{}}
}

// open records a new incident. alert may be nil for a manual one.
func (i *incidents) open(ctx context.Context, classification, release, pool, summary string, alert *probe.Alert, containedAt *time.Time) (Incident, error) {
	i.mu.Lock()
	i.n++
	inc := &Incident{ID: fmt.Sprintf("INC-%d", i.n), Classification: classification, State: IncidentOpen,
		Release: release, Pool: pool, Summary: summary, DetectedAt: i.now().UTC()}
	if alert != nil {
		inc.FirstBadAt = alert.FirstBadAt.UTC()
		inc.DetectedAt = alert.RaisedAt.UTC()
		if containedAt != nil {
			inc.ContainedAt, inc.State = containedAt.UTC(), IncidentContained
		}
	}
	i.mu.Unlock()
	details := map[string]any{"classification": classification, "release": release, "pool": pool, "summary": summary}
	if alert != nil {
		details["first_bad_at"] = inc.FirstBadAt.Format(time.RFC3339Nano)
		details["reason"] = alert.Reason
	}
	if err := i.rec.Record(ctx, "incident.opened", "incident/"+inc.ID, details); err != nil {
		return Incident{}, err
	}
	i.mu.Lock()
	i.byID[inc.ID] = inc
	i.mu.Unlock()
	return *inc, nil
}

// update applies f to the incident and records the change.
func (i *incidents) update(ctx context.Context, id, typ string, details map[string]any, f func(*Incident)) (Incident, error) {
	i.mu.Lock()
	inc, ok := i.byID[id]
	if !ok {
		i.mu.Unlock()
		return Incident{}, fmt.Errorf("control: no incident %s", id)
	}
	cp := *inc
	i.mu.Unlock()
	f(&cp)
	if err := i.rec.Record(ctx, typ, "incident/"+id, details); err != nil {
		return Incident{}, err
	}
	i.mu.Lock()
	*inc = cp
	i.mu.Unlock()
	return cp, nil
}

func (i *incidents) get(id string) (Incident, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	inc, ok := i.byID[id]
	if !ok {
		return Incident{}, false
	}
	return *inc, true
}

func (i *incidents) list() []Incident {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]Incident, 0, len(i.byID))
	for _, inc := range i.byID {
		out = append(out, *inc)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].DetectedAt.Before(out[b].DetectedAt) })
	return out
}

// openFor reports an open incident for the release, if any.
func (i *incidents) openFor(release string) (Incident, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, inc := range i.byID {
		if inc.Release == release && inc.State != IncidentClosed {
			return *inc, true
		}
	}
	return Incident{}, false
}
