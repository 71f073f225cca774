package auditlog

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// TileHeight is the C2SP tlog-tiles tile height: 2^8 = 256 hashes per tile.
const TileHeight = 8

// tileWidth is the number of hashes in a full tile.
const tileWidth = 1 << TileHeight

// Reader is the read side of package store the log serves tiles, entries,
// checkpoints and proofs from.
type Reader interface {
	AuditEvents(ctx context.Context, from, n int64) ([]store.AuditEvent, error)
	TreeHashes(ctx context.Context, indexes []int64) ([][32]byte, error)
	TreeSize(ctx context.Context) (int64, error)
	LatestCheckpoint(ctx context.Context) (store.Checkpoint, error)
}

// Store is what the Integrator needs from package store: the reader plus
// the committed size and the two writes of tree state.
type Store interface {
	Reader
	AuditSize(ctx context.Context) (int64, error)
	PutTreeHashes(ctx context.Context, treeSize int64, hashes []store.IndexedHash) error
	PutCheckpoint(ctx context.Context, c store.Checkpoint) error
}

// storeHashes adapts the store's stored tree hashes to a tlog.HashReader.
func storeHashes(ctx context.Context, r Reader) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		if len(idx) == 0 {
			return nil, nil
		}
		hs, err := r.TreeHashes(ctx, idx)
		if err != nil {
			return nil, fmt.Errorf("auditlog: read tree hashes: %w", err)
		}
		if len(hs) != len(idx) {
			return nil, fmt.Errorf("auditlog: store returned %d tree hashes for %d indexes", len(hs), len(idx))
		}
		out := make([]tlog.Hash, len(hs))
		for i, h := range hs {
			out[i] = tlog.Hash(h)
		}
		return out, nil
	})
}

// gapError is a missing or misplaced audit event. It unwraps to ErrGap.
type gapError struct {
	index int64 // the first index that is wrong
	msg   string
}

func (e *gapError) Error() string { return ErrGap.Error() + ": " + e.msg }
func (e *gapError) Unwrap() error { return ErrGap }

// readEntries returns the entries (the Merkle leaves) of events
// [from, from+n) and checks the store returned exactly those: a missing or
// misplaced row is a *gapError naming the first index that is wrong. A
// store that implements store.AuditEntryReader is asked for the entries
// alone, which is most of what integration and fork checks cost.
func readEntries(ctx context.Context, r Reader, from, n int64) ([][]byte, error) {
	er, ok := r.(store.AuditEntryReader)
	if !ok {
		evs, err := readEvents(ctx, r, from, n)
		if err != nil {
			return nil, err
		}
		entries := make([][]byte, len(evs))
		for i := range evs {
			entries[i] = evs[i].Entry
		}
		return entries, nil
	}
	entries, err := er.AuditEntries(ctx, from, n)
	if err != nil {
		return nil, fmt.Errorf("auditlog: read audit entries [%d, %d): %w", from, from+n, err)
	}
	if int64(len(entries)) != n {
		at := from + int64(len(entries))
		return nil, &gapError{index: at, msg: fmt.Sprintf("audit event %d is missing or out of place (the store's entries are not contiguous from there)", at)}
	}
	return entries, nil
}

// readEvents returns events [from, from+n) and checks the store returned
// exactly those indexes, in order: a missing or misplaced row is a
// *gapError naming the first index that is wrong.
func readEvents(ctx context.Context, r Reader, from, n int64) ([]store.AuditEvent, error) {
	evs, err := r.AuditEvents(ctx, from, n)
	if err != nil {
		return nil, fmt.Errorf("auditlog: read audit events [%d, %d): %w", from, from+n, err)
	}
	for i, ev := range evs {
		if want := from + int64(i); ev.Index != want {
			return nil, &gapError{index: want, msg: fmt.Sprintf("audit event %d is missing or out of place (store returned index %d in its position)", want, ev.Index)}
		}
	}
	if int64(len(evs)) != n {
		at := from + int64(len(evs))
		return nil, &gapError{index: at, msg: fmt.Sprintf("audit event %d is missing (store returned %d of %d events from %d)", at, len(evs), n, from)}
	}
	return evs, nil
}

