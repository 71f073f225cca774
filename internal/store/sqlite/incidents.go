package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/countersign/countersign/internal/store"
)

const incidentColumns = `id, classification, state, release, commander, summary, opened_at, updated_at, closed_at, details`

const selectIncidentSQL = `SELECT ` + incidentColumns + ` FROM incidents`

func scanIncident(r rowScanner) (store.Incident, error) {
	var inc store.Incident
	var opened, updated int64
	var closed sql.NullInt64
	if err := r.Scan(&inc.ID, &inc.Classification, &inc.State, &inc.Release, &inc.Commander, &inc.Summary,
		&opened, &updated, &closed, &inc.Details); err != nil {
		return store.Incident{}, err
	}
	inc.OpenedAt, inc.UpdatedAt, inc.ClosedAt = fromMicros(opened), fromMicros(updated), fromNullMicros(closed)
	return inc, nil
}

// CreateIncident inserts an open incident and its audit event.
func (s *Store) CreateIncident(ctx context.Context, inc store.Incident, ev store.AuditEvent) error {
	inc, err := store.CheckNewIncident(inc)
	if err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
		return insertNew(ctx, tx, "incident "+inc.ID, `INSERT INTO incidents (`+incidentColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			inc.ID, inc.Classification, inc.State, inc.Release, inc.Commander, inc.Summary,
			micros(inc.OpenedAt), micros(inc.UpdatedAt), nullMicros(inc.ClosedAt), nz(inc.Details))
	})
}

// UpdateIncident moves an incident forward with its audit event.
func (s *Store) UpdateIncident(ctx context.Context, inc store.Incident, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
		var cur string
		if err := s.txQueryRow(ctx, tx, `SELECT state FROM incidents WHERE id = ?`, inc.ID).Scan(&cur); err != nil {
			return notFound(err, "incident "+inc.ID)
		}
		next, err := store.CheckIncidentUpdate(cur, inc, ev.Time)
		if err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `UPDATE incidents SET classification = ?, state = ?, release = ?, commander = ?,
			summary = ?, updated_at = ?, closed_at = ?, details = ? WHERE id = ?`,
			next.Classification, next.State, next.Release, next.Commander, next.Summary,
			micros(next.UpdatedAt), nullMicros(next.ClosedAt), nz(next.Details), next.ID); err != nil {
			return fmt.Errorf("sqlite: update incident %s: %w", inc.ID, err)
		}
		return nil
	})
}

// Incident returns one incident.
func (s *Store) Incident(ctx context.Context, id string) (store.Incident, error) {
	inc, err := scanIncident(s.queryRow(ctx, selectIncidentSQL+` WHERE id = ?`, id))
	if err != nil {
		return store.Incident{}, notFound(err, "incident "+id)
	}
	return inc, nil
}

// Incidents lists incidents oldest first, optionally only unclosed ones.
func (s *Store) Incidents(ctx context.Context, openOnly bool) ([]store.Incident, error) {
	q := selectIncidentSQL + ` ORDER BY opened_at, id`
	if openOnly {
		q = selectIncidentSQL + ` WHERE state <> 'closed' ORDER BY opened_at, id`
	}
	rows, err := s.query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list incidents: %w", err)
	}
	return collect(rows, "incidents", scanIncident)
}
