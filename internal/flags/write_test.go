package flags

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/auditlog"
)

func TestSetVariantRecordsBeforeChange(t *testing.T) {
	path := copyFixture(t, "targeting.flagd.json")
	before := readFile(t, path)
	s, _ := openSet(t, path)
	ctx := t.Context()
	pilot := EvalContext{Tenant: "pilot-1"}
	if !s.Bool(ctx, NewSigningPath, false, pilot) {
		t.Fatal("pilot tenant should start on the new path")
	}

	rec := &memRecorder{}
	rec.before = func(ev auditlog.Event) {
		if got := sha(readFile(t, path)); got != ev.Details["previous_sha256"] || got == ev.Details["sha256"] {
			t.Errorf("%s: the file changed before the audit event was recorded", ev.Type)
		}
	}
	c, err := s.SetVariant(ctx, NewSigningPath, "off", "alice", "isolate: regressive signing path", rec)
	if err != nil {
		t.Fatalf("SetVariant: %v", err)
	}
	want := Change{Flag: NewSigningPath, FromState: "ENABLED", ToState: "ENABLED", FromVariant: "off", ToVariant: "off",
		PreviousSHA256: sha(before), SHA256: sha(readFile(t, path)), Changed: true}
	if c != want {
		t.Errorf("Change = %+v, want %+v", c, want)
	}

	// Pinned for every context: the targeting that sent pilots to "on" is gone.
	for _, ec := range []EvalContext{pilot, {Tenant: "acme"}, {Tenant: "tenant-00042"}} {
		if r := s.Evaluate(ctx, NewSigningPath, ec); r.Value != false || r.Reason != "STATIC" {
			t.Errorf("after SetVariant off, %+v → %+v, want false STATIC", ec, r)
		}
	}
	evs := rec.all()
	if len(evs) != 1 {
		t.Fatalf("recorded %d events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Type != EventVariantSet || ev.Actor != "alice" || ev.Subject != NewSigningPath || ev.Time.IsZero() {
		t.Errorf("event = %+v", ev)
	}
	for k, v := range map[string]any{"reason": "isolate: regressive signing path", "to_variant": "off",
		"previous_sha256": sha(before), "sha256": c.SHA256, "path": path} {
		if ev.Details[k] != v {
			t.Errorf("details[%s] = %v, want %v", k, ev.Details[k], v)
		}
	}
	if removed, _ := ev.Details["removed_targeting"].(string); !json.Valid([]byte(removed)) || !bytes.Contains([]byte(removed), []byte("fractional")) {
		t.Errorf("removed_targeting = %q, want the removed rules", removed)
	}
	// Other flags and $evaluators survive the rewrite.
	if got := s.String(ctx, CMSDigest, "", EvalContext{Tenant: "acme"}); got != "sha384" {
		t.Errorf("%s for acme = %q after rewriting another flag, want sha384", CMSDigest, got)
	}

	// Setting it again is not a flip: nothing recorded, nothing written.
	after := readFile(t, path)
	c, err = s.SetVariant(ctx, NewSigningPath, "off", "alice", "again", rec)
	if err != nil || c.Changed || len(rec.all()) != 1 || !bytes.Equal(readFile(t, path), after) {
		t.Errorf("repeat SetVariant = %+v, %v; %d events; want no change", c, err, len(rec.all()))
	}

	// Disable: every evaluation gets the code default.
	c, err = s.Disable(ctx, CMSDigest, "bob", "drift: digest changed", rec)
	if err != nil || !c.Changed || c.ToState != "DISABLED" {
		t.Fatalf("Disable = %+v, %v", c, err)
	}
	if r := s.Evaluate(ctx, CMSDigest, EvalContext{Tenant: "acme"}); r.Reason != "DISABLED" {
		t.Errorf("after Disable: %+v, want DISABLED", r)
	}
	if evs := rec.all(); len(evs) != 2 || evs[1].Type != EventDisabled || evs[1].Actor != "bob" {
		t.Errorf("events after Disable = %+v", evs)
	}
	// Re-enabling with SetVariant works from DISABLED.
	if _, err := s.SetVariant(ctx, CMSDigest, "sha256", "bob", "restore", rec); err != nil {
		t.Fatal(err)
	}
	if got := s.String(ctx, CMSDigest, "", EvalContext{Tenant: "acme"}); got != "sha256" {
		t.Errorf("after re-enable: %q, want sha256", got)
	}
}

func TestSetVariantRefusals(t *testing.T) {
	tests := []struct {
		name            string
		flag, variant   string
		actor, reason   string
		rec             *memRecorder
		wantErr         error
		wantEventsTried int
	}{
		{"recorder fails", NewSigningPath, "off", "alice", "isolate", &memRecorder{fail: errRecorderDown}, errRecorderDown, 1},
		{"unknown flag", "no.such.flag", "on", "alice", "x", &memRecorder{}, ErrUnknownFlag, 0},
		{"unknown variant", CMSDigest, "md5", "alice", "x", &memRecorder{}, ErrUnknownVariant, 0},
		{"no actor", CMSDigest, "sha512", "", "x", &memRecorder{}, ErrNoActor, 0},
		{"no reason", CMSDigest, "sha512", "alice", "", &memRecorder{}, ErrNoActor, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := copyFixture(t, "targeting.flagd.json")
			before := readFile(t, path)
			tried := 0
			tt.rec.before = func(auditlog.Event) { tried++ }
			_, err := SetVariant(t.Context(), path, tt.flag, tt.variant, tt.actor, tt.reason, tt.rec)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("SetVariant = %v, want %v", err, tt.wantErr)
			}
			if tried != tt.wantEventsTried {
				t.Errorf("Record called %d times, want %d", tried, tt.wantEventsTried)
			}
			if got := readFile(t, path); !bytes.Equal(got, before) {
				t.Error("the file changed although the change was refused")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the flag file (no temporary left)", len(entries))
			}
		})
	}
}

