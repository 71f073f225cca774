package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ManifestFormat is the value of Manifest.Format written by this package.
const ManifestFormat = "countersign-snapshot/v1"

const (
	manifestPrefix = "manifests/"
	partsPrefix    = "snapshots/"
	// maxManifestSize bounds how much of a manifest object is read.
	maxManifestSize = 16 << 20
)

// Manifest describes one snapshot. It is written last, after every part.
type Manifest struct {
	Format     string    `json:"format"`
	SnapshotID string    `json:"snapshot_id"`
	Seq        int64     `json:"seq"`
	IncidentID string    `json:"incident_id,omitempty"`
	Token      string    `json:"token,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	Release    string    `json:"release,omitempty"`
	Instance   string    `json:"instance,omitempty"`
	Parts      []PartRef `json:"parts"`
	// Prev links the previous snapshot's manifest; nil only for Seq 1.
	Prev *ChainLink `json:"prev,omitempty"`
}

// PartRef is one part as recorded in a manifest.
type PartRef struct {
	Name   string         `json:"name"`
	Kind   string         `json:"kind"`
	Object string         `json:"object"`
	Size   int64          `json:"size"`
	SHA256 string         `json:"sha256"`
	Meta   map[string]any `json:"meta,omitempty"`
}

// ChainLink names a manifest object and its SHA-256.
type ChainLink struct {
	Manifest string `json:"manifest"`
	SHA256   string `json:"sha256"`
}

// ObjectName is the manifest's own object name, derived from its Seq.
func (m Manifest) ObjectName() string { return ManifestName(m.Seq) }

// Part returns the named part's entry.
func (m Manifest) Part(name string) (PartRef, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return PartRef{}, false
}

// ManifestName is the object name of the manifest with sequence number seq.
func ManifestName(seq int64) string { return fmt.Sprintf("%s%010d.json", manifestPrefix, seq) }

// parseManifestName returns the sequence number of a manifest object name.
func parseManifestName(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, manifestPrefix)
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".json")
	if !ok || len(s) != 10 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// Manifests returns the object names of every manifest in st, oldest first.
func Manifests(ctx context.Context, st ImmutableStore) ([]string, error) {
	names, err := st.List(ctx, manifestPrefix)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if _, ok := parseManifestName(n); ok {
			out = append(out, n)
		}
	}
	return out, nil // zero-padded names sort by sequence
}

func encodeManifest(m Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ReadManifest reads and decodes a manifest object and returns it with the
// SHA-256 of its exact bytes.
func ReadManifest(ctx context.Context, st ImmutableStore, name string) (Manifest, string, error) {
	rc, err := st.Get(ctx, name)
	if err != nil {
		return Manifest{}, "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestSize+1))
	if err != nil {
		return Manifest{}, "", fmt.Errorf("snapshot: read manifest %s: %w", name, err)
	}
	if len(b) > maxManifestSize {
		return Manifest{}, "", fmt.Errorf("%w: manifest %s is larger than %d bytes", ErrVerify, name, maxManifestSize)
	}
	sum := sha256.Sum256(b)
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, hex.EncodeToString(sum[:]), fmt.Errorf("%w: manifest %s: %w", ErrVerify, name, err)
	}
	if m.Format != ManifestFormat {
		return Manifest{}, hex.EncodeToString(sum[:]), fmt.Errorf("%w: manifest %s has format %q, want %q", ErrVerify, name, m.Format, ManifestFormat)
	}
	return m, hex.EncodeToString(sum[:]), nil
}
