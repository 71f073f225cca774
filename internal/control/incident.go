package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/probe"
	"github.com/countersign/countersign/internal/store"
)

// Incident states move forward only (the store refuses a backward move).
const (
	IncidentOpen      = store.IncidentOpen
	IncidentContained = store.IncidentContained
	IncidentRestored  = store.IncidentRestored
	IncidentClosed    = store.IncidentClosed
)

// ErrNoIncident is returned for an incident ID the store does not hold.
var ErrNoIncident = errors.New("control: no such incident")

// Incident is what the control plane knows of an incident. It is stored
// (store.IncidentStore) with every change committed together with its audit
// event ("incident.*"), so it survives restarts of the control plane.
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
	ClosedAt       time.Time `json:"closed_at,omitzero"`
	RunID          string    `json:"run_id,omitempty"`
	// RunState is the state of the incident's playbook run when listed
	// (e.g. "paused" after a step needs an operator); not stored.
	RunState string `json:"run_state,omitempty"`

	runParams map[string]string // the parameters RunID was started with
}

// incidentDetails are the Incident fields kept in store.Incident.Details.
type incidentDetails struct {
	Pool        string            `json:"pool,omitempty"`
	FirstBadAt  time.Time         `json:"first_bad_at,omitzero"`
	DetectedAt  time.Time         `json:"detected_at"`
	ContainedAt time.Time         `json:"contained_at,omitzero"`
	RestoredAt  time.Time         `json:"restored_at,omitzero"`
	RunID       string            `json:"run_id,omitempty"`
	RunParams   map[string]string `json:"run_params,omitempty"`
}

func (inc Incident) record() (store.Incident, error) {
	d, err := json.Marshal(incidentDetails{Pool: inc.Pool, FirstBadAt: inc.FirstBadAt, DetectedAt: inc.DetectedAt,
		ContainedAt: inc.ContainedAt, RestoredAt: inc.RestoredAt, RunID: inc.RunID, RunParams: inc.runParams})
	if err != nil {
		return store.Incident{}, err
	}
	return store.Incident{ID: inc.ID, Classification: inc.Classification, State: inc.State, Release: inc.Release,
		Commander: inc.Commander, Summary: inc.Summary, OpenedAt: inc.DetectedAt, ClosedAt: inc.ClosedAt, Details: d}, nil
}

func fromRecord(r store.Incident) (Incident, error) {
	var d incidentDetails
	if len(r.Details) > 0 {
		if err := json.Unmarshal(r.Details, &d); err != nil {
			return Incident{}, fmt.Errorf("control: incident %s details: %w", r.ID, err)
		}
	}
	if d.DetectedAt.IsZero() {
		d.DetectedAt = r.OpenedAt
	}
	return Incident{ID: r.ID, Classification: r.Classification, State: r.State, Release: r.Release, Pool: d.Pool,
		Commander: r.Commander, Summary: r.Summary, FirstBadAt: d.FirstBadAt, DetectedAt: d.DetectedAt,
		ContainedAt: d.ContainedAt, RestoredAt: d.RestoredAt, ClosedAt: r.ClosedAt, RunID: d.RunID, runParams: d.RunParams}, nil
}

// incidents is the durable incident register. The store is the only copy;
// mu serialises this process's writers so an update reads what the previous
// one wrote (another process writing the same incident is caught by the
// store's forward-only state check).
type incidents struct {
	st  store.IncidentStore
	rec *recorder
	now func() time.Time

	mu sync.Mutex
}

func newIncidents(st store.IncidentStore, rec *recorder, now func() time.Time) *incidents {
	return &incidents{st: st, rec: rec, now: now}
}

// nextIDLocked returns INC-<n> with n one more than any stored incident's.
// i.mu must be held.
func (i *incidents) nextIDLocked(ctx context.Context) (string, error) {
	all, err := i.st.Incidents(ctx, false)
	if err != nil {
		return "", err
	}
	n := 0
	for _, inc := range all {
		if k, err := strconv.Atoi(strings.TrimPrefix(inc.ID, "INC-")); err == nil && k > n {
			n = k
		}
	}
	return fmt.Sprintf("INC-%d", n+1), nil
}