// TestSetVariantAtomic flips a flag from several goroutines while others
// read the file; a reader must never see a partial or invalid file, and
// every flip must be recorded.
func TestSetVariantAtomic(t *testing.T) {
	path := copyFixture(t, "targeting.flagd.json")
	rec := &memRecorder{}
	ctx := t.Context()
	stop := make(chan struct{})
	var readers, writers sync.WaitGroup
	bad := make(chan error, 1)
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			raw, err := os.ReadFile(path)
			if err == nil {
				_, err = compile(raw)
			}
			if err != nil {
				select {
				case bad <- err:
				default:
				}
				return
			}
		}
	})
	variants := []string{"sha256", "sha384", "sha512"}
	var mu sync.Mutex
	flips := 0
	for w := range 2 {
		writers.Go(func() {
			for i := range 6 {
				c, err := SetVariant(ctx, path, CMSDigest, variants[(i+w)%3], "writer", "atomicity test", rec)
				if err != nil {
					t.Errorf("SetVariant: %v", err)
					return
				}
				if c.Changed {
					mu.Lock()
					flips++
					mu.Unlock()
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	select {
	case err := <-bad:
		t.Fatalf("a reader saw an unusable file: %v", err)
	default:
	}
	if got := len(rec.all()); got != flips {
		t.Errorf("recorded %d events for %d flips", got, flips)
	}
	// The chain of recorded hashes is unbroken: each change starts from the
	// file the previous one wrote.
	evs := rec.all()
	for i := 1; i < len(evs); i++ {
		if evs[i].Details["previous_sha256"] != evs[i-1].Details["sha256"] {
			t.Errorf("event %d starts from %v, previous wrote %v", i, evs[i].Details["previous_sha256"], evs[i-1].Details["sha256"])
		}
	}
	if last := evs[len(evs)-1].Details["sha256"]; last != sha(readFile(t, path)) {
		t.Errorf("last recorded sha256 %v is not the file's", last)
	}
}
