package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Incident states, in the only order an incident moves through them.
const (
	IncidentOpen      = "open"
	IncidentContained = "contained"
	IncidentRestored  = "restored"
	IncidentClosed    = "closed"
)

// ErrIncidentState is returned for an unknown incident state, a backward
// move, or any change to a closed incident.
var ErrIncidentState = errors.New("store: invalid incident state change")

// Incident is an incident record.
type Incident struct {
	ID             string
	Classification string // e.g. "signature-corruption", "availability", "performance"
	State          string // IncidentOpen | IncidentContained | IncidentRestored | IncidentClosed
	Release        string // the suspected release
	Commander      string
	Summary        string
	OpenedAt       time.Time
	UpdatedAt      time.Time
	ClosedAt       time.Time // zero until closed
	Details        []byte    // JSON
}

// IncidentStore persists incidents; each write commits with its audit event.
type IncidentStore interface {
	// CreateIncident inserts inc (State must be IncidentOpen or empty);
	// ErrExists if the ID is taken.
	CreateIncident(ctx context.Context, inc Incident, ev AuditEvent) error
	// UpdateIncident replaces every field but ID and OpenedAt. The state may
	// stay or move forward (open → contained → restored → closed, skipping
	// allowed); a backward move or a change to a closed incident is
	// ErrIncidentState. A zero UpdatedAt becomes ev.Time; closing with a zero
	// ClosedAt sets it to UpdatedAt.
	UpdateIncident(ctx context.Context, inc Incident, ev AuditEvent) error
	Incident(ctx context.Context, id string) (Incident, error)
	// Incidents lists incidents oldest first; openOnly leaves out closed ones.
	Incidents(ctx context.Context, openOnly bool) ([]Incident, error)
}

func incidentRank(state string) int {
	switch state {
	case IncidentOpen:
		return 1
	case IncidentContained:
		return 2
	case IncidentRestored:
		return 3
	case IncidentClosed:
		return 4
	}
	return 0
}

// CheckNewIncident validates inc before CreateIncident and returns it with
// defaults filled: State open, UpdatedAt OpenedAt.
func CheckNewIncident(inc Incident) (Incident, error) {
	if inc.State == "" {
		inc.State = IncidentOpen
	}
	if inc.State != IncidentOpen {
		return Incident{}, fmt.Errorf("%w: a new incident must be %s, not %q", ErrIncidentState, IncidentOpen, inc.State)
	}
	if inc.ID == "" {
		return Incident{}, errors.New("store: incident needs an ID")
	}
	if inc.UpdatedAt.IsZero() {
		inc.UpdatedAt = inc.OpenedAt
	}
	return inc, nil
}

// CheckIncidentUpdate validates moving an incident from state from to
// next's state and returns next with its defaults filled.
func CheckIncidentUpdate(from string, next Incident, now time.Time) (Incident, error) {
	to := incidentRank(next.State)
	switch {
	case to == 0:
		return Incident{}, fmt.Errorf("%w: unknown state %q", ErrIncidentState, next.State)
	case from == IncidentClosed:
		return Incident{}, fmt.Errorf("%w: incident %s is closed", ErrIncidentState, next.ID)
	case to < incidentRank(from):
		return Incident{}, fmt.Errorf("%w: incident %s cannot move back from %s to %s", ErrIncidentState, next.ID, from, next.State)
	}
	if next.UpdatedAt.IsZero() {
		next.UpdatedAt = now
	}
	if next.State == IncidentClosed && next.ClosedAt.IsZero() {
		next.ClosedAt = next.UpdatedAt
	}
	if next.State != IncidentClosed {
		next.ClosedAt = time.Time{}
	}
	return next, nil
}
