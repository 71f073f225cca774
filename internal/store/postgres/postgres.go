// Package postgres is the at-scale store backend on PostgreSQL (pgx/v5,
// pgxpool).
//
// Invariant: every transaction that appends audit events first locks the
// one-row audit_head table (SELECT ... FOR UPDATE) and advances it before
// commit. The row lock is held until commit, so writers across connections
// and processes are serialised, audit indexes are gap-free, and index order
// is commit order. Durability is the server's: with the default
// synchronous_commit=on a commit returns after the WAL is flushed.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/countersign/countersign/internal/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the embedded migrations of the PostgreSQL dialect.
func Migrations() ([]store.Migration, error) { return store.LoadMigrations(migrationFS, "migrations") }

// Store is a store.Store on a PostgreSQL database. Its tables live in the
// connection's search_path (set it with ?search_path=name in the URL).
type Store struct {
	pool *pgxpool.Pool
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://...), applies pending
// migrations if opts.Migrate, and refuses, with an error wrapping
// store.ErrSchema, a database outside opts' schema range.
func Open(ctx context.Context, url string, opts store.Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse URL: %w", err)
	}
	cfg.MaxConns = 8
	if opts.MaxConns > 0 {
		cfg.MaxConns = int32(opts.MaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	ms, err := Migrations()
	if err != nil {
		pool.Close()
		return nil, err
	}
	if _, err := store.PrepareSchema(ctx, migrator{s}, ms, opts); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Pool exposes the connection pool for tests and operator tooling.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Durability reports "postgres" and the server's synchronous_commit for
// this connection ("on": a commit is flushed to the server's disk before
// it returns). It implements store.DurabilityReporter.
func (s *Store) Durability(ctx context.Context) (backend, setting string, err error) {
	if err := s.pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&setting); err != nil {
		return "", "", fmt.Errorf("postgres: read synchronous_commit: %w", err)
	}
	return "postgres", setting, nil
}

// SchemaVersion reports the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) { return migrator{s}.Version(ctx) }

type migrator struct{ s *Store }

func (m migrator) Version(ctx context.Context) (int, error) {
	var exists bool
	if err := m.s.pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("postgres: read schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := m.s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("postgres: read schema version: %w", err)
	}
	return v, nil
}

func (m migrator) Apply(ctx context.Context, mig store.Migration) error {
	return pgx.BeginFunc(ctx, m.s.pool, func(tx pgx.Tx) error {
		// Serialise migrators of this schema (CREATE TABLE IF NOT EXISTS
		// alone races).
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('countersign.migrate.' || current_schema()))`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
			return err
		}
		if v >= mig.Version {
			return nil
		}
		if v != mig.Version-1 {
			return fmt.Errorf("database is at version %d, cannot apply %d", v, mig.Version)
		}
		if _, err := tx.Exec(ctx, mig.SQL); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			mig.Version, mig.Name, time.Now())
		return err
	})
}

// write runs fn in a transaction that holds the audit head: fn gets the
// next audit index and returns how many events it appended.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx, next int64) (int64, error)) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var next int64
		if err := tx.QueryRow(ctx, `SELECT next FROM audit_head FOR UPDATE`).Scan(&next); err != nil {
			return fmt.Errorf("postgres: lock audit head: %w", err)
		}
		n, err := fn(tx, next)
		if err != nil {
			return err
		}
		if n > 0 {
			if _, err := tx.Exec(ctx, `UPDATE audit_head SET next = $1`, next+n); err != nil {
				return fmt.Errorf("postgres: advance audit head: %w", err)
			}
		}
		return nil
	})
	return err
}

func micros(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nullTime stores a zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return micros(t)
}

// fromNullTime reads a nullable timestamptz; NULL is the zero time.
func fromNullTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// collect scans every row with scan and closes rows.
func collect[T any](rows pgx.Rows, what string, scan func(pgx.Row) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list %s: %w", what, err)
	}
	return out, nil
}

func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("postgres: read %s: %w", what, err)
}
