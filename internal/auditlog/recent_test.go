package auditlog

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

func TestRecentEntriesRuns(t *testing.T) {
	e := func(i int) []byte { return []byte(fmt.Sprint("entry-", i)) }
	r := NewRecentEntries(8)
	if _, ok := (*RecentEntries)(nil).take(0, 1); ok {
		t.Fatal("a nil RecentEntries held something")
	}
	r.Add([]int64{10, 11, 12}, [][]byte{e(10), e(11), e(12)})
	r.Add([]int64{13}, [][]byte{e(13)})
	if got, ok := r.take(11, 3); !ok || string(got[0]) != "entry-11" || string(got[2]) != "entry-13" {
		t.Fatalf("take(11, 3) = %q, %v", got, ok)
	}
	if _, ok := r.take(10, 1); ok {
		t.Fatal("index 10 still held after a take from 11 (integrated)")
	}
	if _, ok := r.take(11, 4); ok {
		t.Fatal("take past the end succeeded")
	}
	// A gap starts a new run: what came before is dropped, never spliced.
	r.Add([]int64{20, 21}, [][]byte{e(20), e(21)})
	if _, ok := r.take(13, 1); ok {
		t.Fatal("index 13 held after a run starting at 20")
	}
	if got, ok := r.take(20, 2); !ok || string(got[1]) != "entry-21" {
		t.Fatalf("take(20, 2) = %q, %v", got, ok)
	}
	// Out of order inside a call: each index lands only where it belongs.
	r.Add([]int64{22, 24, 23}, [][]byte{e(22), e(24), e(23)})
	if got, ok := r.take(23, 1); !ok || string(got[0]) != "entry-23" {
		t.Fatalf("take(23, 1) = %q, %v", got, ok)
	}
	if _, ok := r.take(22, 1); ok {
		t.Fatal("index 22 held though 24 broke the run after it")
	}
	// The bound drops the oldest.
	r.Add([]int64{30, 31, 32, 33, 34, 35, 36, 37, 38, 39}, [][]byte{e(30), e(31), e(32), e(33), e(34), e(35), e(36), e(37), e(38), e(39)})
	if _, ok := r.take(31, 1); ok {
		t.Fatal("more than max held")
	}
	if got, ok := r.take(32, 8); !ok || string(got[7]) != "entry-39" {
		t.Fatalf("take(32, 8) = %q, %v", got, ok)
	}
}

// entryReadCounter counts the store reads of audit entries the Integrator
// makes, to tell batches hashed from memory from batches read back.
type entryReadCounter struct {
	Store
	entryReads atomic.Int64
}

func (c *entryReadCounter) AuditEntries(ctx context.Context, from, n int64) ([][]byte, error) {
	c.entryReads.Add(1)
	return c.Store.(store.AuditEntryReader).AuditEntries(ctx, from, n)
}

// TestIntegratorHashesCommittedEntriesFromMemory runs the node's wiring:
// signature events committed through a store.Committer reach the
// Integrator through RecentEntries, other events (appended by others,
// breaking the run) are read from the store, and the tree is the one the
// store's events give, as CheckFork recomputes it from scratch.
func TestIntegratorHashesCommittedEntriesFromMemory(t *testing.T) {
	ctx := t.Context()
	l := newTestLog(t)
	recent := NewRecentEntries(0)
	cr := &entryReadCounter{Store: l.st}
	s, _ := testKey(t)
	in, err := NewIntegrator(cr, Config{Signer: s, HistoryPath: l.history, Now: fixedNow, Recent: recent, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewCommitter(ctx, l.st, store.CommitterConfig{Committed: recent.AddCommitted})
	defer c.Close()
	n := 0
	sign := func(k int) {
		t.Helper()
		ws := make([]store.SignatureWrite, k)
		for i := range ws {
			n++
			ev := testEvent(t, n)
			id := fmt.Sprintf("sig_%06d", n)
			ws[i] = store.SignatureWrite{Signature: store.Signature{ID: id, TenantID: "acme", IdempotencyKey: fmt.Sprint("k-", n), Signature: []byte{1}}, Event: ev}
		}
		_, errs := c.CommitAll(ctx, ws)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// A replay commits nothing: its event must not enter the run.
		if _, err := c.Commit(ctx, ws[0]); err != nil {
			t.Fatal(err)
		}
	}
	sign(200)
	in.IntegrateOnce(ctx)
	if got := cr.entryReads.Load(); got != 0 {
		t.Fatalf("%d store reads for events all committed here, want 0", got)
	}
	appendEvents(t, l.st, 100000, 3) // key operations and the like: not in the run
	sign(100)
	if _, err := in.IntegrateOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cr.entryReads.Load(); got == 0 {
		t.Fatal("events appended by another writer were not read from the store")
	}
	if size, _ := l.st.TreeSize(ctx); size != 303 {
		t.Fatalf("tree size %d, want 303", size)
	}
	if err := CheckFork(ctx, l.st, l.history); err != nil {
		t.Fatalf("the tree hashed from memory is not the store's: %v", err)
	}
}
