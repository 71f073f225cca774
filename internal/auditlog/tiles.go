package auditlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// ErrNotFound is returned for a resource that does not exist at the latest
// checkpoint (HTTP 404).
var ErrNotFound = errors.New("auditlog: no such resource")

// entriesLevel is tlog's level for record data, served as tile/entries.
const entriesLevel = -1

// maxEntrySize is the largest entry an entry bundle can carry (uint16
// length prefix).
const maxEntrySize = 1<<16 - 1

// tilePath is the C2SP tlog-tiles path of t: tile/<L>/<N>[.p/<W>], or
// tile/entries/<N>[.p/<W>] for an entry bundle.
func tilePath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", TileHeight))
	if t.L == entriesLevel {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// parseTilePath parses a C2SP tile or entry bundle path; it accepts only
// canonical encodings.
func parseTilePath(p string) (tlog.Tile, error) {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return tlog.Tile{}, fmt.Errorf("%w: %q", ErrNotFound, p)
	}
	if r, ok := strings.CutPrefix(rest, "entries/"); ok {
		rest = "data/" + r
	}
	t, err := tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", TileHeight, rest))
	if err != nil || t.H != TileHeight || tilePath(t) != p {
		return tlog.Tile{}, fmt.Errorf("%w: %q is not a canonical tile path", ErrNotFound, p)
	}
	return t, nil
}

// tileFor returns the tile (L, n) of a tree of the given size, with the
// width that tree gives it; ok is false when the tree has no such tile.
func tileFor(size int64, level int, n int64) (tlog.Tile, bool) {
	hashLevel := max(level, 0) * TileHeight
	count := size >> hashLevel // hashes at this level
	if n < 0 || n*tileWidth >= count {
		return tlog.Tile{}, false
	}
	return tlog.Tile{H: TileHeight, L: level, N: n, W: int(min(tileWidth, count-n*tileWidth))}, true
}

// tileCount is the number of tiles (full and partial) at a level.
func tileCount(size int64, level int) int64 {
	count := size >> (max(level, 0) * TileHeight)
	return (count + tileWidth - 1) / tileWidth
}

// EncodeBundle encodes entries as a C2SP entry bundle: each entry prefixed
// with its big-endian uint16 length.
func EncodeBundle(entries [][]byte) ([]byte, error) {
	var n int
	for _, e := range entries {
		n += 2 + len(e)
	}
	out := make([]byte, 0, n)
	for i, e := range entries {
		if len(e) > maxEntrySize {
			return nil, fmt.Errorf("auditlog: entry %d of bundle is %d bytes, over the %d-byte limit", i, len(e), maxEntrySize)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	return out, nil
}

// DecodeBundle splits a C2SP entry bundle into its entries.
func DecodeBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: entry bundle ends inside a length prefix", ErrVerify)
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b)-2 < n {
			return nil, fmt.Errorf("%w: entry bundle entry %d claims %d bytes, %d left", ErrVerify, len(out), n, len(b)-2)
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

// StoreSource serves the log's static resources (checkpoint, tiles, entry
// bundles) from the store, bounded by the latest signed checkpoint. It is
// the data behind Handler and Export, and a TileSource for Verify.
type StoreSource struct {
	R Reader
}

// Fetch returns the resource at a tlog-tiles path relative to the log
// prefix: "checkpoint", "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]".
func (s StoreSource) Fetch(ctx context.Context, p string) ([]byte, error) {
	cp, err := s.R.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: no checkpoint has been signed yet", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("auditlog: latest checkpoint: %w", err)
	}
	if p == "checkpoint" {
		return cp.Note, nil
	}
	t, err := parseTilePath(p)
	if err != nil {
		return nil, err
	}
	avail, ok := tileFor(cp.Size, t.L, t.N)
	if !ok || t.W > avail.W {
		return nil, fmt.Errorf("%w: %s is beyond the checkpointed tree of size %d", ErrNotFound, p, cp.Size)
	}
	if t.L == entriesLevel {
		return s.bundle(ctx, t)
	}
	data, err := tlog.ReadTileData(t, storeHashes(ctx, s.R))
	if err != nil {
		return nil, fmt.Errorf("auditlog: read %s: %w", p, err)
	}
	return data, nil
}

func (s StoreSource) bundle(ctx context.Context, t tlog.Tile) ([]byte, error) {
	entries, err := readEntries(ctx, s.R, t.N*tileWidth, int64(t.W))
	if err != nil {
		return nil, err
	}
	return EncodeBundle(entries)
}

// IsFull reports whether a tlog-tiles path names a full tile or bundle
// (immutable), as opposed to the checkpoint or a partial tile.
func IsFull(p string) bool {
	t, err := parseTilePath(p)
	return err == nil && t.W == tileWidth
}
