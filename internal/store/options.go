package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// SchemaVersion is the latest schema version this binary knows: every
// backend embeds migrations 1..SchemaVersion.
const SchemaVersion = 4

// The schema range a binary runs against unless its release declares
// another one (Options.SchemaMin/SchemaMax). A binary needs at least its own
// schema (its queries use its columns) and cannot vouch for a schema newer
// than it knows; a release that is known to run on a later, expanded schema
// declares a wider SchemaMax (docs/design/schema-migrations.md).
const (
	DefaultSchemaMin = SchemaVersion
	DefaultSchemaMax = SchemaVersion
)

// SQLite synchronous modes accepted in Options.Synchronous.
const (
	// SyncFull fsyncs the WAL on every commit: an accepted (committed)
	// signature survives power loss. The default.
	SyncFull = "FULL"
	// SyncNormal fsyncs only at WAL checkpoints: a commit survives a process
	// crash but the last transactions may be lost on power loss.
	SyncNormal = "NORMAL"
)

// DurabilityReporter is implemented by backends that can say what a
// committed write survives, so that a node and its benchmark report the
// mode they ran in.
type DurabilityReporter interface {
	// Durability returns the backend ("sqlite", "postgres") and its
	// durability setting as the database reports it ("FULL" or "NORMAL"
	// for SQLite's synchronous pragma, "on", "off", ... for PostgreSQL's
	// synchronous_commit).
	Durability(ctx context.Context) (backend, setting string, err error)
}

// AuditEntryReader is implemented by backends that can read the audit
// log's leaves alone: the Merkle integrator and fork checks need only the
// canonical entries, and reading the eight other columns of every event
// (AuditEvents) is most of their cost.
type AuditEntryReader interface {
	// AuditEntries returns the entries of the events with Index in
	// [from, from+n), ascending: entry i is event from+i's. It stops at
	// the first index that has no event, so fewer than n means the log
	// ends (or has a gap) there.
	AuditEntries(ctx context.Context, from, n int64) ([][]byte, error)
}

// Options configures how a backend opens a database. The zero value is
// valid: no migration, the default schema range, durable commits.
type Options struct {
	// Migrate applies pending migrations, each in its own transaction,
	// before the schema range is checked. Without it Open only checks.
	Migrate bool
	// SchemaMin and SchemaMax are the schema versions this release can run
	// against; zero means DefaultSchemaMin / DefaultSchemaMax.
	SchemaMin, SchemaMax int
	// Synchronous is SQLite's synchronous pragma: SyncFull (default) or
	// SyncNormal. PostgreSQL ignores it (its durability is the server's
	// synchronous_commit setting, on by default). A SQLite store URL sets
	// it with "?synchronous=NORMAL" (package db).
	Synchronous string
	// BusyTimeout is how long a SQLite writer waits for another process's
	// write lock before failing (default 10 s).
	BusyTimeout time.Duration
	// MaxConns caps the connection pool (default: SQLite 8, PostgreSQL 8).
	MaxConns int
	// Extra migrations follow the embedded ones (versions SchemaVersion+1,
	// +2, ...). Only drills use them, to stand in for a newer release's
	// expand migration ("irreversible-migration" scenario).
	Extra []Migration
	// Logger receives migration and open messages (default slog.Default()).
	Logger *slog.Logger
}

// Range returns the effective supported schema range.
func (o Options) Range() (lo, hi int) {
	lo, hi = o.SchemaMin, o.SchemaMax
	if lo == 0 {
		lo = DefaultSchemaMin
	}
	if hi == 0 {
		hi = DefaultSchemaMax
	}
	return lo, hi
}

// Log returns the configured logger or slog.Default().
func (o Options) Log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// SchemaError reports a database whose schema version is outside the range
// a binary can run against. It unwraps to ErrSchema.
type SchemaError struct {
	Database int // version found in the database (0: never migrated)
	Min, Max int // range this binary supports
	Known    int // latest version this binary can migrate to (SchemaVersion)
}

func (e *SchemaError) Error() string {
	var hint string
	switch {
	case e.Database < e.Min && e.Database <= e.Known && e.Min <= e.Known:
		hint = "run `countersign migrate` with this release to apply the pending migrations"
	case e.Database > e.Known:
		hint = "deploy a release that knows this schema, or declare a wider schema range for this release only if it is known to run on it; " +
			"never downgrade the schema: forward-fix instead (docs/design/schema-migrations.md)"
	default:
		hint = "deploy a release whose schema range includes this version, or forward-fix (docs/design/schema-migrations.md)"
	}
	return fmt.Sprintf("store: database schema version %d is outside this release's supported range [%d, %d] (binary knows up to %d): %s",
		e.Database, e.Min, e.Max, e.Known, hint)
}

func (e *SchemaError) Unwrap() error { return ErrSchema }

// CheckSchema returns a *SchemaError when version is outside opts' range.
func CheckSchema(version int, opts Options) error {
	lo, hi := opts.Range()
	if version < lo || version > hi {
		return &SchemaError{Database: version, Min: lo, Max: hi, Known: SchemaVersion}
	}
	return nil
}
