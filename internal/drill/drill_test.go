package drill

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/playbook"
)

// buildBinary builds the countersign command once: the fleet runs it as
// every release's node processes.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "countersign")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/countersign/countersign/cmd/countersign")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build countersign: %v", err)
	}
	return bin
}

// TestDrills runs every scenario end to end on the embedded default: real
// node processes, gateway, probes, playbook, SQLite. Each takes ~30 s.
func TestDrills(t *testing.T) {
	if testing.Short() {
		t.Skip("drills take ~30 s each; run without -short")
	}
	bin := buildBinary(t)
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			out := t.TempDir()
			logf, err := os.Create(filepath.Join(out, "control.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			var progress strings.Builder
			rep, err := Run(context.Background(), Config{Scenario: sc, Out: out, Artifact: bin, CanaryHold: 2 * time.Second,
				Timeout: 120 * time.Second, Progress: &progress, Logger: slog.New(slog.NewTextHandler(logf, nil))})
			if err != nil {
				t.Fatalf("drill could not run: %v\n%s", err, progress.String())
			}
			if !rep.Pass {
				t.Errorf("drill failed: %q\n%s", rep.Failures, progress.String())
			}
			if rep.Requests.Lost != 0 || rep.Requests.Duplicates != 0 {
				t.Errorf("lost %d, duplicates %d; want 0 and 0", rep.Requests.Lost, rep.Requests.Duplicates)
			}
			if rep.Requests.Accepted == 0 {
				t.Errorf("no request was accepted: the load did not run")
			}
			if rep.TimeToContainMs < 0 || rep.TimeToContainMs > 2000 {
				t.Errorf("time to contain = %d ms; want 0..2000", rep.TimeToContainMs)
			}
			if sc.ExpectRefusal {
				if rep.RunState != string(playbook.RunPaused) || !strings.Contains(rep.Refusal, "forward-fix") {
					t.Errorf("run %s, refusal %q; want paused with a forward-fix/backfill plan", rep.RunState, rep.Refusal)
				}
				return
			}
			if !rep.Audit.Consistent {
				t.Errorf("audit log not consistent across the incident: %s", rep.Audit.Detail)
			}
			if rep.RunState != string(playbook.RunSucceeded) {
				t.Errorf("playbook ended %q", rep.RunState)
			}
			want := map[string]string{"classify": "succeeded", "block-ingress": "succeeded", "snapshot": "succeeded", "isolate": "succeeded",
				"rollback": "succeeded", "verify": "succeeded", "canary": "succeeded", "reconcile": "unavailable"}
			got := map[string]string{}
			for _, s := range rep.Steps {
				got[s.ID] = s.Status
			}
			for id, st := range want {
				if got[id] != st {
					t.Errorf("step %s = %q; want %q", id, got[id], st)
				}
			}
			if rep.SnapshotManifest == "" {
				t.Errorf("no snapshot manifest in the report")
			} else if _, err := os.Stat(rep.SnapshotManifest); err != nil {
				t.Errorf("snapshot manifest: %v", err)
			}
			for _, u := range rep.Unavailable {
				if rep.Complete {
					t.Errorf("report says complete with %s unavailable", u)
				}
			}
		})
	}
}

func TestLookup(t *testing.T) {
	if _, err := Lookup("invalid-signatures"); err != nil {
		t.Error(err)
	}
	if _, err := Lookup("nope"); err == nil || !strings.Contains(err.Error(), "invalid-signatures") {
		t.Errorf("Lookup(nope) = %v; want an error listing the scenarios", err)
	}
}
