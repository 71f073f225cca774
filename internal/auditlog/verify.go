package auditlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/mod/sumdb/tlog"
)

// TileSource fetches tlog-tiles resources by path relative to the log
// prefix ("checkpoint", "tile/0/000", "tile/entries/000.p/5"). A missing
// resource is an error wrapping ErrNotFound.
type TileSource interface {
	Fetch(ctx context.Context, path string) ([]byte, error)
}

// DirSource reads a static copy of the log written by Export.
type DirSource string

// Fetch implements TileSource.
func (d DirSource) Fetch(_ context.Context, p string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(string(d), filepath.FromSlash(p)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s not in %s", ErrNotFound, p, string(d))
	}
	if err != nil {
		return nil, fmt.Errorf("auditlog: read %s: %w", p, err)
	}
	return b, nil
}

// HTTPSource fetches from a log prefix URL such as
// "https://node.example/v1/audit/".
type HTTPSource struct {
	Prefix string
	Client *http.Client // default http.DefaultClient
}

// NewHTTPSource returns a source for a node URL; a URL without a path gets
// the node's PathPrefix.
func NewHTTPSource(rawURL string, c *http.Client) (HTTPSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return HTTPSource{}, fmt.Errorf("auditlog: log URL %q must be http(s)", rawURL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = PathPrefix
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return HTTPSource{Prefix: u.String(), Client: c}, nil
}

// Fetch implements TileSource.
func (h HTTPSource) Fetch(ctx context.Context, p string) ([]byte, error) {
	c := h.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.Prefix+p, nil)
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("auditlog: fetch %s: %w", p, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<24))
	if err != nil {
		return nil, fmt.Errorf("auditlog: fetch %s: %w", p, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s: %s", ErrNotFound, p, bytes.TrimSpace(body))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("auditlog: fetch %s: %s: %s", p, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// VerifyError is a precise verification failure. It unwraps to ErrVerify.
type VerifyError struct {
	Path   string // resource where the mismatch was found ("" for the root)
	Index  int64  // first entry concerned, or -1
	Reason string
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString("auditlog: verification failed")
	if e.Path != "" {
		b.WriteString(": " + e.Path)
	}
	if e.Index >= 0 {
		fmt.Fprintf(&b, " (entry %d)", e.Index)
	}
	b.WriteString(": " + e.Reason)
	return b.String()
}

func (e *VerifyError) Unwrap() error { return ErrVerify }

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// Since is an older signed checkpoint; Verify then also proves the
	// current checkpoint consistent with it.
	Since []byte
	// Progress, if set, is called after each entry bundle.
	Progress func(verified, total int64)
}

// VerifyResult summarises a successful Verify.
type VerifyResult struct {
	Checkpoint Checkpoint
	Since      *Checkpoint
}

// Verify fetches the checkpoint, checks its signature under verifierKey,
// re-hashes every entry and checks it against the level-0 tiles, checks
// every full tile against its parent tile, recomputes the root from the
// tiles and compares it with the checkpoint, and with opts.Since checks
// consistency with the older checkpoint. Any mismatch is a *VerifyError.
func Verify(ctx context.Context, src TileSource, verifierKey string, opts VerifyOptions) (VerifyResult, error) {
	raw, err := src.Fetch(ctx, "checkpoint")
	if err != nil {
		return VerifyResult{}, err
	}
	cp, err := OpenCheckpoint(raw, verifierKey)
	if err != nil {
		return VerifyResult{}, err
	}
	tr := &tileCache{ctx: ctx, src: src, tiles: map[tlog.Tile][]byte{}}
	parents, err := verifyEntries(ctx, src, cp.Size, opts.Progress)
	if err != nil {
		return VerifyResult{}, err
	}
	for level := 1; len(parents) > 0; level++ {
		if parents, err = verifyLevel(ctx, src, cp.Size, level, parents); err != nil {
			return VerifyResult{}, err
		}
	}
	tree := tlog.Tree{N: cp.Size, Hash: cp.Hash}
	if cp.Size > 0 {
		root, err := tlog.TreeHash(cp.Size, plainTileReader{c: tr, size: cp.Size})
		if err != nil {
			return VerifyResult{}, fmt.Errorf("auditlog: recompute root: %w", err)
		}
		if root != cp.Hash {
			return VerifyResult{}, &VerifyError{Path: "checkpoint", Index: -1, Reason: fmt.Sprintf(
				"root %s recomputed from the entries differs from the signed root %s", b64(root), b64(cp.Hash))}
		}
	}
	res := VerifyResult{Checkpoint: cp}
	if opts.Since != nil {
		old, err := OpenCheckpoint(opts.Since, verifierKey)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("older checkpoint: %w", err)
		}
		if err := checkConsistent(old, cp, tlog.TileHashReader(tree, tr)); err != nil {
			return VerifyResult{}, err
		}
		res.Since = &old
	}
	return res, nil
}

