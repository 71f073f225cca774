package sqlite

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// TestExtraMigrationGatesOlderReleases is the irreversible-migration drill
// in miniature: a newer release applies an expand migration, after which a
// release declaring only the older schema is refused, with the versions in
// the error.
func TestExtraMigrationGatesOlderReleases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "countersign.db")
	s, err := Open(t.Context(), path, store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	next := store.SchemaVersion + 1
	extra := []store.Migration{{Version: next, Name: "expand", SQL: "CREATE TABLE expansion (id INTEGER PRIMARY KEY)"}}
	s, err = Open(t.Context(), path, store.Options{Migrate: true, Extra: extra, SchemaMin: next, SchemaMax: next})
	if err != nil {
		t.Fatalf("open with the extra migration: %v", err)
	}
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != next {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, next)
	}
	s.Close()
	_, err = Open(t.Context(), path, store.Options{})
	var se *store.SchemaError
	if !errors.As(err, &se) || se.Database != next || se.Max != store.SchemaVersion {
		t.Fatalf("older release opened the expanded database: %v", err)
	}
	if _, err := Open(t.Context(), path, store.Options{Migrate: true, Extra: []store.Migration{{Version: next + 5, Name: "gap"}}, SchemaMax: next}); err == nil {
		t.Errorf("an extra migration with a gap in versions was accepted")
	}
}
