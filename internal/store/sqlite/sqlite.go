// Package sqlite is the embedded store backend: one SQLite file in WAL mode
// (modernc.org/sqlite, pure Go), which several node processes may open at
// once.
//
// Invariant: every write runs in a BEGIN IMMEDIATE transaction, which holds
// the database's single write lock from its first statement to its commit,
// across processes; audit indexes are read (MAX(idx)+1) and written under
// that lock, so they are gap-free and in commit order. With the default
// synchronous=FULL a commit returns only after the WAL is fsynced: a write
// reported as committed survives power loss.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the embedded migrations of the SQLite dialect.
func Migrations() ([]store.Migration, error) { return store.LoadMigrations(migrationFS, "migrations") }

// Store is a store.Store on one SQLite file.
type Store struct {
	db   *sql.DB
	path string
	// wmu serialises this process's writers so they queue in Go instead of
	// sleeping in SQLite's busy handler; other processes are serialised by
	// the IMMEDIATE lock itself.
	wmu   sync.Mutex
	stmts *stmtCache

	// Deferred sync (deferred.go): the group commit's connection, with
	// synchronous=NORMAL, and the WAL file it fsyncs; nil when the store
	// itself runs NORMAL.
	sigConn *sql.Conn
	walMu   sync.Mutex
	wal     *os.File
	// SyncCommitted's record of the WAL-index header read before its last
	// fsync (syncedHdrOK false: none), the -shm file it reads it from, and
	// how many fsyncs it made (tests). Guarded by walMu, but walSyncs.
	shm         *os.File
	syncedHdr   [walIndexHeaderSize]byte
	syncedHdrOK bool
	walSyncs    atomic.Int64

	// The background checkpointer (checkpoint.go).
	stopCkpt context.CancelFunc
	ckptDone chan struct{}
	ckpt     struct{ runs, frames atomic.Uint64 }
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path, applies
// pending migrations if opts.Migrate, and refuses, with an error wrapping
// store.ErrSchema, a database outside opts' schema range.
func Open(ctx context.Context, path string, opts store.Options) (*Store, error) {
	dsn, sync, err := dsn(path, opts)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	n := opts.MaxConns
	if n <= 0 {
		n = 8
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	s := &Store{db: db, path: path, stmts: newStmtCache(db)}
	if err := s.prepare(ctx, opts); err != nil {
		s.Close()
		return nil, err
	}
	if sync == store.SyncFull {
		if err := s.openSigConn(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopCkpt, s.ckptDone = cancel, make(chan struct{})
	go s.runCheckpoints(cctx, s.ckptDone)
	return s, nil
}

// dsn returns the driver's data source name for path and opts, and the
// synchronous mode it sets (store.SyncFull or store.SyncNormal).
func dsn(path string, opts store.Options) (dsn, sync string, err error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return "", "", fmt.Errorf("sqlite: invalid database path %q", path)
	}
	sync = strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = store.SyncFull
	case store.SyncFull, store.SyncNormal:
	default:
		return "", "", fmt.Errorf("sqlite: synchronous must be %s or %s, not %q", store.SyncFull, store.SyncNormal, opts.Synchronous)
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(1)")
	// Multi-row inserts keep a statement journal; in memory it costs no
	// temporary file and no write syscalls on the group commit's path.
	q.Add("_pragma", "temp_store(MEMORY)")
	// Checkpoints run in the background (checkpoint.go); this is the
	// backstop on the committing connection.
	q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walAutocheckpoint))
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode(), sync, nil
}

func (s *Store) prepare(ctx context.Context, opts store.Options) error {
	ms, err := Migrations()
	if err != nil {
		return err
	}
	if _, err := store.PrepareSchema(ctx, migrator{s}, ms, opts); err != nil {
		return fmt.Errorf("sqlite: %s: %w", s.path, err)
	}
	return nil
}

// Close stops the background checkpointer, closes the prepared statements
// and the database (the last connection to close checkpoints the WAL).
func (s *Store) Close() error {
	if s.stopCkpt != nil {
		s.stopCkpt()
		<-s.ckptDone
	}
	s.stmts.close()
	s.closeSigConn()
	return s.db.Close()
}

// Ping checks that the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Durability reports "sqlite" and the synchronous mode commits run under,
// as the database reports it: FULL (a commit survives power loss) or NORMAL
// (it survives a crash of the process, but the last commits may be lost
// on power loss). It implements store.DurabilityReporter.
func (s *Store) Durability(ctx context.Context) (backend, setting string, err error) {
	var n int
	if err := s.queryRow(ctx, "PRAGMA synchronous").Scan(&n); err != nil {
		return "", "", fmt.Errorf("sqlite: read synchronous: %w", err)
	}
	names := map[int]string{0: "OFF", 1: store.SyncNormal, 2: store.SyncFull, 3: "EXTRA"}
	if name, ok := names[n]; ok {
		return "sqlite", name, nil
	}
	return "sqlite", fmt.Sprint(n), nil
}

// SchemaVersion reports the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) { return migrator{s}.Version(ctx) }

// DB exposes the underlying handle for tests and operator tooling.
func (s *Store) DB() *sql.DB { return s.db }

type migrator struct{ s *Store }

func (m migrator) Version(ctx context.Context) (int, error) {
	var n int
	err := m.s.db.QueryRowContext(ctx,
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	var v int
	if err := m.s.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlite: read schema version: %w", err)
	}
	return v, nil
}

func (m migrator) Apply(ctx context.Context, mig store.Migration) error {
	return m.s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
			return err
		}
		if v >= mig.Version {
			return nil // applied by a concurrent migrator
		}
		if v != mig.Version-1 {
			return fmt.Errorf("database is at version %d, cannot apply %d", v, mig.Version)
		}
		if _, err := tx.ExecContext(ctx, mig.SQL); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			mig.Version, mig.Name, time.Now().UnixMicro())
		return err
	})
}

// txContext is the context the hot write paths (group commit, event
// appends, tree hashes) run their transaction under: ctx's values without
// its cancellation, once ctx is checked to be live. Under a cancellable
// context the driver starts a watcher goroutine (and installs a progress
// handler) for every statement, and database/sql one more goroutine per
// transaction: goroutine starts and wake-ups on every group commit, for a
// cancellation nothing here needs. Such a transaction is short, and waits
// for another process's lock at most BusyTimeout, so it runs to its end
// once begun.
func txContext(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// write runs fn in one IMMEDIATE transaction and commits it.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.writeOn(ctx, s.db.BeginTx, fn)
}

// writeOn is write in a transaction begun by begin.
func (s *Store) writeOn(ctx context.Context, begin func(context.Context, *sql.TxOptions) (*sql.Tx, error), fn func(tx *sql.Tx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := begin(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("sqlite: rollback: %w", err)
	}
	return nil
}

func micros(t time.Time) int64     { return t.UnixMicro() }
func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

// nullMicros stores a zero time as NULL.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromNullMicros reads a nullable time column; NULL is the zero time.
func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}