// open records a new incident. alert may be nil for a manual one.
func (i *incidents) open(ctx context.Context, classification, release, pool, summary string, alert *probe.Alert, containedAt *time.Time) (Incident, error) {
	inc := Incident{Classification: classification, State: IncidentOpen, Release: release, Pool: pool, Summary: summary,
		DetectedAt: i.now().UTC()}
	details := map[string]any{"classification": classification, "release": release, "pool": pool, "summary": summary}
	if alert != nil {
		inc.FirstBadAt = alert.FirstBadAt.UTC()
		inc.DetectedAt = alert.RaisedAt.UTC()
		details["first_bad_at"] = inc.FirstBadAt.Format(time.RFC3339Nano)
		details["reason"] = alert.Reason
	}
	if containedAt != nil {
		// Containment happened before the record could be written; the
		// state moves on in a second, separately audited change.
		details["contained_at"] = containedAt.UTC().Format(time.RFC3339Nano)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for range 5 {
		id, err := i.nextIDLocked(ctx)
		if err != nil {
			return Incident{}, err
		}
		inc.ID = id
		rec, err := inc.record()
		if err != nil {
			return Incident{}, err
		}
		ev, err := i.rec.event(ctx, "incident.opened", "incident/"+id, details)
		if err != nil {
			return Incident{}, err
		}
		err = i.st.CreateIncident(ctx, rec, ev)
		if errors.Is(err, store.ErrExists) {
			continue // another control process took the ID
		}
		if err != nil {
			return Incident{}, fmt.Errorf("control: open incident: %w", err)
		}
		i.rec.note(TimelineEntry{Time: ev.Time, Kind: ev.Type, Subject: ev.Subject, Details: details})
		if containedAt == nil {
			return inc, nil
		}
		t := containedAt.UTC()
		return i.updateLocked(ctx, id, "incident.contained", map[string]any{"contained_at": t.Format(time.RFC3339Nano)},
			func(x *Incident) { x.ContainedAt, x.State = t, IncidentContained })
	}
	return Incident{}, errors.New("control: open incident: could not allocate an ID")
}

// update applies f to the stored incident and commits the result with an
// audit event of type typ.
func (i *incidents) update(ctx context.Context, id, typ string, details map[string]any, f func(*Incident)) (Incident, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.updateLocked(ctx, id, typ, details, f)
}

// updateLocked is update; i.mu must be held.
func (i *incidents) updateLocked(ctx context.Context, id, typ string, details map[string]any, f func(*Incident)) (Incident, error) {
	inc, err := i.get(ctx, id)
	if err != nil {
		return Incident{}, err
	}
	f(&inc)
	rec, err := inc.record()
	if err != nil {
		return Incident{}, err
	}
	ev, err := i.rec.event(ctx, typ, "incident/"+id, details)
	if err != nil {
		return Incident{}, err
	}
	rec.UpdatedAt = ev.Time
	if err := i.st.UpdateIncident(ctx, rec, ev); err != nil {
		return Incident{}, fmt.Errorf("control: %s %s: %w", typ, id, err)
	}
	i.rec.note(TimelineEntry{Time: ev.Time, Kind: typ, Subject: ev.Subject, Details: details})
	return inc, nil
}

func (i *incidents) get(ctx context.Context, id string) (Incident, error) {
	r, err := i.st.Incident(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Incident{}, fmt.Errorf("%w: %s", ErrNoIncident, id)
	}
	if err != nil {
		return Incident{}, err
	}
	return fromRecord(r)
}

// list returns every incident, oldest first.
func (i *incidents) list(ctx context.Context) ([]Incident, error) {
	rs, err := i.st.Incidents(ctx, false)
	if err != nil {
		return nil, err
	}
	out := make([]Incident, 0, len(rs))
	for _, r := range rs {
		inc, err := fromRecord(r)
		if err != nil {
			return nil, err
		}
		out = append(out, inc)
	}
	return out, nil
}

// openFor reports an unclosed incident for the release, if any.
func (i *incidents) openFor(ctx context.Context, release string) (Incident, bool, error) {
	rs, err := i.st.Incidents(ctx, true)
	if err != nil {
		return Incident{}, false, err
	}
	for _, r := range rs {
		if r.Release == release {
			inc, err := fromRecord(r)
			return inc, err == nil, err
		}
	}
	return Incident{}, false, nil
}
