package flags

import (
	"context"
	"io"
)

// SnapshotPart is the flags part of an incident snapshot: the definitions
// in force, verbatim. It has the method set of snapshot.Part. Unlike a copy
// of the file on disk, it stores what was being evaluated even when the file
// holds a refused edit; the refused error, if any, goes in the metadata.
type SnapshotPart struct {
	Set *Set
}

// Name is the part's object name.
func (p SnapshotPart) Name() string { return "flags.json" }

// Kind is the part's kind (snapshot.KindFlags).
func (p SnapshotPart) Kind() string { return "flags" }

// Write writes the bytes in force and returns their SHA-256, the file path
// and, when the file on disk was refused, the error.
func (p SnapshotPart) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw, sum := p.Set.Snapshot()
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	meta := map[string]any{"source": p.Set.Path(), "sha256": sum, "flags": p.Set.Names()}
	if err := p.Set.Err(); err != nil {
		meta["refused"] = err.Error()
	}
	return meta, nil
}
