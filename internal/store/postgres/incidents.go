package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

const incidentColumns = `id, classification, state, release, commander, summary, opened_at, updated_at, closed_at, details`

const selectIncidentSQL = `SELECT ` + incidentColumns + ` FROM incidents`

func scanIncident(r pgx.Row) (store.Incident, error) {
	var inc store.Incident
	var closed *time.Time
	if err := r.Scan(&inc.ID, &inc.Classification, &inc.State, &inc.Release, &inc.Commander, &inc.Summary,
		&inc.OpenedAt, &inc.UpdatedAt, &closed, &inc.Details); err != nil {
		return store.Incident{}, err
	}
	inc.OpenedAt, inc.UpdatedAt, inc.ClosedAt = inc.OpenedAt.UTC(), inc.UpdatedAt.UTC(), fromNullTime(closed)
	return inc, nil
}

// CreateIncident inserts an open incident and its audit event.
func (s *Store) CreateIncident(ctx context.Context, inc store.Incident, ev store.AuditEvent) error {
	inc, err := store.CheckNewIncident(inc)
	if err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		return insertNew(ctx, tx, "incident "+inc.ID, `INSERT INTO incidents (`+incidentColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
			inc.ID, inc.Classification, inc.State, inc.Release, inc.Commander, inc.Summary,
			micros(inc.OpenedAt), micros(inc.UpdatedAt), nullTime(inc.ClosedAt), nz(inc.Details))
	})
}

// UpdateIncident moves an incident forward with its audit event.
func (s *Store) UpdateIncident(ctx context.Context, inc store.Incident, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		var cur string
		if err := tx.QueryRow(ctx, `SELECT state FROM incidents WHERE id = $1 FOR UPDATE`, inc.ID).Scan(&cur); err != nil {
			return notFound(err, "incident "+inc.ID)
		}
		next, err := store.CheckIncidentUpdate(cur, inc, ev.Time)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE incidents SET classification = $1, state = $2, release = $3, commander = $4,
			summary = $5, updated_at = $6, closed_at = $7, details = $8 WHERE id = $9`,
			next.Classification, next.State, next.Release, next.Commander, next.Summary,
			micros(next.UpdatedAt), nullTime(next.ClosedAt), nz(next.Details), next.ID); err != nil {
			return fmt.Errorf("postgres: update incident %s: %w", inc.ID, err)
		}
		return nil
	})
}

// Incident returns one incident.
func (s *Store) Incident(ctx context.Context, id string) (store.Incident, error) {
	inc, err := scanIncident(s.pool.QueryRow(ctx, selectIncidentSQL+` WHERE id = $1`, id))
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
	rows, err := s.pool.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("postgres: list incidents: %w", err)
	}
	return collect(rows, "incidents", scanIncident)
}
