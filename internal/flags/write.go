package flags

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
)

// Recorder receives the audit event of a flag change before the file
// changes. If Record returns an error, the change is not made.
type Recorder interface {
	Record(ctx context.Context, ev auditlog.Event) error
}

// Audit event types of flag changes.
const (
	EventVariantSet   = "flags.variant.set"
	EventDisabled     = "flags.disabled"
	EventChangeFailed = "flags.change.failed"
)

// Errors of SetVariant and Disable.
var (
	ErrUnknownFlag    = errors.New("flags: unknown flag")
	ErrUnknownVariant = errors.New("flags: unknown variant")
	ErrConflict       = errors.New("flags: flag file changed during the update")
	ErrNoActor        = errors.New("flags: a flag change needs an actor and a reason")
)

// Change describes a flag change, as recorded.
type Change struct {
	Flag           string `json:"flag"`
	FromState      string `json:"from_state"`
	ToState        string `json:"to_state"`
	FromVariant    string `json:"from_variant"`
	ToVariant      string `json:"to_variant"`
	PreviousSHA256 string `json:"previous_sha256"`
	SHA256         string `json:"sha256"`
	// Changed is false when the flag was already as requested: nothing was
	// recorded or written.
	Changed bool `json:"changed"`
}

// pathLocks serializes changes to one file within the process.
var pathLocks sync.Map // abs path → *sync.Mutex

