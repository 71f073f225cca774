package auditlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// memTree is an in-memory Reader for the pure hashing and proof code: a
// map of stored hashes filled by batchHasher, and a fixed checkpoint size.
// It stands in for the store only where the store is not under test.
type memTree struct {
	entries [][]byte
	hashes  map[int64][32]byte
}

func newMemTree(t testing.TB, entries [][]byte, batch int) *memTree {
	m := &memTree{entries: entries, hashes: map[int64][32]byte{}}
	ctx := context.Background()
	for from := 0; from < len(entries); from += batch {
		b, err := newBatchHasher(storeHashes(ctx, m), int64(from))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries[from:min(from+batch, len(entries))] {
			if err := b.add(tlog.RecordHash(e)); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range b.indexed() {
			m.hashes[h.Index] = h.Hash
		}
	}
	return m
}

func (m *memTree) AuditEvents(_ context.Context, from, n int64) ([]store.AuditEvent, error) {
	var out []store.AuditEvent
	for i := from; i < min(from+n, int64(len(m.entries))); i++ {
		out = append(out, store.AuditEvent{Index: i, Entry: m.entries[i]})
	}
	return out, nil
}

func (m *memTree) TreeHashes(_ context.Context, idx []int64) ([][32]byte, error) {
	out := make([][32]byte, len(idx))
	for i, x := range idx {
		h, ok := m.hashes[x]
		if !ok {
			return nil, fmt.Errorf("hash %d: %w", x, store.ErrNotFound)
		}
		out[i] = h
	}
	return out, nil
}

func (m *memTree) TreeSize(context.Context) (int64, error) { return int64(len(m.entries)), nil }

func (m *memTree) LatestCheckpoint(context.Context) (store.Checkpoint, error) {
	return store.Checkpoint{Size: int64(len(m.entries))}, nil
}

func randomEntries(r *rand.Rand, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"n":%d,"r":%d}`, i, r.Uint64())
	}
	return out
}

// checkProofs compares the server's proofs and roots for a tree of the
// entries against transparency-dev/merkle and a naive recursive MTH.
func checkProofs(t *testing.T, entries [][]byte, batch int, index, old int64) {
	t.Helper()
	ctx := context.Background()
	m := newMemTree(t, entries, batch)
	size := int64(len(entries))
	root, err := tlog.TreeHash(size, storeHashes(ctx, m))
	if err != nil {
		t.Fatal(err)
	}
	if want := mth(entries); string(root[:]) != string(want) {
		t.Fatalf("size %d batch %d: root %x, naive %x", size, batch, root, want)
	}
	p, err := ProveInclusion(ctx, m, index, size)
	if err != nil {
		t.Fatal(err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(entries[index])
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(index), uint64(size), leaf, hashBytes(p), root[:]); err != nil {
		t.Fatalf("inclusion %d in %d: %v", index, size, err)
	}
	cp, err := ProveConsistency(ctx, m, old, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(old), uint64(size), hashBytes(cp), mth(entries[:old]), root[:]); err != nil {
		t.Fatalf("consistency %d -> %d: %v", old, size, err)
	}
}

func hashBytes(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func TestProofsAgainstNaiveRandomSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 60 {
		size := 1 + r.IntN(3000)
		entries := randomEntries(r, size)
		batch := 1 + r.IntN(700)
		t.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(t *testing.T) {
			checkProofs(t, entries, batch, r.Int64N(int64(size)), r.Int64N(int64(size)+1))
		})
	}
}

func FuzzProofs(f *testing.F) {
	f.Add(uint16(1), uint16(0), uint16(0), uint16(1))
	f.Add(uint16(257), uint16(256), uint16(1), uint16(13))
	f.Add(uint16(1000), uint16(511), uint16(512), uint16(100))
	f.Fuzz(func(t *testing.T, size, index, old, batch uint16) {
		if size == 0 || size > 4000 || batch == 0 {
			t.Skip()
		}
		entries := randomEntries(rand.New(rand.NewPCG(uint64(size), 7)), int(size))
		checkProofs(t, entries, int(batch), int64(index)%int64(size), int64(old)%(int64(size)+1))
	})
}
