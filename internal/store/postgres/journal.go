package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

// AppendJournal commits record seq of a run with its audit event; see
// store.JournalStore. The audit head lock serialises appenders, so reading
// the run's next seq and inserting cannot race.
func (s *Store) AppendJournal(ctx context.Context, runID string, seq int64, rec []byte, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, idx int64) error {
		var next int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(seq) + 1, 0) FROM playbook_journal WHERE run_id = $1`, runID).Scan(&next); err != nil {
			return fmt.Errorf("postgres: read journal %s: %w", runID, err)
		}
		switch {
		case seq < next:
			return fmt.Errorf("postgres: journal %s record %d (run has %d): %w", runID, seq, next, store.ErrExists)
		case seq > next:
			return fmt.Errorf("postgres: journal %s record %d (run has %d): %w", runID, seq, next, store.ErrJournalGap)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO playbook_journal (run_id, seq, rec, audit_index) VALUES ($1, $2, $3, $4)`,
			runID, seq, nz(rec), idx); err != nil {
			return fmt.Errorf("postgres: append journal %s record %d: %w", runID, seq, err)
		}
		return nil
	})
}

// Journal returns a run's records in seq order.
func (s *Store) Journal(ctx context.Context, runID string) ([][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT rec FROM playbook_journal WHERE run_id = $1 ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("postgres: read journal %s: %w", runID, err)
	}
	recs, err := collect(rows, "journal "+runID, func(r pgx.Row) ([]byte, error) {
		var b []byte
		return b, r.Scan(&b)
	})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("postgres: journal %s: %w", runID, store.ErrNotFound)
	}
	return recs, nil
}

// Runs lists run IDs in the order they were started.
func (s *Store) Runs(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT run_id FROM playbook_journal WHERE seq = 0 ORDER BY audit_index`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list runs: %w", err)
	}
	return collect(rows, "runs", func(r pgx.Row) (string, error) {
		var id string
		return id, r.Scan(&id)
	})
}
