package store

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one versioned schema change. Files are named
// NNNN_description.sql; versions start at 1 and have no gaps.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads the *.sql files of dir in fsys (a backend's embedded
// migrations) and checks that they are numbered 1..SchemaVersion.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("store: read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration file %q is not named NNNN_description.sql", e.Name())
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("store: read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("store: migrations are not numbered 1..n: found %d at position %d", m.Version, i+1)
		}
	}
	if len(ms) != SchemaVersion {
		return nil, fmt.Errorf("store: %d migrations embedded, binary declares schema version %d", len(ms), SchemaVersion)
	}
	return ms, nil
}

// Migrator is what a backend provides for PrepareSchema.
type Migrator interface {
	// Version is the highest applied migration (0 for a new database).
	Version(ctx context.Context) (int, error)
	// Apply runs m and records it in one transaction, holding a lock that
	// serialises concurrent migrators; it does nothing if m is already
	// applied.
	Apply(ctx context.Context, m Migration) error
}

// PrepareSchema applies pending migrations when opts.Migrate is set, then
// checks the database's version against opts' range. It returns the
// database version. A database newer than the binary is never migrated
// (there are no down migrations).
func PrepareSchema(ctx context.Context, mg Migrator, ms []Migration, opts Options) (int, error) {
	v, err := mg.Version(ctx)
	if err != nil {
		return 0, err
	}
	for i, m := range opts.Extra {
		if m.Version != len(ms)+1 {
			return 0, fmt.Errorf("store: extra migration %d (%s) must be version %d", m.Version, m.Name, len(ms)+1)
		}
		ms = append(ms[:len(ms):len(ms)], opts.Extra[i])
	}
	if opts.Migrate && v < len(ms) {
		for _, m := range ms[v:] {
			opts.Log().InfoContext(ctx, "store: applying migration", "version", m.Version, "name", m.Name)
			if err := mg.Apply(ctx, m); err != nil {
				return 0, fmt.Errorf("store: migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if v, err = mg.Version(ctx); err != nil {
			return 0, err
		}
	}
	if err := CheckSchema(v, opts); err != nil {
		return v, err
	}
	return v, nil
}
