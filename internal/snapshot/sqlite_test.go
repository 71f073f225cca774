package snapshot

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "cs.db"),
		store.Options{Migrate: true, Synchronous: store.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestSQLiteSnapshotUnderWrites takes a snapshot while a writer commits
// signatures through the store, then checks that the stored copy passes
// integrity_check and holds a consistent prefix: audit indexes 0..n-1 with
// no gap, every signature with its event and none past n.
func TestSQLiteSnapshotUnderWrites(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	next := 0
	for range 20 {
		batch := make([]store.SignatureWrite, 50)
		for i := range batch {
			batch[i] = sigWrite(t, next)
			next++
		}
		if _, err := st.CommitSignatures(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		committed atomic.Int64
		werr      error
	)
	wg.Go(func() {
		for i := next; !stop.Load(); i += 5 {
			batch := make([]store.SignatureWrite, 5)
			for j := range batch {
				batch[j] = sigWrite(t, i+j)
			}
			if _, err := st.CommitSignatures(ctx, batch); err != nil {
				werr = err
				return
			}
			committed.Add(5)
		}
	})
	for committed.Load() < 50 { // the writer is running before the snapshot starts
		time.Sleep(time.Millisecond)
	}
	d := newDir(t)
	start := time.Now()
	m, _, err := Take(ctx, Config{Store: d, IncidentID: "inc-1", Parts: []Part{SQLite{Store: st, TempDir: t.TempDir()}, Audit{Store: st}}})
	took := time.Since(start)
	during := committed.Load()
	stop.Store(true)
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, d, m.ObjectName()); err != nil {
		t.Fatal(err)
	}
	ref, _ := m.Part("store.sqlite")
	t.Logf("snapshot of %d bytes in %v; writer committed %d signatures by the end of Take", ref.Size, took, during)

	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, readObject(t, d, ref.Object), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+copyPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	var n, maxIdx, sigs, sigEvents, sigMax int64
	if err := db.QueryRow("SELECT COUNT(*), COALESCE(MAX(idx), -1) FROM audit_events").Scan(&n, &maxIdx); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*), COALESCE(MAX(audit_index), -1) FROM signatures").Scan(&sigs, &sigMax); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM audit_events e JOIN signatures s ON s.audit_index = e.idx AND s.id = e.subject WHERE e.type = 'signature.created'").Scan(&sigEvents); err != nil {
		t.Fatal(err)
	}
	if maxIdx != n-1 {
		t.Errorf("audit indexes have a gap: %d events, max index %d", n, maxIdx)
	}
	if sigs != n || sigEvents != n || sigMax != n-1 {
		t.Errorf("inconsistent copy: %d events, %d signatures (max audit index %d), %d matched pairs", n, sigs, sigMax, sigEvents)
	}
	if n < 1000 {
		t.Errorf("copy has %d events, want at least the 1000 committed before the snapshot", n)
	}
	if got := ref.Meta["audit_size"]; got != n {
		t.Errorf("manifest audit_size = %v, copy has %d", got, n)
	}
	if ref.Meta["schema_version"] != int64(store.SchemaVersion) || ref.Meta["integrity_check"] != "ok" {
		t.Errorf("meta = %v", ref.Meta)
	}
	final, _ := st.AuditSize(ctx)
	t.Logf("copy holds %d events; the store had %d when the writer stopped", n, final)
}

func TestSQLiteSnapshotTwiceLeavesNoCopies(t *testing.T) {
	st := openSQLite(t)
	tmp := t.TempDir()
	// Backup refuses an existing destination; the part uses a fresh
	// private directory each time, so two snapshots in a row both work.
	d := newDir(t)
	for range 2 {
		if _, _, err := Take(context.Background(), Config{Store: d, Parts: []Part{SQLite{Store: st, TempDir: tmp}}}); err != nil {
			t.Fatal(err)
		}
	}
	left, _ := os.ReadDir(tmp)
	if len(left) != 0 {
		t.Errorf("temporary copies left: %d", len(left))
	}
}