func lockPath(path string) func() {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	m, _ := pathLocks.LoadOrStore(abs, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// SetVariant pins flag to variant for every evaluation context: the flag is
// enabled, its defaultVariant becomes variant and its targeting is removed
// (the removed rules are kept in the audit event, and in the snapshot taken
// before). The event goes to rec before the file changes; the file is then
// replaced atomically. Readers (a Set's Watch) pick the change up on their
// next poll; Set.SetVariant also reloads at once.
func SetVariant(ctx context.Context, path, flag, variant, actor, reason string, rec Recorder) (Change, error) {
	return change(ctx, path, flag, variant, actor, reason, rec, time.Now)
}

// Disable sets flag's state to DISABLED, so every evaluation returns the
// caller's code default. Recording and writing are as for SetVariant.
func Disable(ctx context.Context, path, flag, actor, reason string, rec Recorder) (Change, error) {
	return change(ctx, path, flag, "", actor, reason, rec, time.Now)
}

// SetVariant is SetVariant on the Set's file, followed by a reload so the
// change is in force when it returns.
func (s *Set) SetVariant(ctx context.Context, flag, variant, actor, reason string, rec Recorder) (Change, error) {
	return s.changeAndReload(ctx, flag, variant, actor, reason, rec)
}

// Disable is Disable on the Set's file, followed by a reload.
func (s *Set) Disable(ctx context.Context, flag, actor, reason string, rec Recorder) (Change, error) {
	return s.changeAndReload(ctx, flag, "", actor, reason, rec)
}

func (s *Set) changeAndReload(ctx context.Context, flag, variant, actor, reason string, rec Recorder) (Change, error) {
	c, err := change(ctx, s.cfg.Path, flag, variant, actor, reason, rec, s.cfg.Now)
	if err != nil {
		return c, err
	}
	if err := s.Reload(ctx); err != nil {
		return c, fmt.Errorf("flags: changed %s but reload failed: %w", flag, err)
	}
	return c, nil
}

// change sets flag to variant, or disables it when variant is empty.
func change(ctx context.Context, path, flag, variant, actor, reason string, rec Recorder, now func() time.Time) (Change, error) {
	if actor == "" || reason == "" {
		return Change{}, ErrNoActor
	}
	if rec == nil {
		return Change{}, errors.New("flags: a Recorder is required")
	}
	unlock := lockPath(path)
	defer unlock()

	old, err := os.ReadFile(path)
	if err != nil {
		return Change{}, fmt.Errorf("flags: %w", err)
	}
	next, c, removed, err := rewrite(old, flag, variant)
	if err != nil {
		return c, err
	}
	if !c.Changed {
		return c, nil
	}
	if _, err := compile(next); err != nil {
		return c, fmt.Errorf("flags: the changed file would be refused: %w", err)
	}
	typ := EventVariantSet
	if variant == "" {
		typ = EventDisabled
	}
	details := map[string]any{
		"path": path, "reason": reason,
		"from_state": c.FromState, "to_state": c.ToState,
		"from_variant": c.FromVariant, "to_variant": c.ToVariant,
		"previous_sha256": c.PreviousSHA256, "sha256": c.SHA256,
	}
	if removed != nil {
		details["removed_targeting"] = string(removed)
	}
	if err := rec.Record(ctx, auditlog.Event{Type: typ, Time: now(), Actor: actor, Subject: flag, Details: details}); err != nil {
		return c, fmt.Errorf("flags: record change of %s (file unchanged): %w", flag, err)
	}
	if err := replace(path, old, next); err != nil {
		ferr := rec.Record(ctx, auditlog.Event{Type: EventChangeFailed, Time: now(), Actor: actor, Subject: flag,
			Details: map[string]any{"path": path, "event": typ, "sha256": c.SHA256, "error": err.Error()}})
		return c, errors.Join(fmt.Errorf("flags: write %s: %w", path, err), ferr)
	}
	return c, nil
}

// rewrite returns the file with flag changed, the change, and the
// targeting rules it removed (nil if none). Objects are re-encoded with
// sorted keys and two-space indentation.
func rewrite(old []byte, flag, variant string) ([]byte, Change, json.RawMessage, error) {
	prev := sha256.Sum256(old)
	c := Change{Flag: flag, PreviousSHA256: hex.EncodeToString(prev[:])}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(old, &top); err != nil {
		return nil, c, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var fl map[string]json.RawMessage
	if err := json.Unmarshal(top["flags"], &fl); err != nil {
		return nil, c, nil, fmt.Errorf("%w: flags: %v", ErrInvalid, err)
	}
	rawFlag, ok := fl[flag]
	if !ok {
		return nil, c, nil, fmt.Errorf("%w: %q", ErrUnknownFlag, flag)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(rawFlag, &f); err != nil {
		return nil, c, nil, fmt.Errorf("%w: flag %q: %v", ErrInvalid, flag, err)
	}
	var variants map[string]json.RawMessage
	if err := json.Unmarshal(f["variants"], &variants); err != nil {
		return nil, c, nil, fmt.Errorf("%w: flag %q variants: %v", ErrInvalid, flag, err)
	}
	_ = json.Unmarshal(f["state"], &c.FromState)
	_ = json.Unmarshal(f["defaultVariant"], &c.FromVariant)
	_, hasTargeting := f["targeting"]

	var removed json.RawMessage
	if variant == "" {
		c.ToState, c.ToVariant = "DISABLED", c.FromVariant
		c.Changed = c.FromState != "DISABLED"
		f["state"] = json.RawMessage(`"DISABLED"`)
	} else {
		if _, ok := variants[variant]; !ok {
			return nil, c, nil, fmt.Errorf("%w: flag %q has no variant %q", ErrUnknownVariant, flag, variant)
		}
		c.ToState, c.ToVariant = "ENABLED", variant
		c.Changed = c.FromState != "ENABLED" || c.FromVariant != variant || hasTargeting
		v, _ := json.Marshal(variant)
		f["state"], f["defaultVariant"] = json.RawMessage(`"ENABLED"`), v
		if hasTargeting {
			removed = compact(f["targeting"])
			delete(f, "targeting")
		}
	}
	if !c.Changed {
		c.SHA256 = c.PreviousSHA256
		return old, c, nil, nil
	}
	var err error
	if fl[flag], err = json.Marshal(f); err != nil {
		return nil, c, nil, err
	}
	if top["flags"], err = json.Marshal(fl); err != nil {
		return nil, c, nil, err
	}
	next, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return nil, c, nil, err
	}
	next = append(next, '\n')
	sum := sha256.Sum256(next)
	c.SHA256 = hex.EncodeToString(sum[:])
	return next, c, removed, nil
}

// replace writes data to path atomically: a temporary file in the same
// directory, synced, renamed over path, and the directory synced. It
// refuses with ErrConflict if path no longer holds expect.
func replace(path string, expect, data []byte) (err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(fi.Mode().Perm()); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, expect) {
		return ErrConflict
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
