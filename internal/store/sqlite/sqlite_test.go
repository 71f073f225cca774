package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/storetest"
)

func openTemp(t *testing.T, opts store.Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "countersign.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t, store.Options{Migrate: true}) })
}

func TestConformanceDB(t *testing.T) {
	storetest.RunDB(t, func(t *testing.T) storetest.DB {
		path := filepath.Join(t.TempDir(), "countersign.db")
		return storetest.DB{
			Open: func(ctx context.Context, opts store.Options) (store.Store, error) { return Open(ctx, path, opts) },
			Exec: func(ctx context.Context, q string) error {
				s, err := Open(ctx, path, store.Options{SchemaMax: 1 << 20})
				if err != nil {
					return err
				}
				defer s.Close()
				_, err = s.db.ExecContext(ctx, q)
				return err
			},
			RecordVersion: "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, 'newer', 0)",
		}
	})
}

// TestTwoHandles opens the same file twice, as two node processes do, and
// commits from both at once: indexes must stay gap-free across handles.
func TestTwoHandles(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "shared.db")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(ctx, path, store.Options{Migrate: true, Synchronous: store.SyncNormal})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	const per = 60
	var wg sync.WaitGroup
	for h, s := range stores {
		c := store.NewCommitter(ctx, s, store.CommitterConfig{})
		for g := range 4 {
			wg.Go(func() {
				for i := range per {
					key := fmt.Sprintf("h%d-g%d-%d", h, g, i)
					ev := store.AuditEvent{Type: "signature.created", Subject: key, Entry: []byte(`{"k":"` + key + `"}`)}
					if _, err := c.Commit(ctx, store.SignatureWrite{Signature: store.Signature{ID: key, TenantID: "t", IdempotencyKey: key}, Event: ev}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		t.Cleanup(func() { c.Close() })
	}
	wg.Wait()
	total := int64(2 * 4 * per)
	evs, err := stores[0].AuditEvents(ctx, 0, total+1)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(evs)) != total {
		t.Fatalf("got %d events, want %d", len(evs), total)
	}
	for i, ev := range evs {
		if ev.Index != int64(i) {
			t.Fatalf("event %d has index %d", i, ev.Index)
		}
		sg, err := stores[1].Signature(ctx, "t", ev.Subject)
		if err != nil || sg.AuditIndex != ev.Index {
			t.Fatalf("event %d (%s): signature %+v, %v", i, ev.Subject, sg.AuditIndex, err)
		}
	}
}

func TestOpenOptions(t *testing.T) {
	tests := []struct {
		name string
		path string
		opts store.Options
		ok   bool
	}{
		{"full", "a.db", store.Options{Migrate: true, Synchronous: "full"}, true},
		{"normal", "b.db", store.Options{Migrate: true, Synchronous: store.SyncNormal}, true},
		{"off refused", "c.db", store.Options{Migrate: true, Synchronous: "OFF"}, false},
		{"query in path refused", "d.db?mode=memory", store.Options{Migrate: true}, false},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), filepath.Join(dir, tc.path), tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("Open: err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				s.Close()
			}
		})
	}
}

func TestSynchronousApplied(t *testing.T) {
	for _, tc := range []struct {
		sync string
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{"", 2}, {store.SyncNormal, 1}} {
		s := openTemp(t, store.Options{Migrate: true, Synchronous: tc.sync})
		var got int
		var mode string
		if err := s.db.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := s.db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if got != tc.want || mode != "wal" {
			t.Errorf("synchronous %q: PRAGMA synchronous = %d, journal_mode = %s; want %d, wal", tc.sync, got, mode, tc.want)
		}
	}
}

func TestBackup(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, store.Options{Migrate: true})
	if _, err := s.AppendEvents(ctx, []store.AuditEvent{{Type: "x", Entry: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "backup.db")
	if err := s.Backup(ctx, dest); err != nil {
		t.Fatal(err)
	}
	if err := s.Backup(ctx, dest); !errors.Is(err, ErrBackupExists) {
		t.Errorf("second Backup to the same path: %v, want ErrBackupExists", err)
	}
	b, err := Open(ctx, dest, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n, err := b.AuditSize(ctx); err != nil || n != 1 {
		t.Errorf("backup AuditSize = %d, %v; want 1", n, err)
	}
	// A corrupt copy fails verification.
	bad := filepath.Join(t.TempDir(), "bad.db")
	raw, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(raw) && i < 4096*3; i++ {
		raw[i] ^= 0x5a
	}
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := verifyCopy(ctx, bad); err == nil {
		t.Error("verifyCopy accepted a corrupted file")
	}
}