func checkConsistent(old, cur Checkpoint, r tlog.HashReader) error {
	switch {
	case old.Size > cur.Size:
		return &VerifyError{Path: "checkpoint", Index: -1, Reason: fmt.Sprintf(
			"the log shrank: the older checkpoint has %d entries, the current one %d (rollback or fork)", old.Size, cur.Size)}
	case old.Size == cur.Size && old.Hash != cur.Hash:
		return &VerifyError{Path: "checkpoint", Index: -1, Reason: fmt.Sprintf(
			"two different roots for size %d: %s and %s (fork)", old.Size, b64(old.Hash), b64(cur.Hash))}
	case old.Size == 0 || old.Size == cur.Size:
		return nil
	}
	p, err := tlog.ProveTree(cur.Size, old.Size, r)
	if err == nil {
		err = tlog.CheckTree(p, cur.Size, cur.Hash, old.Size, old.Hash)
	}
	if err != nil {
		return &VerifyError{Path: "checkpoint", Index: -1, Reason: fmt.Sprintf(
			"not consistent with the older checkpoint of size %d (root %s): %v", old.Size, b64(old.Hash), err)}
	}
	return nil
}

// verifyEntries re-hashes every entry bundle against its level-0 tile and
// returns the roots of the full level-0 tiles (the expected level-1 hashes).
// Bundles are fetched and checked on GOMAXPROCS workers (so file reads and
// HTTP round trips overlap with hashing), claimed in index order; after a
// failure no later bundle is started, and the error reported is the one at
// the lowest index.
func verifyEntries(ctx context.Context, src TileSource, size int64, progress func(int64, int64)) ([]tlog.Hash, error) {
	count := tileCount(size, 0)
	roots := make([]tlog.Hash, size/(tileWidth))
	errs := make([]error, count)
	var failed atomic.Bool
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for n := range count {
		sem <- struct{}{}
		if failed.Load() {
			break
		}
		if err := ctx.Err(); err != nil {
			errs[n] = err
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			root, err := fetchAndCheckBundle(ctx, src, size, n)
			if err != nil {
				errs[n] = err
				failed.Store(true)
				return
			}
			if n < int64(len(roots)) { // a partial last bundle has no root
				roots[n] = root
			}
		})
		if progress != nil {
			progress(min((n+1)*tileWidth, size), size)
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return roots, nil
}

// fetchAndCheckBundle fetches entry bundle n and its level-0 tile and
// checks them (checkBundle); it returns the tile's root when it is full.
func fetchAndCheckBundle(ctx context.Context, src TileSource, size, n int64) (tlog.Hash, error) {
	bt, _ := tileFor(size, entriesLevel, n)
	ht := bt
	ht.L = 0
	bundle, err := src.Fetch(ctx, tilePath(bt))
	if err != nil {
		return tlog.Hash{}, err
	}
	hashes, err := src.Fetch(ctx, tilePath(ht))
	if err != nil {
		return tlog.Hash{}, err
	}
	return checkBundle(bt, ht, bundle, hashes)
}

// checkBundle checks one entry bundle against its level-0 tile and returns
// the tile's root when it is full.
func checkBundle(bt, ht tlog.Tile, bundle, hashes []byte) (tlog.Hash, error) {
	start := bt.N * tileWidth
	entries, err := DecodeBundle(bundle)
	if err != nil {
		return tlog.Hash{}, &VerifyError{Path: tilePath(bt), Index: start, Reason: err.Error()}
	}
	if len(entries) != bt.W {
		return tlog.Hash{}, &VerifyError{Path: tilePath(bt), Index: start + int64(min(len(entries), bt.W)), Reason: fmt.Sprintf(
			"bundle has %d entries, the checkpointed tree needs %d", len(entries), bt.W)}
	}
	if len(hashes) != ht.W*tlog.HashSize {
		return tlog.Hash{}, &VerifyError{Path: tilePath(ht), Index: start, Reason: fmt.Sprintf("tile is %d bytes, want %d", len(hashes), ht.W*tlog.HashSize)}
	}
	for i, e := range entries {
		got := tlog.RecordHash(e)
		if !bytes.Equal(got[:], hashes[i*tlog.HashSize:(i+1)*tlog.HashSize]) {
			return tlog.Hash{}, &VerifyError{Path: tilePath(bt), Index: start + int64(i), Reason: fmt.Sprintf(
				"entry hashes to %s but the level-0 tile holds %s (entry altered, dropped or reordered)",
				b64(got), base64.StdEncoding.EncodeToString(hashes[i*tlog.HashSize:(i+1)*tlog.HashSize]))}
		}
		if err := CheckEntry(e); err != nil {
			return tlog.Hash{}, &VerifyError{Path: tilePath(bt), Index: start + int64(i), Reason: err.Error()}
		}
	}
	if ht.W != tileWidth {
		return tlog.Hash{}, nil
	}
	return tileRoot(hashes), nil
}

// verifyLevel checks the tiles at level against want (the roots of the
// full tiles below) and returns the roots of this level's full tiles.
func verifyLevel(ctx context.Context, src TileSource, size int64, level int, want []tlog.Hash) ([]tlog.Hash, error) {
	var roots []tlog.Hash
	for n := range tileCount(size, level) {
		t, _ := tileFor(size, level, n)
		data, err := src.Fetch(ctx, tilePath(t))
		if err != nil {
			return nil, err
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, &VerifyError{Path: tilePath(t), Index: -1, Reason: fmt.Sprintf("tile is %d bytes, want %d", len(data), t.W*tlog.HashSize)}
		}
		for i := range t.W {
			k := n*tileWidth + int64(i)
			if !bytes.Equal(data[i*tlog.HashSize:(i+1)*tlog.HashSize], want[k][:]) {
				first := k << (level * TileHeight)
				return nil, &VerifyError{Path: tilePath(t), Index: first, Reason: fmt.Sprintf(
					"hash %d differs from the root of the level-%d tile below it (covering entries from %d)", i, level-1, first)}
			}
		}
		if t.W == tileWidth {
			roots = append(roots, tileRoot(data))
		}
	}
	return roots, nil
}

// tileRoot is the Merkle tree hash of a full tile's 256 hashes.
func tileRoot(data []byte) tlog.Hash {
	level := make([]tlog.Hash, tileWidth)
	for i := range level {
		copy(level[i][:], data[i*tlog.HashSize:])
	}
	for len(level) > 1 {
		for i := 0; i < len(level)/2; i++ {
			level[i] = tlog.NodeHash(level[2*i], level[2*i+1])
		}
		level = level[:len(level)/2]
	}
	return level[0]
}

// tileCache is a tlog.TileReader over a TileSource.
type tileCache struct {
	ctx   context.Context
	src   TileSource
	tiles map[tlog.Tile][]byte
}

func (c *tileCache) Height() int { return TileHeight }

func (c *tileCache) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if d, ok := c.tiles[t]; ok {
			out[i] = d
			continue
		}
		d, err := c.src.Fetch(c.ctx, tilePath(t))
		if err != nil {
			return nil, err
		}
		if len(d) != t.W*tlog.HashSize {
			return nil, &VerifyError{Path: tilePath(t), Index: -1, Reason: fmt.Sprintf("tile is %d bytes, want %d", len(d), t.W*tlog.HashSize)}
		}
		c.tiles[t] = d
		out[i] = d
	}
	return out, nil
}

