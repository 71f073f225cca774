package flags

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

const (
	digest256 = `{"flags":{"signing.cms.digest":{"state":"ENABLED","variants":{"sha256":"sha256","sha512":"sha512"},"defaultVariant":"sha256"},` +
		`"signing.new-path":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`
	digest512 = `{"flags":{"signing.cms.digest":{"state":"ENABLED","variants":{"sha256":"sha256","sha512":"sha512"},"defaultVariant":"sha512"},` +
		`"signing.new-path":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestReload(t *testing.T) {
	path := writeTemp(t, []byte(digest256))
	s, _ := openSet(t, path)
	changes := events(t, s, openfeature.ProviderConfigChange)
	stale := events(t, s, openfeature.ProviderStale)
	ready := events(t, s, openfeature.ProviderReady)
	ctx, ec := t.Context(), EvalContext{Tenant: "acme"}
	digest := func() string { return s.String(ctx, CMSDigest, "none", ec) }

	if got := digest(); got != "sha256" {
		t.Fatalf("initial digest = %q, want sha256", got)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatalf("Reload of an unchanged file: %v", err)
	}

	// A changed file takes effect and names the changed flag.
	if err := os.WriteFile(path, []byte(digest512), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := digest(); got != "sha512" {
		t.Errorf("digest after reload = %q, want sha512", got)
	}
	ev := waitEvent(t, changes, openfeature.ProviderConfigChange, func(openfeature.EventDetails) bool { return true })
	if !slices.Equal(ev.FlagChanges, []string{CMSDigest}) {
		t.Errorf("FlagChanges = %v, want [%s]", ev.FlagChanges, CMSDigest)
	}
	if raw, sum := s.Snapshot(); string(raw) != digest512 || sum != sha([]byte(digest512)) {
		t.Errorf("Snapshot = %q %s, want the new file and its sha256", raw, sum)
	}

	// Invalid files are refused; the last good set stays in force.
	for _, name := range []string{"not-json.json", "bad-state.json", "missing-default-variant.json", "empty.json"} {
		t.Run("refuse "+name, func(t *testing.T) {
			bad := readFile(t, filepath.Join("testdata", "invalid", name))
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			err := s.Reload(ctx)
			var re *ReloadError
			if !errors.As(err, &re) || !errors.Is(err, ErrInvalid) || re.SHA256 != sha(bad) {
				t.Fatalf("Reload = %v, want a *ReloadError wrapping ErrInvalid for sha256 %s", err, sha(bad))
			}
			if s.Err() == nil {
				t.Error("Err() = nil after a refused reload")
			}
			if got := digest(); got != "sha512" {
				t.Errorf("digest = %q after a refused file, want the last good sha512", got)
			}
			if raw, _ := s.Snapshot(); string(raw) != digest512 {
				t.Errorf("Snapshot = %q, want the last good bytes", raw)
			}
			waitEvent(t, stale, openfeature.ProviderStale, func(d openfeature.EventDetails) bool {
				return d.Message == err.Error() && d.EventMetadata["refused_sha256"] == sha(bad)
			})
			// Polling the same bad bytes again reports the same error without a new event.
			if err2 := s.Reload(ctx); err2 != err {
				t.Errorf("second Reload = %v, want the same error %v", err2, err)
			}
		})
	}
	select {
	case d := <-stale:
		t.Errorf("unexpected extra PROVIDER_STALE: %+v", d)
	default:
	}

	// A missing file is refused too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reload(missing) = %v, want ErrNotExist", err)
	}
	if got := digest(); got != "sha512" {
		t.Errorf("digest = %q with the file missing, want sha512", got)
	}

	// Restoring the good bytes clears the error and reports READY.
	if err := os.WriteFile(path, []byte(digest512), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil || s.Err() != nil {
		t.Fatalf("Reload after restore = %v, Err() = %v", err, s.Err())
	}
	waitEvent(t, ready, openfeature.ProviderReady, func(d openfeature.EventDetails) bool { return d.Message == "flag file in force" })
	if st := s.Client().State(); st != openfeature.ReadyState {
		t.Errorf("client state = %s, want READY", st)
	}
}

func TestWatchPicksUpChanges(t *testing.T) {
	path := writeTemp(t, []byte(digest256))
	s, tick := openSet(t, path)
	changes := events(t, s, openfeature.ProviderConfigChange)
	stale := events(t, s, openfeature.ProviderStale)
	ctx := t.Context()
	done := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { done <- s.Watch(wctx) }()

	if err := os.WriteFile(path, []byte(digest512), 0o644); err != nil {
		t.Fatal(err)
	}
	tick <- time.Now()
	waitEvent(t, changes, openfeature.ProviderConfigChange, func(d openfeature.EventDetails) bool {
		return slices.Contains(d.FlagChanges, CMSDigest)
	})
	if got := s.String(ctx, CMSDigest, "", EvalContext{}); got != "sha512" {
		t.Errorf("digest after watch tick = %q, want sha512", got)
	}

	if err := os.WriteFile(path, []byte(`{"flags":`), 0o644); err != nil {
		t.Fatal(err)
	}
	tick <- time.Now()
	waitEvent(t, stale, openfeature.ProviderStale, func(openfeature.EventDetails) bool { return true })
	if got := s.String(ctx, CMSDigest, "", EvalContext{}); got != "sha512" {
		t.Errorf("digest after a bad file = %q, want sha512", got)
	}
	if !errors.Is(s.Err(), ErrInvalid) {
		t.Errorf("Err() = %v, want ErrInvalid", s.Err())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

// TestConcurrentReadsDuringReload evaluates from many goroutines while the
// file flips between two valid versions; every read must see one of them,
// whole, and never an error. Run with -race.
func TestConcurrentReadsDuringReload(t *testing.T) {
	path := writeTemp(t, []byte(digest256))
	s, _ := openSet(t, path)
	ctx := t.Context()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	report := func(msg string) {
		select {
		case errs <- msg:
		default:
		}
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := s.Evaluate(ctx, CMSDigest, EvalContext{Tenant: "acme"})
				if r.Err != nil || (r.Value != "sha256" && r.Value != "sha512") {
					report("evaluation during reload: " + r.Reason + " " + r.Code)
				}
				raw, sum := s.Snapshot()
				if sha(raw) != sum || (!bytes.Equal(raw, []byte(digest256)) && !bytes.Equal(raw, []byte(digest512))) {
					report("snapshot bytes and sha256 disagree or are neither version")
				}
			}
		})
	}
	for i := range 20 {
		next := digest256
		if i%2 == 0 {
			next = digest512
		}
		if err := os.WriteFile(path, []byte(next), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(ctx); err != nil {
			t.Fatalf("Reload %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}

func TestSnapshotPart(t *testing.T) {
	path := writeTemp(t, []byte(digest256))
	s, _ := openSet(t, path)
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = s.Reload(t.Context())
	var buf bytes.Buffer
	meta, err := SnapshotPart{Set: s}.Write(t.Context(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != digest256 || meta["sha256"] != sha([]byte(digest256)) || meta["source"] != path {
		t.Errorf("part = %q %v, want the bytes in force and their sha256", buf.String(), meta)
	}
	if _, ok := meta["refused"].(string); !ok {
		t.Errorf("meta = %v, want the refused reload reported", meta)
	}
}

// SnapshotPart has the method set of snapshot.Part.
var _ interface {
	Name() string
	Kind() string
	Write(context.Context, io.Writer) (map[string]any, error)
} = SnapshotPart{}
