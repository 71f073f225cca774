package auditlog

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	_ "modernc.org/sqlite"
)

// attacker opens the database behind the store's back, as someone with
// file access would, and drops the append-only triggers.
func attacker(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, q := range []string{`DROP TRIGGER IF EXISTS audit_events_no_update`, `DROP TRIGGER IF EXISTS audit_events_no_delete`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func TestTamperDetected(t *testing.T) {
	ctx := context.Background()
	flip := func(b []byte, i int) []byte {
		b = append([]byte(nil), b...)
		b[i] ^= 0x01
		return b
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB, l *testLog)
	}{
		{"one byte of a leaf entry", func(t *testing.T, db *sql.DB, l *testLog) {
			mustExec(t, db, `UPDATE audit_events SET entry = ? WHERE idx = 300`, flip(testEvent(t, 300).Entry, 40))
		}},
		{"one byte of a leaf hash", func(t *testing.T, db *sql.DB, l *testLog) {
			var h []byte
			idx := tlog.StoredHashIndex(0, 300)
			if err := db.QueryRow(`SELECT hash FROM tree_hashes WHERE idx = ?`, idx).Scan(&h); err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `UPDATE tree_hashes SET hash = ? WHERE idx = ?`, flip(h, 0), idx)
		}},
		{"one byte of an interior hash", func(t *testing.T, db *sql.DB, l *testLog) {
			var h []byte
			idx := tlog.StoredHashIndex(8, 1)
			if err := db.QueryRow(`SELECT hash FROM tree_hashes WHERE idx = ?`, idx).Scan(&h); err != nil {
				t.Fatal(err)
			}
			mustExec(t, db, `UPDATE tree_hashes SET hash = ? WHERE idx = ?`, flip(h, 31), idx)
		}},
		{"dropped row", func(t *testing.T, db *sql.DB, l *testLog) {
			mustExec(t, db, `DELETE FROM audit_events WHERE idx = 301`)
		}},
		{"two rows reordered", func(t *testing.T, db *sql.DB, l *testLog) {
			mustExec(t, db, `UPDATE audit_events SET entry = ? WHERE idx = 100`, testEvent(t, 101).Entry)
			mustExec(t, db, `UPDATE audit_events SET entry = ? WHERE idx = 101`, testEvent(t, 100).Entry)
		}},
		{"every hash recomputed after a change", func(t *testing.T, db *sql.DB, l *testLog) {
			// A careful attacker changes an event and rebuilds the whole tree.
			mustExec(t, db, `UPDATE audit_events SET entry = ? WHERE idx = 5`, flip(testEvent(t, 5).Entry, 40))
			mustExec(t, db, `DELETE FROM tree_hashes`)
			mustExec(t, db, `UPDATE tree_state SET size = 0`)
			rebuild(t, l)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t)
			appendEvents(t, l.st, 0, 600)
			l.integrate(t)
			if _, err := Verify(ctx, StoreSource{R: l.st}, l.vkey, VerifyOptions{}); err != nil {
				t.Fatalf("verify before tampering: %v", err)
			}
			tc.tamper(t, attacker(t, l.db), l)

			_, err := Verify(ctx, StoreSource{R: l.st}, l.vkey, VerifyOptions{})
			if !errors.Is(err, ErrVerify) && !errors.Is(err, ErrGap) {
				t.Errorf("Verify after tampering: %v, want ErrVerify or ErrGap", err)
			}
			var fe *ForkError
			if err := CheckFork(ctx, l.st, l.history); !errors.As(err, &fe) {
				t.Errorf("CheckFork after tampering: %v, want *ForkError", err)
			} else {
				t.Logf("CheckFork: %v", fe)
			}
		})
	}
}

// rebuild re-integrates the whole tree and signs it with another key,
// keeping its history elsewhere: the forged tree is self-consistent.
func rebuild(t *testing.T, l *testLog) {
	t.Helper()
	s, _ := otherTestKey(t)
	in, err := NewIntegrator(l.st, Config{Signer: s, HistoryPath: filepath.Join(t.TempDir(), "forged.log")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.IntegrateOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestRestoredOlderDatabaseIsAFork(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	appendEvents(t, l.st, 0, 300)
	old := l.integrate(t)
	backup := filepath.Join(t.TempDir(), "backup.db")
	mustExec(t, attacker(t, l.db), `VACUUM INTO ?`, backup)
	appendEvents(t, l.st, 300, 300)
	cur := l.integrate(t)

	// Restore the backup under the same data dir's history.
	restored := openSQLite(t, backup)
	var fe *ForkError
	if err := CheckFork(ctx, restored, l.history); !errors.As(err, &fe) {
		t.Fatalf("CheckFork on the restored copy: %v, want *ForkError", err)
	}
	if fe.RecordedSize != cur.Size || fe.StoreSize != old.Size {
		t.Errorf("ForkError sizes: recorded %d store %d, want %d and %d", fe.RecordedSize, fe.StoreSize, cur.Size, old.Size)
	}
	t.Logf("%v", fe)
	s, _ := testKey(t)
	in, err := NewIntegrator(restored, Config{Signer: s, HistoryPath: l.history})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, restored, 1000, 400) // new, different events past the old size
	if _, err := in.IntegrateOnce(ctx); !errors.As(err, &fe) {
		t.Fatalf("IntegrateOnce on the restored copy: %v, want *ForkError", err)
	}
	// Integrated by someone without the history, the copy now has more
	// entries than the recorded checkpoint but a different tree.
	forger, err := NewIntegrator(restored, Config{Signer: s, HistoryPath: filepath.Join(t.TempDir(), "other.log")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forger.IntegrateOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := CheckFork(ctx, restored, l.history); !errors.As(err, &fe) {
		t.Fatalf("CheckFork on the forked copy: %v, want *ForkError", err)
	}
	t.Logf("%v", fe)
	// A verifier holding the newer checkpoint sees the fork too.
	if _, err := Verify(ctx, StoreSource{R: restored}, l.vkey, VerifyOptions{Since: cur.Note}); !errors.Is(err, ErrVerify) {
		t.Fatalf("Verify --since on the forked copy: %v, want ErrVerify", err)
	}
}
