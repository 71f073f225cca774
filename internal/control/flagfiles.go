package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/snapshot"
	"github.com/countersign/countersign/internal/store"
)

// Flag files of the embedded world: the world's defaults, made from
// flags.Default() when missing, and one file per release, which its nodes
// get with --flags and which isolate edits.
const (
	FlagsFile   = "flags.flagd.json"
	ReleasesDir = "releases"
)

// ErrInvalidRelease is returned for a release ID that cannot name a file.
var ErrInvalidRelease = errors.New("control: invalid release id")

// FlagsPath is the world's default flag file in dir.
func FlagsPath(dir string) string { return filepath.Join(dir, FlagsFile) }

// ReleaseFlagsPath is release id's flag file in dir.
func ReleaseFlagsPath(dir, id string) string {
	return filepath.Join(dir, ReleasesDir, id+".flagd.json")
}

func validReleaseID(id string) error {
	if id == "" || id != filepath.Base(id) || strings.HasPrefix(id, ".") || strings.ContainsAny(id, `/\`) {
		return fmt.Errorf("%w: %q", ErrInvalidRelease, id)
	}
	return nil
}

// ensureReleaseFlags gives release spec.ID its flag file: spec.Flags when
// set (validated before it replaces the release's previous file), else a
// copy of the world's defaults unless the release already has one.
func (w *World) ensureReleaseFlags(ctx context.Context, spec ReleaseSpec) (string, error) {
	if err := validReleaseID(spec.ID); err != nil {
		return "", err
	}
	path := ReleaseFlagsPath(w.cfg.Dir, spec.ID)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	var data []byte
	switch {
	case len(spec.Flags) > 0:
		data = spec.Flags
	default:
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		b, err := os.ReadFile(FlagsPath(w.cfg.Dir))
		if err != nil {
			return "", fmt.Errorf("control: world flag file: %w", err)
		}
		data = b
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+spec.ID+".*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	set, err := flags.New(ctx, flags.Config{Path: tmp.Name(), Logger: w.log})
	if err != nil {
		return "", fmt.Errorf("control: flags of release %s: %w", spec.ID, err)
	}
	set.Close(ctx)
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// flagRecorder puts a flag change's audit event in the log (and on the
// timeline) before flags writes the file (flags.Recorder).
type flagRecorder struct{ r *recorder }

func (f flagRecorder) Record(ctx context.Context, ev auditlog.Event) error {
	rec, err := ev.Record()
	if err != nil {
		return err
	}
	if _, err := f.r.st.AppendEvents(ctx, []store.AuditEvent{rec}); err != nil {
		return fmt.Errorf("control: record %s: %w", ev.Type, err)
	}
	f.r.note(TimelineEntry{Time: ev.Time, Kind: ev.Type, Subject: ev.Subject, Details: ev.Details})
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// releaseFlagsPart snapshots one release's flag file under its own name.
type releaseFlagsPart struct{ id, path string }

func (p releaseFlagsPart) Name() string { return "flags-" + p.id + ".json" }
func (p releaseFlagsPart) Kind() string { return snapshot.KindFlags }
func (p releaseFlagsPart) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	meta, err := snapshot.File{Path: p.path}.Write(ctx, w)
	if meta != nil {
		meta["release"] = p.id
	}
	return meta, err
}

// worldFlagsPart snapshots the world's flag file as flags evaluates it
// (flags.SnapshotPart: the definitions in force, and a refused edit).
type worldFlagsPart struct {
	path string
	log  *slog.Logger
}

func (p worldFlagsPart) Name() string { return flags.SnapshotPart{}.Name() }
func (p worldFlagsPart) Kind() string { return flags.SnapshotPart{}.Kind() }
func (p worldFlagsPart) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	set, err := flags.New(ctx, flags.Config{Path: p.path, Logger: p.log})
	if err != nil {
		return nil, err
	}
	defer set.Close(ctx)
	return flags.SnapshotPart{Set: set}.Write(ctx, w)
}