func (c *tileCache) SaveTiles([]tlog.Tile, [][]byte) {}

// plainTileReader reads stored hashes out of tiles without authenticating
// them against a root (Verify has already checked the tiles against the
// entries; the root is compared afterwards for a precise error).
type plainTileReader struct {
	c    *tileCache
	size int64
}

func (p plainTileReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		t := tlog.TileForIndex(TileHeight, x)
		t, _ = tileFor(p.size, t.L, t.N) // the width the tree has
		d, err := p.c.ReadTiles([]tlog.Tile{t})
		if err != nil {
			return nil, err
		}
		if out[i], err = tlog.HashFromTile(t, d[0], x); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Export writes the log as static files in the tlog-tiles layout under
// dir: checkpoint, every tile and entry bundle of the latest checkpoint.
// Files are written to temporary names and renamed into place.
func Export(ctx context.Context, src TileSource, dir string) (Checkpoint, error) {
	raw, err := src.Fetch(ctx, "checkpoint")
	if err != nil {
		return Checkpoint{}, err
	}
	cp, err := parseUnverified(raw)
	if err != nil {
		return Checkpoint{}, err
	}
	var paths []string
	for n := range tileCount(cp.Size, 0) {
		t, _ := tileFor(cp.Size, entriesLevel, n)
		paths = append(paths, tilePath(t))
	}
	for level := 0; tileCount(cp.Size, level) > 0; level++ {
		for n := range tileCount(cp.Size, level) {
			t, _ := tileFor(cp.Size, level, n)
			paths = append(paths, tilePath(t))
		}
	}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return Checkpoint{}, err
		}
		data, err := src.Fetch(ctx, p)
		if err != nil {
			return Checkpoint{}, err
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(p)), data); err != nil {
			return Checkpoint{}, err
		}
	}
	// The checkpoint last: a copy with a checkpoint is a complete copy.
	if err := writeFile(filepath.Join(dir, "checkpoint"), raw); err != nil {
		return Checkpoint{}, err
	}
	return cp, nil
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("auditlog: export: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("auditlog: export: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auditlog: export: %w", err)
	}
	return nil
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }
