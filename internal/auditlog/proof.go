package auditlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// ProveInclusion returns the RFC 6962 inclusion proof of leaf index in the
// tree of the given size, which must not exceed the latest checkpoint.
func ProveInclusion(ctx context.Context, r Reader, index, size int64) (tlog.RecordProof, error) {
	if err := checkCovered(ctx, r, size); err != nil {
		return nil, err
	}
	if index < 0 || index >= size {
		return nil, fmt.Errorf("%w: index %d is outside a tree of size %d", ErrNotFound, index, size)
	}
	p, err := tlog.ProveRecord(size, index, storeHashes(ctx, r))
	if err != nil {
		return nil, fmt.Errorf("auditlog: prove inclusion of %d in %d: %w", index, size, err)
	}
	return p, nil
}

// ProveConsistency returns the RFC 6962 consistency proof from the tree of
// size old to the tree of size new, which must not exceed the latest
// checkpoint.
func ProveConsistency(ctx context.Context, r Reader, old, new int64) (tlog.TreeProof, error) {
	if err := checkCovered(ctx, r, new); err != nil {
		return nil, err
	}
	if old < 0 || old > new {
		return nil, fmt.Errorf("%w: consistency needs 0 <= old <= new, got %d and %d", ErrNotFound, old, new)
	}
	if old == 0 || old == new {
		return tlog.TreeProof{}, nil
	}
	p, err := tlog.ProveTree(new, old, storeHashes(ctx, r))
	if err != nil {
		return nil, fmt.Errorf("auditlog: prove consistency %d -> %d: %w", old, new, err)
	}
	return p, nil
}

func checkCovered(ctx context.Context, r Reader, size int64) error {
	cp, err := r.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: no checkpoint yet", ErrNoCheckpoint)
	}
	if err != nil {
		return fmt.Errorf("auditlog: latest checkpoint: %w", err)
	}
	if size > cp.Size {
		return fmt.Errorf("%w: tree size %d is beyond the latest checkpoint (%d)", ErrNoCheckpoint, size, cp.Size)
	}
	return nil
}

// proofHeader is the first line of a C2SP tlog-proof file.
const proofHeader = "c2sp.org/tlog-proof@v1"

// Proof is a C2SP tlog-proof: an inclusion proof of the entry at Index in
// the tree of a signed checkpoint. Extra carries the entry itself (the
// canonical JSON leaf data), so the file is self-contained; it is
// authenticated only by the inclusion proof.
type Proof struct {
	Extra      []byte
	Index      int64
	Hashes     tlog.RecordProof
	Checkpoint []byte // signed note, verbatim
}

// Marshal encodes p in the tlog-proof text format.
func (p Proof) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(proofHeader + "\n")
	if p.Extra != nil {
		fmt.Fprintf(&b, "extra %s\n", base64.StdEncoding.EncodeToString(p.Extra))
	}
	fmt.Fprintf(&b, "index %d\n", p.Index)
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// ParseProof decodes a tlog-proof file.
func ParseProof(data []byte) (Proof, error) {
	bad := func(format string, a ...any) (Proof, error) {
		return Proof{}, fmt.Errorf("%w: tlog-proof: %s", ErrVerify, fmt.Sprintf(format, a...))
	}
	head, cp, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return bad("no blank line before the checkpoint")
	}
	p := Proof{Checkpoint: bytes.Clone(cp)}
	lines := strings.Split(string(head), "\n")
	if lines[0] != proofHeader {
		return bad("first line is %q, want %q", lines[0], proofHeader)
	}
	i := 1
	if i < len(lines) && strings.HasPrefix(lines[i], "extra ") {
		e, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[i], "extra "))
		if err != nil {
			return bad("extra line: %v", err)
		}
		p.Extra = e
		i++
	}
	if i >= len(lines) || !strings.HasPrefix(lines[i], "index ") {
		return bad("missing index line")
	}
	v := strings.TrimPrefix(lines[i], "index ")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != v {
		return bad("index %q is not a canonical decimal", v)
	}
	p.Index = n
	for j, s := range lines[i+1:] {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			return bad("line %d is not a base64 SHA-256 hash", i+2+j)
		}
		p.Hashes = append(p.Hashes, tlog.Hash(raw))
	}
	return p, nil
}

// VerifyProof checks a tlog-proof: the checkpoint's signature under the
// log's verifier key, and that leaf (the entry data; nil means use the
// proof's extra data) is at the proof's index in that tree. It returns the
// checkpoint and the verified entry.
func VerifyProof(p Proof, verifierKey string, leaf []byte) (Checkpoint, []byte, error) {
	cp, err := OpenCheckpoint(p.Checkpoint, verifierKey)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if leaf == nil {
		leaf = p.Extra
	}
	if leaf == nil {
		return Checkpoint{}, nil, fmt.Errorf("%w: the proof carries no entry and none was given", ErrVerify)
	}
	if p.Index >= cp.Size {
		return Checkpoint{}, nil, fmt.Errorf("%w: index %d is outside the checkpointed tree of size %d", ErrVerify, p.Index, cp.Size)
	}
	if err := tlog.CheckRecord(p.Hashes, cp.Size, cp.Hash, p.Index, tlog.RecordHash(leaf)); err != nil {
		return Checkpoint{}, nil, fmt.Errorf("%w: entry %d is not included in checkpoint %d: %w", ErrVerify, p.Index, cp.Size, err)
	}
	return cp, leaf, nil
}

// ProveIndex builds the tlog-proof for the event at index against the
// latest checkpoint, carrying the entry as extra data.
func ProveIndex(ctx context.Context, r Reader, index int64) (Proof, error) {
	cp, err := r.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return Proof{}, fmt.Errorf("%w: no checkpoint has been signed yet", ErrNoCheckpoint)
	}
	if err != nil {
		return Proof{}, fmt.Errorf("auditlog: latest checkpoint: %w", err)
	}
	if index < 0 {
		return Proof{}, fmt.Errorf("%w: event index %d is negative", ErrNotFound, index)
	}
	if index >= cp.Size {
		return Proof{}, fmt.Errorf("%w: event %d is not yet in a checkpoint (latest covers %d events); wait for the node to integrate it",
			ErrNoCheckpoint, index, cp.Size)
	}
	entries, err := readEntries(ctx, r, index, 1)
	if err != nil {
		return Proof{}, err
	}
	// cp covers index: prove against it without reading it again.
	hs, err := tlog.ProveRecord(cp.Size, index, storeHashes(ctx, r))
	if err != nil {
		return Proof{}, fmt.Errorf("auditlog: prove inclusion of %d in %d: %w", index, cp.Size, err)
	}
	return Proof{Extra: entries[0], Index: index, Hashes: hs, Checkpoint: cp.Note}, nil
}
