package sqlite

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// The committing connection no longer checkpoints every 1,000 frames: the
// background checkpointer copies the WAL back into the database while
// commits go on, and the automatic checkpoint is only a backstop.
func TestBackgroundCheckpointer(t *testing.T) {
	s := openTemp(t, store.Options{Migrate: true})
	ctx := t.Context()
	var auto int
	if err := s.db.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil {
		t.Fatal(err)
	}
	if auto != walAutocheckpoint {
		t.Fatalf("PRAGMA wal_autocheckpoint = %d, want the backstop %d", auto, walAutocheckpoint)
	}
	// ~40 rows per transaction, 60 transactions: well under the backstop's
	// 10,000 frames, so only the background loop checkpoints them.
	c := store.NewCommitter(ctx, s, store.CommitterConfig{})
	defer c.Close()
	for b := range 60 {
		ws := make([]store.SignatureWrite, 40)
		for i := range ws {
			key := fmt.Sprintf("b%d-%d", b, i)
			ws[i] = store.SignatureWrite{
				Signature: store.Signature{ID: key, TenantID: "t", IdempotencyKey: key, Signature: make([]byte, 72)},
				Event:     store.AuditEvent{Type: "signature.created", Subject: key, Entry: []byte(`{"k":"` + key + `"}`)}}
		}
		_, errs := c.CommitAll(ctx, ws)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.CheckpointStats().Frames == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no frames checkpointed in the background within 10s: %+v", s.CheckpointStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The main file now holds the rows: a copy of it alone, without the
	// WAL, reads them back (once no commit runs, the loop has copied all).
	deadline = time.Now().Add(10 * time.Second)
	for {
		r, err := s.checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Checkpointed == r.LogFrames {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL not fully checkpointed: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	cp := s.path + ".copy"
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Open(ctx, cp, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var n int
	if err := o.db.QueryRowContext(ctx, "SELECT count(*) FROM signatures").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 60*40 {
		t.Fatalf("the database file alone holds %d signatures, want %d", n, 60*40)
	}
}

// Close stops the loop; a store closed at once after opening does not
// leave it running.
func TestCheckpointerStopsOnClose(t *testing.T) {
	s, err := Open(t.Context(), t.TempDir()+"/c.db", store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.ckptDone:
	default:
		t.Fatal("checkpointer still running after Close")
	}
}
