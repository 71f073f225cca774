package snapshot

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/store"
)

// AuditSource is what the audit part needs (store.Store).
type AuditSource interface {
	LatestCheckpoint(ctx context.Context) (store.Checkpoint, error)
	TreeSize(ctx context.Context) (int64, error)
	AuditSize(ctx context.Context) (int64, error)
}

// Audit records the audit log's latest signed checkpoint (the note, byte
// for byte), its parsed size and root hash, the integrated tree size and
// the number of committed events. With no checkpoint yet the document
// says so ("checkpoint": null) rather than failing: a fresh installation
// can still be snapshotted.
type Audit struct {
	Store AuditSource
	// PartName defaults to "audit-checkpoint.json".
	PartName string
}

// Name implements Part.
func (p Audit) Name() string { return orDefault(p.PartName, "audit-checkpoint.json") }

// Kind implements Part.
func (p Audit) Kind() string { return KindAudit }

type checkpointDoc struct {
	Origin    string    `json:"origin"`
	Size      int64     `json:"size"`
	RootHash  string    `json:"root_hash"` // base64, as in the note
	CreatedAt time.Time `json:"created_at"`
	Note      string    `json:"note"`
}

type auditDoc struct {
	TreeSize   int64          `json:"tree_size"`
	AuditSize  int64          `json:"audit_size"`
	Checkpoint *checkpointDoc `json:"checkpoint"`
}

// Write implements Part.
func (p Audit) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	var doc auditDoc
	var err error
	if doc.TreeSize, err = p.Store.TreeSize(ctx); err != nil {
		return nil, err
	}
	if doc.AuditSize, err = p.Store.AuditSize(ctx); err != nil {
		return nil, err
	}
	cp, err := p.Store.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		body, _, ok := bytes.Cut(cp.Note, []byte("\n\n"))
		if !ok {
			return nil, fmt.Errorf("audit checkpoint of size %d: note has no signature block", cp.Size)
		}
		parsed, err := auditlog.ParseCheckpoint(string(body) + "\n")
		if err != nil {
			return nil, err
		}
		if parsed.Size != cp.Size {
			return nil, fmt.Errorf("audit checkpoint: note says size %d, store row says %d", parsed.Size, cp.Size)
		}
		doc.Checkpoint = &checkpointDoc{Origin: parsed.Origin, Size: parsed.Size,
			RootHash: base64.StdEncoding.EncodeToString(parsed.Hash[:]), CreatedAt: cp.CreatedAt.UTC(), Note: string(cp.Note)}
	}
	if _, err := writeJSON(w, doc); err != nil {
		return nil, err
	}
	meta := map[string]any{"tree_size": doc.TreeSize, "audit_size": doc.AuditSize}
	if c := doc.Checkpoint; c != nil {
		meta["checkpoint_origin"] = c.Origin
		meta["checkpoint_size"] = c.Size
		meta["checkpoint_root"] = c.RootHash
	}
	return meta, nil
}

// File copies a file verbatim, e.g. the flagd-format flags file.
type File struct {
	Path string
	// PartName defaults to "flags.json"; PartKind to KindFlags.
	PartName string
	PartKind string
}

// Name implements Part.
func (p File) Name() string { return orDefault(p.PartName, "flags.json") }

// Kind implements Part.
func (p File) Kind() string { return orDefault(p.PartKind, KindFlags) }

// Write implements Part.
func (p File) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	f, err := os.Open(p.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, ctxReader{ctx, f}); err != nil {
		return nil, fmt.Errorf("copy %s: %w", p.Path, err)
	}
	return map[string]any{"source": p.Path, "modified": fi.ModTime().UTC()}, nil
}

// FleetSource is what the fleet part needs (fleet.Fleet).
type FleetSource interface {
	Status(ctx context.Context) ([]fleet.PoolStatus, error)
	History(ctx context.Context, pool string) ([]fleet.Revision, error)
}

// Fleet records every pool's status and full revision history as JSON.
// Environment values of releases are replaced by "[REDACTED]" (names
// kept): they may carry passphrases, and a snapshot can never be deleted.
type Fleet struct {
	Fleet FleetSource
	// PartName defaults to "fleet.json".
	PartName string
}

// Name implements Part.
func (p Fleet) Name() string { return orDefault(p.PartName, "fleet.json") }

// Kind implements Part.
func (p Fleet) Kind() string { return KindFleet }

type poolDoc struct {
	Status  fleet.PoolStatus `json:"status"`
	History []fleet.Revision `json:"history"`
}

// Write implements Part.
func (p Fleet) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	st, err := p.Fleet.Status(ctx)
	if err != nil {
		return nil, err
	}
	doc := struct {
		Pools []poolDoc `json:"pools"`
	}{Pools: []poolDoc{}}
	current := map[string]any{}
	for _, ps := range st {
		hist, err := p.Fleet.History(ctx, ps.Pool)
		if err != nil {
			return nil, err
		}
		ps.Release = redactRelease(ps.Release)
		for i := range hist {
			hist[i].Release = redactRelease(hist[i].Release)
		}
		doc.Pools = append(doc.Pools, poolDoc{Status: ps, History: hist})
		current[ps.Pool] = map[string]any{"revision": ps.Revision, "release": ps.Release.ID, "desired": ps.Desired, "ready": ps.Ready}
	}
	if _, err := writeJSON(w, doc); err != nil {
		return nil, err
	}
	return map[string]any{"pools": current}, nil
}

func redactRelease(r fleet.Release) fleet.Release {
	r = r.Clone()
	for i, kv := range r.Env {
		name, _, _ := strings.Cut(kv, "=")
		r.Env[i] = name + "=[REDACTED]"
	}
	return r
}
