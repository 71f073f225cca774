package sqlite

import (
	"fmt"
	"os"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// A FULL store commits signature batches on a NORMAL connection and
// fsyncs the WAL separately; every other write keeps FULL. A NORMAL store
// has nothing to defer.
func TestDeferredSyncConnections(t *testing.T) {
	ctx := t.Context()
	var _ store.DeferredSyncer = (*Store)(nil)
	s := openTemp(t, store.Options{Migrate: true})
	var sig, pool int
	if err := s.sigConn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sig); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&pool); err != nil {
		t.Fatal(err)
	}
	if sig != 1 || pool != 2 {
		t.Fatalf("synchronous: group commit connection %d, pool %d; want 1 (NORMAL) and 2 (FULL)", sig, pool)
	}
	if _, b, err := s.Durability(ctx); err != nil || b != store.SyncFull {
		t.Fatalf("Durability = %q, %v; want FULL (what an answered write survived)", b, err)
	}
	ws := []store.SignatureWrite{{
		Signature: store.Signature{ID: "sig_1", TenantID: "t", IdempotencyKey: "k1", Signature: []byte{1}},
		Event:     store.AuditEvent{Type: "signature.created", Subject: "sig_1", Entry: []byte(`{"k":"k1"}`)}}}
	rs, err := s.CommitSignaturesNoSync(ctx, ws)
	if err != nil || len(rs) != 1 || rs[0].Existing != nil {
		t.Fatalf("CommitSignaturesNoSync = %+v, %v", rs, err)
	}
	if err := s.SyncCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	// The fsynced file is the WAL the store writes.
	fi, err := os.Stat(s.path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.wal.Stat(); err != nil || !os.SameFile(st, fi) {
		t.Fatalf("fsynced %v, the WAL is %v (%v)", st, fi, err)
	}
	// A replay of the key finds the stored signature through the same path.
	rs, err = s.CommitSignaturesNoSync(ctx, ws)
	if err != nil || rs[0].Existing == nil || rs[0].Existing.ID != "sig_1" {
		t.Fatalf("replay = %+v, %v", rs, err)
	}
	if sg, err := s.SignatureByIdempotencyKey(ctx, "t", "k1"); err != nil || sg.ID != "sig_1" {
		t.Fatalf("SignatureByIdempotencyKey = %+v, %v", sg, err)
	}

	n := openTemp(t, store.Options{Migrate: true, Synchronous: store.SyncNormal})
	if n.sigConn != nil {
		t.Fatal("a NORMAL store opened a separate group commit connection")
	}
	if err := n.SyncCommitted(ctx); err != nil {
		t.Fatal(err)
	}
}

// The WAL handle follows the file: if the WAL is replaced under the store
// (never while its connections are open in practice), the next sync opens
// the new one rather than fsyncing a deleted file.
func TestDeferredSyncReopensReplacedWAL(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, store.Options{Migrate: true})
	if err := s.SyncCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	old := s.wal
	// Swap the path to a new inode with the same contents.
	b, err := os.ReadFile(s.path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	tmp := s.path + "-wal.new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.path+"-wal"); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	if s.wal == old {
		t.Fatal("SyncCommitted kept fsyncing the replaced WAL")
	}
}

// If the group commit's connection is gone, batches still commit, on the
// pool (durably), instead of failing until restart.
func TestDeferredSyncFallsBackWhenConnectionGone(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, store.Options{Migrate: true})
	s.sigConn.Close()
	ws := []store.SignatureWrite{{
		Signature: store.Signature{ID: "sig_2", TenantID: "t", IdempotencyKey: "k2", Signature: []byte{2}},
		Event:     store.AuditEvent{Type: "signature.created", Subject: "sig_2", Entry: []byte(`{"k":"k2"}`)}}}
	rs, err := s.CommitSignaturesNoSync(ctx, ws)
	if err != nil || len(rs) != 1 || rs[0].Existing != nil {
		t.Fatalf("CommitSignaturesNoSync on a closed connection = %+v, %v; want a commit on the pool", rs, err)
	}
	if err := s.SyncCommitted(ctx); err != nil {
		t.Fatal(err)
	}
	if sg, err := s.SignatureByIdempotencyKey(ctx, "t", "k2"); err != nil || sg.ID != "sig_2" {
		t.Fatalf("SignatureByIdempotencyKey = %+v, %v", sg, err)
	}
}

// SyncCommitted fsyncs only when something committed since its last fsync
// began, whichever connection or store (another process, in production)
// committed it: a reader that calls it per lookup does not fsync per lookup.
func TestSyncCommittedSkipsWhenNothingCommitted(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t, store.Options{Migrate: true})
	other, err := Open(ctx, s.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	n := 0
	commit := func(on *Store) {
		t.Helper()
		n++
		id, key := fmt.Sprintf("sig_%d", n), fmt.Sprintf("k%d", n)
		rs, err := on.CommitSignaturesNoSync(ctx, []store.SignatureWrite{{
			Signature: store.Signature{ID: id, TenantID: "t", IdempotencyKey: key, Signature: []byte{1}},
			Event:     store.AuditEvent{Type: "signature.created", Subject: id, Entry: []byte(`{"k":"` + key + `"}`)}}})
		if err != nil || len(rs) != 1 || rs[0].Existing != nil {
			t.Fatalf("commit %d: %+v, %v", n, rs, err)
		}
	}
	syncs := func(want int64, what string) {
		t.Helper()
		if err := s.SyncCommitted(ctx); err != nil {
			t.Fatal(err)
		}
		if got := s.walSyncs.Load(); got != want {
			t.Fatalf("%s: %d fsyncs so far, want %d", what, got, want)
		}
	}
	commit(s)
	syncs(1, "after a commit")
	syncs(1, "nothing committed since")
	for i := range 100 {
		if _, err := s.SignatureByIdempotencyKey(ctx, "t", "k1"); err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	syncs(1, "after 100 lookups and no commit")
	commit(s)
	syncs(2, "after a commit on this store")
	commit(other)
	syncs(3, "after a commit by another store on the same file")
	// A checkpoint that lets the next writer restart the WAL: the header's
	// salts change with the restart, so the commit after it is seen too.
	if _, err := s.db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	commit(other)
	syncs(4, "after a WAL restart and a commit")
	syncs(4, "nothing committed since")
}
