package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // "sqlite" driver, to read the copy's metadata
)

// SQLiteBackuper is what the SQLite part needs from the store
// (*sqlite.Store): a consistent copy of the database at destPath, made with
// VACUUM INTO and checked with PRAGMA integrity_check, never overwriting.
type SQLiteBackuper interface {
	Backup(ctx context.Context, destPath string) error
}

// SQLite snapshots the embedded store: the store writes a VACUUM INTO copy
// (the state of one read transaction; writers are not blocked) into a
// private temporary directory and checks its integrity, and the copy is
// then streamed into the snapshot. Its metadata (schema version, audit
// size, signature count) is read from the copy itself, so it describes
// exactly the bytes stored.
type SQLite struct {
	Store SQLiteBackuper
	// TempDir holds the copy while it is streamed; it needs room for one
	// copy of the database (default os.TempDir()).
	TempDir string
	// PartName defaults to "store.sqlite".
	PartName string
}

// Name implements Part.
func (p SQLite) Name() string { return orDefault(p.PartName, "store.sqlite") }

// Kind implements Part.
func (p SQLite) Kind() string { return KindSQLite }

// Write implements Part.
func (p SQLite) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	dir, err := os.MkdirTemp(p.TempDir, "countersign-snapshot-")
	if err != nil {
		return nil, fmt.Errorf("sqlite copy: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "store.db")
	if err := p.Store.Backup(ctx, path); err != nil {
		return nil, err
	}
	meta, err := sqliteMeta(ctx, path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite copy: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, ctxReader{ctx, f}); err != nil {
		return nil, fmt.Errorf("sqlite copy: %w", err)
	}
	return meta, nil
}

// sqliteMeta reads a copy's schema version and sizes, read-only.
func sqliteMeta(ctx context.Context, path string) (map[string]any, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, fmt.Errorf("sqlite copy: %w", err)
	}
	defer db.Close()
	var schema, auditSize, sigs int64
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&schema); err != nil {
		return nil, fmt.Errorf("sqlite copy: schema version: %w", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events").Scan(&auditSize); err != nil {
		return nil, fmt.Errorf("sqlite copy: audit size: %w", err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM signatures").Scan(&sigs); err != nil {
		return nil, fmt.Errorf("sqlite copy: signatures: %w", err)
	}
	return map[string]any{
		"method":          "VACUUM INTO",
		"integrity_check": "ok",
		"schema_version":  schema,
		"audit_size":      auditSize,
		"signatures":      sigs,
	}, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
