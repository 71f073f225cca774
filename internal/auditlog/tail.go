package auditlog

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Tailer follows a log: each Poll fetches the checkpoint and hands every
// entry past the last one seen to a callback. With a VerifierKey it checks
// each checkpoint's signature, its consistency with the previous one, and
// each entry's inclusion (through the authenticated tiles).
type Tailer struct {
	Src         TileSource
	VerifierKey string // optional
	// Next is the next index to emit; negative starts 10 entries before the
	// end of the first checkpoint seen.
	Next int64

	last *Checkpoint
}

// tailBacklog is how many entries a new Tailer shows when Next < 0.
const tailBacklog = 10

// Poll emits the entries added since the previous Poll.
func (t *Tailer) Poll(ctx context.Context, emit func(index int64, entry []byte) error) error {
	raw, err := t.Src.Fetch(ctx, "checkpoint")
	if err != nil {
		return err
	}
	var cp Checkpoint
	if t.VerifierKey != "" {
		cp, err = OpenCheckpoint(raw, t.VerifierKey)
	} else {
		cp, err = parseUnverified(raw)
	}
	if err != nil {
		return err
	}
	tc := &tileCache{ctx: ctx, src: t.Src, tiles: map[tlog.Tile][]byte{}}
	hr := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Hash}, tc)
	if t.VerifierKey != "" && t.last != nil {
		if err := checkConsistent(*t.last, cp, hr); err != nil {
			return err
		}
	}
	if t.Next < 0 {
		t.Next = max(cp.Size-tailBacklog, 0)
	}
	for t.Next < cp.Size {
		bt, _ := tileFor(cp.Size, entriesLevel, t.Next/tileWidth)
		bundle, err := t.Src.Fetch(ctx, tilePath(bt))
		if err != nil {
			return err
		}
		entries, err := DecodeBundle(bundle)
		if err != nil {
			return err
		}
		if len(entries) != bt.W {
			return &VerifyError{Path: tilePath(bt), Index: bt.N * tileWidth, Reason: fmt.Sprintf("bundle has %d entries, want %d", len(entries), bt.W)}
		}
		start := bt.N * tileWidth
		for i := t.Next - start; i < int64(len(entries)); i++ {
			index := start + i
			if t.VerifierKey != "" {
				hs, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
				if err != nil {
					return fmt.Errorf("%w: leaf hash %d: %w", ErrVerify, index, err)
				}
				if tlog.RecordHash(entries[i]) != hs[0] {
					return &VerifyError{Path: tilePath(bt), Index: index, Reason: "entry does not hash to the checkpointed leaf"}
				}
			}
			if err := emit(index, entries[i]); err != nil {
				return err
			}
			t.Next = index + 1
		}
	}
	t.last = &cp
	return nil
}
