package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
	"github.com/countersign/countersign/internal/store/storetest"
)

func openTest(t testing.TB, opts store.Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.SchemaURL(t, "cs_test"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, store.Options{Migrate: true}) })
}

func TestConformanceDB(t *testing.T) {
	storetest.RunDB(t, func(t *testing.T) storetest.DB {
		u := pgtest.SchemaURL(t, "cs_test")
		return storetest.DB{
			Open: func(ctx context.Context, opts store.Options) (store.Store, error) { return Open(ctx, u, opts) },
			Exec: func(ctx context.Context, q string) error {
				c, err := pgx.Connect(ctx, u)
				if err != nil {
					return err
				}
				defer c.Close(ctx)
				_, err = c.Exec(ctx, q)
				return err
			},
			RecordVersion: "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%d, 'newer', now())",
		}
	})
}

func TestExportSnapshot(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, store.Options{Migrate: true})
	ev := store.AuditEvent{Type: "x", Entry: []byte("{}")}
	if _, err := s.AppendEvents(ctx, []store.AuditEvent{ev, ev}); err != nil {
		t.Fatal(err)
	}
	sn, err := s.ExportSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sn.ID == "" || sn.AuditSize != 2 {
		t.Fatalf("snapshot = %q with AuditSize %d, want an ID and 2", sn.ID, sn.AuditSize)
	}
	if _, err := s.AppendEvents(ctx, []store.AuditEvent{ev}); err != nil {
		t.Fatal(err)
	}
	// Another session importing the snapshot sees the state at export.
	var n int64
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", sn.ID)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT count(*) FROM audit_events").Scan(&n)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("count in imported snapshot = %d, want 2", n)
	}
	if err := sn.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if size, _ := s.AuditSize(ctx); size != 3 {
		t.Errorf("AuditSize = %d, want 3", size)
	}
}

// TestTwoPools commits from two pools at once, as two node processes do.
func TestTwoPools(t *testing.T) {
	ctx := t.Context()
	u := pgtest.SchemaURL(t, "cs_test")
	var stores [2]*Store
	for i := range stores {
		s, err := Open(ctx, u, store.Options{Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	done := make(chan error)
	const per = 50
	for h, s := range stores {
		go func() {
			c := store.NewCommitter(ctx, s, store.CommitterConfig{})
			defer c.Close()
			errs := make(chan error, 4)
			for g := range 4 {
				go func() {
					for i := range per {
						key := fmt.Sprintf("h%d-g%d-%d", h, g, i)
						w := store.SignatureWrite{Signature: store.Signature{ID: key, TenantID: "t", IdempotencyKey: key},
							Event: store.AuditEvent{Type: "signature.created", Subject: key, Entry: []byte(key)}}
						if _, err := c.Commit(ctx, w); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			var first error
			for range 4 {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			done <- first
		}()
	}
	for range stores {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	evs, err := stores[0].AuditEvents(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2*4*per {
		t.Fatalf("got %d events, want %d", len(evs), 2*4*per)
	}
	for i, ev := range evs {
		sg, err := stores[1].Signature(ctx, "t", ev.Subject)
		if ev.Index != int64(i) || err != nil || sg.AuditIndex != ev.Index {
			t.Fatalf("event %d: index %d, signature %d, %v", i, ev.Index, sg.AuditIndex, err)
		}
	}
}

func TestDurability(t *testing.T) {
	s := openTest(t, store.Options{Migrate: true})
	backend, setting, err := s.Durability(t.Context())
	if err != nil || backend != "postgres" || setting == "" {
		t.Errorf("Durability = %q, %q, %v; want postgres and the server's synchronous_commit", backend, setting, err)
	}
}
