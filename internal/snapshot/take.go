package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Part is one snapshotter: it writes one object of a snapshot.
type Part interface {
	// Name is the part's name inside the snapshot (one object name
	// segment, e.g. "store.sqlite"); names are unique within a snapshot.
	Name() string
	// Kind names the content, e.g. KindSQLite.
	Kind() string
	// Write writes the part's content to w and returns its kind-specific
	// metadata for the manifest, which must be JSON-encodable. An error
	// means the part, and so the snapshot, failed.
	Write(ctx context.Context, w io.Writer) (map[string]any, error)
}

// Part kinds written by the snapshotters of this package.
const (
	KindSQLite         = "store.sqlite"
	KindPostgres       = "store.postgres"
	KindQueueStream    = "queue.stream"
	KindQueuePositions = "queue.positions"
	KindAudit          = "audit.checkpoint"
	KindKeyInventory   = "keys.inventory"
	KindKeyEvents      = "keys.events"
	KindFlags          = "flags"
	KindFleet          = "fleet.history"
)

// Config is what Take needs. Store and at least one part are required.
type Config struct {
	Store ImmutableStore
	// Parts are written in order, one at a time.
	Parts []Part
	// IncidentID, Release and Instance are recorded in the manifest.
	IncidentID string
	Release    string
	Instance   string
	// Token, when set, makes Take idempotent: if a manifest with this token
	// exists, Take returns it instead of taking another snapshot (the
	// playbook passes its step token so a retried or resumed step does not
	// snapshot twice).
	Token string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// chainAttempts bounds how often Take retries extending the chain when a
// concurrent Take wins the same sequence number.
const chainAttempts = 8

// Take writes every part under a new snapshot id and then the manifest,
// linked to the previous manifest. It returns the manifest and the SHA-256
// of the manifest object's bytes, to be recorded as an audit event.
func Take(ctx context.Context, cfg Config) (Manifest, string, error) {
	if cfg.Store == nil || len(cfg.Parts) == 0 {
		return Manifest{}, "", errors.New("snapshot: take needs a store and at least one part")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	seen := map[string]bool{}
	for _, p := range cfg.Parts {
		if err := CheckName(p.Name()); err != nil || seen[p.Name()] || strings.Contains(p.Name(), "/") {
			return Manifest{}, "", fmt.Errorf("snapshot: part name %q is invalid or repeated", p.Name())
		}
		seen[p.Name()] = true
	}
	if cfg.Token != "" {
		m, sum, found, err := findToken(ctx, cfg.Store, cfg.Token, log)
		if err != nil || found {
			if found {
				log.InfoContext(ctx, "snapshot already taken under this token", "token", cfg.Token, "manifest", m.ObjectName())
			}
			return m, sum, err
		}
	}
	start := cfg.Now()
	id, err := newID(start)
	if err != nil {
		return Manifest{}, "", err
	}
	m := Manifest{Format: ManifestFormat, SnapshotID: id, IncidentID: cfg.IncidentID, Token: cfg.Token,
		CreatedAt: start.UTC(), Release: cfg.Release, Instance: cfg.Instance}
	for _, p := range cfg.Parts {
		t0 := time.Now()
		ref, err := writePart(ctx, cfg.Store, partsPrefix+id+"/", p)
		if err != nil {
			return Manifest{}, "", fmt.Errorf("snapshot %s: %w", id, err)
		}
		m.Parts = append(m.Parts, ref)
		log.InfoContext(ctx, "snapshot part written", "snapshot", id, "part", ref.Name, "kind", ref.Kind,
			"size", ref.Size, "sha256", ref.SHA256, "elapsed", time.Since(t0))
	}
	for range chainAttempts {
		seq, prev, err := head(ctx, cfg.Store)
		if err != nil {
			return Manifest{}, "", fmt.Errorf("snapshot %s: %w", id, err)
		}
		m.Seq, m.Prev = seq+1, prev
		b, err := encodeManifest(m)
		if err != nil {
			return Manifest{}, "", err
		}
		obj, err := cfg.Store.Put(ctx, m.ObjectName(), bytes.NewReader(b))
		if errors.Is(err, ErrExists) {
			log.InfoContext(ctx, "snapshot chain moved on, retrying", "snapshot", id, "seq", m.Seq)
			continue
		}
		if err != nil {
			return Manifest{}, "", fmt.Errorf("snapshot %s: write manifest: %w", id, err)
		}
		log.InfoContext(ctx, "snapshot taken", "snapshot", id, "manifest", obj.Name, "sha256", obj.SHA256,
			"incident", cfg.IncidentID, "parts", len(m.Parts))
		return m, obj.SHA256, nil
	}
	return Manifest{}, "", fmt.Errorf("snapshot %s: manifest chain contended %d times: %w", id, chainAttempts, ErrExists)
}

// writePart streams p into the store under prefix+p.Name(). If p fails,
// the pipe carries its error into Put, which then stores nothing.
func writePart(ctx context.Context, st ImmutableStore, prefix string, p Part) (PartRef, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type result struct {
		meta map[string]any
		err  error
	}
	done := make(chan result, 1)
	go func() {
		meta, err := p.Write(ctx, pw)
		if err == nil {
			pw.Close()
		} else {
			pw.CloseWithError(err)
		}
		done <- result{meta, err}
	}()
	obj, putErr := st.Put(ctx, prefix+p.Name(), pr)
	if putErr != nil {
		pr.CloseWithError(putErr)
		cancel()
	}
	res := <-done
	switch {
	case res.err != nil:
		return PartRef{}, fmt.Errorf("part %s (%s): %w", p.Name(), p.Kind(), res.err)
	case putErr != nil:
		return PartRef{}, fmt.Errorf("part %s (%s): %w", p.Name(), p.Kind(), putErr)
	}
	return PartRef{Name: p.Name(), Kind: p.Kind(), Object: obj.Name, Size: obj.Size, SHA256: obj.SHA256, Meta: res.meta}, nil
}

// head returns the highest manifest sequence number in st (0 if none) and
// the link to that manifest.
func head(ctx context.Context, st ImmutableStore) (int64, *ChainLink, error) {
	names, err := Manifests(ctx, st)
	if err != nil || len(names) == 0 {
		return 0, nil, err
	}
	last := names[len(names)-1]
	seq, _ := parseManifestName(last)
	o, err := st.Stat(ctx, last)
	if err != nil {
		return 0, nil, fmt.Errorf("read chain head: %w", err)
	}
	return seq, &ChainLink{Manifest: last, SHA256: o.SHA256}, nil
}

// findToken looks for a manifest taken under token, newest first. An
// unreadable manifest is logged and skipped, not fatal: a damaged older
// snapshot (which Verify reports) must not stop an incident's snapshot.
func findToken(ctx context.Context, st ImmutableStore, token string, log *slog.Logger) (Manifest, string, bool, error) {
	names, err := Manifests(ctx, st)
	if err != nil {
		return Manifest{}, "", false, err
	}
	for i := len(names) - 1; i >= 0; i-- {
		m, sum, err := ReadManifest(ctx, st, names[i])
		if err != nil {
			log.WarnContext(ctx, "unreadable snapshot manifest skipped", "manifest", names[i], "err", err)
			continue
		}
		if m.Token == token {
			return m, sum, true, nil
		}
	}
	return Manifest{}, "", false, nil
}

func newID(t time.Time) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("snapshot: id: %w", err)
	}
	return t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b), nil
}
