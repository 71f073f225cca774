package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Snapshot is an exported PostgreSQL snapshot: while it is held, other
// sessions (pg_dump --snapshot=ID, or SET TRANSACTION SNAPSHOT 'ID' in a
// REPEATABLE READ transaction) see the database exactly as it was when it
// was taken, while writers carry on.
type Snapshot struct {
	// ID is the pg_export_snapshot() identifier.
	ID string
	// AuditSize is the number of audit events visible in the snapshot.
	AuditSize int64

	conn *pgxpool.Conn
	tx   pgx.Tx
}

// Release ends the exporting transaction; the ID is invalid afterwards.
// Hold the snapshot until every consumer has started (pg_dump must have
// begun, or SET TRANSACTION SNAPSHOT must have run).
func (sn *Snapshot) Release(ctx context.Context) error {
	defer sn.conn.Release()
	if err := sn.tx.Rollback(ctx); err != nil {
		return fmt.Errorf("postgres: release snapshot %s: %w", sn.ID, err)
	}
	return nil
}

// ExportSnapshot opens a REPEATABLE READ READ ONLY transaction on a
// dedicated connection and exports its snapshot, for consistent dumps of
// the store under live writes (pg_dump --snapshot=ID ...).
func (s *Store) ExportSnapshot(ctx context.Context) (*Snapshot, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: export snapshot: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("postgres: export snapshot: %w", err)
	}
	sn := &Snapshot{conn: conn, tx: tx}
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&sn.ID); err != nil {
		_ = sn.Release(ctx)
		return nil, fmt.Errorf("postgres: export snapshot: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events`).Scan(&sn.AuditSize); err != nil {
		_ = sn.Release(ctx)
		return nil, fmt.Errorf("postgres: export snapshot: %w", err)
	}
	return sn, nil
}
