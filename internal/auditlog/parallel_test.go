package auditlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestRecheckChunkingFindsFirstMismatch: however the fork check splits the
// tree into chunks (and so across workers), it reports the same, first,
// mismatch.
func TestRecheckChunkingFindsFirstMismatch(t *testing.T) {
	ctx := context.Background()
	const size = 3000
	setHash := func(t *testing.T, db *sql.DB, level int, n int64) {
		var h []byte
		idx := tlog.StoredHashIndex(level, n)
		if err := db.QueryRow(`SELECT hash FROM tree_hashes WHERE idx = ?`, idx).Scan(&h); err != nil {
			t.Fatal(err)
		}
		h[0] ^= 1
		mustExec(t, db, `UPDATE tree_hashes SET hash = ? WHERE idx = ?`, h, idx)
	}
	setEntry := func(t *testing.T, db *sql.DB, i int) {
		e := testEvent(t, i).Entry
		e[40] ^= 1
		mustExec(t, db, `UPDATE audit_events SET entry = ? WHERE idx = ?`, e, i)
	}
	for _, tc := range []struct {
		name     string
		tamper   func(t *testing.T, db *sql.DB)
		wantLeaf int64
	}{
		{"leaf entry late in the log", func(t *testing.T, db *sql.DB) { setEntry(t, db, 2100) }, 2100},
		{"interior hash", func(t *testing.T, db *sql.DB) { setHash(t, db, 8, 5) }, 5 << 8},
		{"dropped event", func(t *testing.T, db *sql.DB) { mustExec(t, db, `DELETE FROM audit_events WHERE idx = 2500`) }, 2500},
		{"two changes, the earlier reported", func(t *testing.T, db *sql.DB) {
			setEntry(t, db, 2600)
			setHash(t, db, 0, 700)
		}, 700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t)
			appendEvents(t, l.st, 0, size)
			l.integrate(t)
			if err := recheckTree(ctx, l.st, size, 256); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tc.tamper(t, attacker(t, l.db))
			var want *treeMismatch
			for _, chunk := range []int64{1 << 20, 1000, 256, 100, 7} {
				var got *treeMismatch
				if err := recheckTree(ctx, l.st, size, chunk); !errors.As(err, &got) {
					t.Fatalf("chunk %d: %v, want a *treeMismatch", chunk, err)
				}
				if want == nil {
					want = got
				}
				if got.leaf != tc.wantLeaf || got.msg != want.msg {
					t.Errorf("chunk %d: mismatch at %d (%s), want %d (%s)", chunk, got.leaf, got.msg, tc.wantLeaf, want.msg)
				}
			}
			var fe *ForkError
			if err := CheckFork(ctx, l.st, l.history); !errors.As(err, &fe) || fe.Index != tc.wantLeaf {
				t.Errorf("CheckFork: %v, want a *ForkError at index %d", err, tc.wantLeaf)
			}
		})
	}
}

// countingReader counts the reads that reach the tree.
type countingReader struct {
	m     *memTree
	reads int
}

func (c *countingReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	c.reads++
	return storeHashes(context.Background(), c.m).ReadHashes(idx)
}

// TestBatchHasherFrontier: the frontier read up front is every earlier
// hash a batch needs, and the batch's hashes are the tree's.
func TestBatchHasherFrontier(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	m := newMemTree(t, randomEntries(r, 6000), 6000)
	for range 200 {
		start := r.Int64N(5400)
		n := 1 + r.Int64N(600)
		t.Run(fmt.Sprintf("start=%d/n=%d", start, n), func(t *testing.T) {
			c := &countingReader{m: m}
			b, err := newBatchHasher(c, start)
			if err != nil {
				t.Fatal(err)
			}
			frontierReads := c.reads
			for i := start; i < start+n; i++ {
				if err := b.add(tlog.RecordHash(m.entries[i])); err != nil {
					t.Fatal(err)
				}
			}
			if c.reads != frontierReads {
				t.Errorf("%d reads after the frontier read, want none", c.reads-frontierReads)
			}
			for _, h := range b.indexed() {
				if m.hashes[h.Index] != h.Hash {
					t.Fatalf("hash at storage index %d differs from the tree's", h.Index)
				}
			}
		})
	}
}

// TestVerifyReportsLowestBadBundle: bundles are checked in parallel, and
// the error names the first bad entry of the log, not whichever worker
// failed first.
func TestVerifyReportsLowestBadBundle(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	appendEvents(t, l.st, 0, 1500) // 5 full bundles and a partial one
	l.integrate(t)
	dir := t.TempDir()
	if _, err := Export(ctx, StoreSource{R: l.st}, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, DirSource(dir), l.vkey, VerifyOptions{}); err != nil {
		t.Fatalf("verify the export: %v", err)
	}
	for _, n := range []int64{4, 2, 5} {
		bt, _ := tileFor(1500, entriesLevel, n)
		p := filepath.Join(dir, filepath.FromSlash(tilePath(bt)))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-5] ^= 1 // inside the bundle's last entry
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		_, err := Verify(ctx, DirSource(dir), l.vkey, VerifyOptions{})
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Index != 2*tileWidth+tileWidth-1 {
			t.Fatalf("Verify: %v, want a *VerifyError at entry %d", err, 2*tileWidth+tileWidth-1)
		}
	}
}
