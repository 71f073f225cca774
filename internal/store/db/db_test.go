package db

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in, kind, target string
		wantErr          bool
	}{
		{"sqlite:/var/lib/countersign/cs.db", KindSQLite, "/var/lib/countersign/cs.db", false},
		{"sqlite:data/cs.db", KindSQLite, "data/cs.db", false},
		{"/tmp/cs.db", KindSQLite, "/tmp/cs.db", false},
		{"cs.db", KindSQLite, "cs.db", false},
		{"postgres://u:p@h/db?sslmode=disable", KindPostgres, "postgres://u:p@h/db?sslmode=disable", false},
		{"postgresql://h/db", KindPostgres, "postgresql://h/db", false},
		{"", "", "", true},
		{"sqlite:", "", "", true},
		{"sqlite:///tmp/x.db", "", "", true},
		{"mysql://h/db", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			kind, target, err := Parse(tc.in)
			if (err != nil) != tc.wantErr || kind != tc.kind || target != tc.target {
				t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q, error %v", tc.in, kind, target, err, tc.kind, tc.target, tc.wantErr)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	in := "postgres://app:s3cret@db.internal:5432/cs?sslmode=require"
	if got := Redact(in); strings.Contains(got, "s3cret") || !strings.Contains(got, "db.internal") {
		t.Errorf("Redact = %q", got)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("open", "store", URL(in))
	if strings.Contains(buf.String(), "s3cret") {
		t.Errorf("log line leaks the password: %s", buf.String())
	}
	if _, err := Open(t.Context(), "mysql://app:s3cret@h/db", store.Options{}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open error %v: want an error without the password", err)
	}
}

func TestOpenSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cs.db")
	s, err := Open(t.Context(), "sqlite:"+path, store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*sqlite.Store); !ok {
		t.Errorf("Open(sqlite:) = %T, want *sqlite.Store", s)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file not created: %v", err)
	}
}

func TestOpenPostgres(t *testing.T) {
	u := os.Getenv("COUNTERSIGN_TEST_POSTGRES")
	if u == "" {
		u = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	// Without Migrate nothing is written: a fresh database is refused.
	s, err := Open(t.Context(), u+"&search_path=cs_db_open_test_absent", store.Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open of an unmigrated schema succeeded")
	}
	if strings.Contains(err.Error(), "connect") || strings.Contains(err.Error(), "ping") {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL test server unreachable: %v", err)
		}
		t.Skipf("PostgreSQL test server unreachable, skipping (CI=true makes this fail): %v", err)
	}
	var se *store.SchemaError
	if !errors.As(err, &se) {
		t.Fatalf("Open: %v, want a SchemaError", err)
	}
}

func TestSQLiteSynchronousOption(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ query, want string }{
		{"", store.SyncFull},
		{"?synchronous=NORMAL", store.SyncNormal},
		{"?synchronous=normal", store.SyncNormal},
		{"?synchronous=FULL", store.SyncFull},
	} {
		t.Run(tc.query, func(t *testing.T) {
			s, err := Open(t.Context(), "sqlite:"+filepath.Join(dir, "cs.db")+tc.query, store.Options{Migrate: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			backend, setting, err := s.(store.DurabilityReporter).Durability(t.Context())
			if err != nil || backend != "sqlite" || setting != tc.want {
				t.Errorf("Durability = %q, %q, %v; want sqlite, %s", backend, setting, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"?synchronous=OFF", "?synchronous=FULL&synchronous=NORMAL", "?journal_mode=DELETE", "?%zz"} {
		if s, err := Open(t.Context(), "sqlite:"+filepath.Join(dir, "cs.db")+bad, store.Options{}); err == nil {
			s.Close()
			t.Errorf("Open with %q succeeded, want an error", bad)
		}
	}
	if _, target, err := Parse("sqlite:data/cs.db?synchronous=NORMAL"); err != nil || target != "data/cs.db?synchronous=NORMAL" {
		t.Errorf("Parse kept %q, %v; want the options with the path", target, err)
	}
}