// batchHasher computes the stored hashes (tlog storage order) of new leaves
// appended at index start, reading earlier hashes from base. Hashes of the
// batch itself are served from memory, and the few base hashes on the
// tree's right edge are cached, so a batch costs one store read or so.
type batchHasher struct {
	base   tlog.HashReader
	start  int64
	first  int64 // tlog.StoredHashIndex(0, start)
	hashes []tlog.Hash
	count  int64 // leaves added
	cache  map[int64]tlog.Hash
}

// newBatchHasher returns a hasher for leaves appended at start. It reads
// the batch's frontier, the roots of the complete subtrees left of start
// (all the earlier hashes the batch can need), in one read.
func newBatchHasher(base tlog.HashReader, start int64) (*batchHasher, error) {
	b := &batchHasher{base: base, start: start, first: tlog.StoredHashIndex(0, start), cache: map[int64]tlog.Hash{}}
	idx := frontier(start)
	if len(idx) == 0 {
		return b, nil
	}
	hs, err := base.ReadHashes(idx)
	if err != nil {
		return nil, err
	}
	if len(hs) != len(idx) {
		return nil, fmt.Errorf("auditlog: read %d frontier hashes, got %d", len(idx), len(hs))
	}
	for i, x := range idx {
		b.cache[x] = hs[i]
	}
	return b, nil
}

// frontier returns the storage indexes of the roots of the maximal
// complete subtrees that make up leaves [0, n), left to right: one per set
// bit of n.
func frontier(n int64) []int64 {
	var out []int64
	var start int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			out = append(out, tlog.StoredHashIndex(level, start>>level))
			start += 1 << level
		}
	}
	return out
}

// ReadHashes implements tlog.HashReader.
func (b *batchHasher) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	var miss []int64
	var missAt []int
	for i, x := range idx {
		switch {
		case x >= b.first && x < b.first+int64(len(b.hashes)):
			out[i] = b.hashes[x-b.first]
		case x >= b.first:
			return nil, fmt.Errorf("auditlog: hash %d requested before it was computed", x)
		default:
			if h, ok := b.cache[x]; ok {
				out[i] = h
				continue
			}
			miss = append(miss, x)
			missAt = append(missAt, i)
		}
	}
	if len(miss) > 0 {
		hs, err := b.base.ReadHashes(miss)
		if err != nil {
			return nil, err
		}
		for j, h := range hs {
			b.cache[miss[j]] = h
			out[missAt[j]] = h
		}
	}
	return out, nil
}

// add appends one leaf by its record hash.
func (b *batchHasher) add(leaf tlog.Hash) error {
	n := b.start + b.count
	hs, err := tlog.StoredHashesForRecordHash(n, leaf, b)
	if err != nil {
		return fmt.Errorf("auditlog: hash leaf %d: %w", n, err)
	}
	b.hashes = append(b.hashes, hs...)
	b.count++
	return nil
}

// indexed returns the batch's hashes with their storage indexes.
func (b *batchHasher) indexed() []store.IndexedHash {
	out := make([]store.IndexedHash, len(b.hashes))
	for i, h := range b.hashes {
		out[i] = store.IndexedHash{Index: b.first + int64(i), Hash: h}
	}
	return out
}

// rangeReader is the optional capability of a Reader to read a contiguous
// run of stored hashes in one query (store.Store has it).
type rangeReader interface {
	TreeHashRange(ctx context.Context, from, to int64) ([][32]byte, error)
}

// readHashRange returns the stored hashes at storage indexes [from, to),
// in one range read when r supports it.
func readHashRange(ctx context.Context, r Reader, from, to int64) ([]tlog.Hash, error) {
	if to <= from {
		return nil, nil
	}
	rr, ok := r.(rangeReader)
	if !ok {
		idx := make([]int64, to-from)
		for i := range idx {
			idx[i] = from + int64(i)
		}
		return storeHashes(ctx, r).ReadHashes(idx)
	}
	hs, err := rr.TreeHashRange(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("auditlog: read tree hashes [%d, %d): %w", from, to, err)
	}
	if int64(len(hs)) != to-from {
		return nil, fmt.Errorf("auditlog: store returned %d tree hashes for [%d, %d)", len(hs), from, to)
	}
	out := make([]tlog.Hash, len(hs))
	for i, h := range hs {
		out[i] = tlog.Hash(h)
	}
	return out, nil
}
