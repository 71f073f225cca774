package drill

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/queue/kafka"
	"github.com/countersign/countersign/internal/queue/queuetest"
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
			rep := runDrill(t, Config{Scenario: sc, Out: out, Artifact: bin})
			checkDrill(t, sc, rep, out)
		})
	}
}

// TestDrillOnKafka runs the main scenario with the world's queue on Kafka
// instead of the embedded JetStream: the async workers consume the work
// topic, and the snapshot, replay and reconcile steps use the Kafka
// backend's archive, positions and re-publish. The brokers are kfake,
// franz-go's protocol-level FAKE Kafka cluster, listening on loopback for
// the node processes: no real Kafka broker can run on the development
// machines.
func TestDrillOnKafka(t *testing.T) {
	if testing.Short() {
		t.Skip("a drill takes ~30 s; run without -short")
	}
	brokers := queuetest.FakeKafka(t)
	sc, err := Lookup("invalid-signatures")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rep := runDrill(t, Config{Scenario: sc, Out: out, Artifact: buildBinary(t),
		QueueURL: "kafka://" + strings.Join(brokers, ",") + "/drill.sign"})
	checkDrill(t, sc, rep, out)
	for _, st := range rep.Steps {
		if st.ID == "replay" {
			t.Logf("on Kafka: %d requests accepted, %d of %d async jobs signed, replay %s, contain %d ms",
				rep.Requests.Accepted, rep.Requests.AsyncAccepted, rep.Requests.AsyncSent, st.Status, rep.TimeToContainMs)
		}
	}

	// The queue URL (which may carry a password) reached the nodes through
	// the fleet's environment: it is neither in their recorded arguments
	// nor anywhere else in the fleet's state.
	if b, err := os.ReadFile(filepath.Join(out, "world", "fleet", "fleet.json")); err != nil {
		t.Errorf("fleet state: %v", err)
	} else if strings.Contains(string(b), "kafka://") || strings.Contains(string(b), "--queue-url") {
		t.Errorf("fleet.json records the queue URL:\n%s", b)
	}

	// The snapshot holds Kafka's archive and positions, not JetStream's.
	b, err := os.ReadFile(rep.SnapshotManifest)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Parts []struct {
			Name string         `json:"name"`
			Meta map[string]any `json:"meta"`
		} `json:"parts"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	formats := map[string]any{}
	for _, p := range m.Parts {
		formats[p.Name] = p.Meta["format"]
		if p.Name == "queue-positions.json" {
			formats[p.Name] = p.Meta["backend"]
		}
	}
	if formats["queue.archive"] != kafka.SnapshotFormat || formats["queue-positions.json"] != "kafka" {
		t.Errorf("snapshot queue parts %v; want the %s archive and kafka positions\n%s", formats, kafka.SnapshotFormat, b)
	}
}

// runDrill runs one drill with the test defaults (2 s canary holds, a
// 120 s bound), the control plane's log in <out>/control.log.
func runDrill(t *testing.T, cfg Config) *Report {
	t.Helper()
	logf, err := os.Create(filepath.Join(cfg.Out, "control.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	var progress strings.Builder
	cfg.CanaryHold, cfg.Timeout = 2*time.Second, 120*time.Second
	cfg.Progress, cfg.Logger = &progress, slog.New(slog.NewTextHandler(logf, nil))
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("drill could not run: %v\n%s", err, progress.String())
	}
	if !rep.Pass {
		t.Errorf("drill failed: %q\n%s", rep.Failures, progress.String())
	}
	return rep
}

// checkDrill checks what every drill of scenario sc must show.
func checkDrill(t *testing.T, sc Scenario, rep *Report, out string) {
	t.Helper()
	if rep.Requests.Lost != 0 || rep.Requests.Duplicates != 0 {
		t.Errorf("lost %d, duplicates %d; want 0 and 0", rep.Requests.Lost, rep.Requests.Duplicates)
	}
	if rep.Requests.Accepted == 0 {
		t.Errorf("no request was accepted: the load did not run")
	}
	if rep.TimeToContainMs < 0 || rep.TimeToContainMs > 2000 {
		t.Errorf("time to contain = %d ms; want 0..2000", rep.TimeToContainMs)
	}
	phaseA := false
	for _, n := range rep.Notices {
		if n.Phase == "A" && n.Delivered {
			phaseA = true
		}
		if !n.Delivered {
			t.Errorf("notice %+v not delivered", n)
		}
		if n.File != "" {
			if _, err := os.Stat(n.File); err != nil || !strings.HasPrefix(n.File, filepath.Join(out, "notices")) {
				t.Errorf("notice file %s: %v; want it under <out>/notices", n.File, err)
			}
		}
	}
	if !phaseA {
		t.Errorf("no delivered phase A notice in %+v", rep.Notices)
	}
	channels := map[string]bool{}
	for _, n := range rep.Notices {
		channels[n.Channel] = true
	}
	if !channels["file"] || !channels["webhook"] {
		t.Errorf("notice channels %v; want file and webhook", channels)
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
		"rollback": "succeeded", "verify": "succeeded", "canary": "succeeded",
		"reconcile": "succeeded", "notify": "succeeded", "close": "succeeded"}
	got := map[string]string{}
	for _, s := range rep.Steps {
		got[s.ID] = s.Status
	}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("step %s = %q; want %q", id, got[id], st)
		}
	}
	// Replay runs when the snapshot counted in-flight async jobs.
	if got["replay"] != "succeeded" && got["replay"] != "skipped" {
		t.Errorf("step replay = %q; want succeeded or skipped", got["replay"])
	}
	if rep.Requests.AsyncSent == 0 || rep.Requests.AsyncAccepted == 0 {
		t.Errorf("async requests sent %d, signed %d; want both > 0", rep.Requests.AsyncSent, rep.Requests.AsyncAccepted)
	}
	if v, err := flagVariant(filepath.Join(out, "world", "releases", "v2.flagd.json"), flags.NewSigningPath); err != nil || v != "off" {
		t.Errorf("v2's %s = %q (%v); want off after isolate", flags.NewSigningPath, v, err)
	}
	if rep.SnapshotManifest == "" {
		t.Errorf("no snapshot manifest in the report")
	} else if _, err := os.Stat(rep.SnapshotManifest); err != nil {
		t.Errorf("snapshot manifest: %v", err)
	}
	if len(rep.Unavailable) != 0 || !rep.Complete {
		t.Errorf("unavailable steps %v (complete %v); want none", rep.Unavailable, rep.Complete)
	}
	if !rep.EvidenceVerified {
		t.Errorf("evidence bundle %q not verified", rep.EvidenceBundle)
	}
	if rep.Postmortem == "" {
		t.Errorf("no postmortem")
	} else if b, err := os.ReadFile(rep.Postmortem); err != nil || !strings.Contains(string(b), rep.Incident) {
		t.Errorf("postmortem %s: %v; want it to name %s", rep.Postmortem, err, rep.Incident)
	}
	r := rep.Reconciliation
	switch {
	case r == nil:
		t.Errorf("no reconciliation in the report")
	case sc.Fault == "invalid-signatures" && r.Invalid == 0:
		t.Errorf("reconciliation %+v; want invalid > 0", *r)
	case sc.Fault == "metadata-drift" && r.MetadataDrift == 0:
		t.Errorf("reconciliation %+v; want metadata_drift > 0", *r)
	case !r.LogConsistent:
		t.Errorf("reconciliation did not prove the log consistent")
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

// flagVariant reads a flag's default variant from a flagd-format file.
func flagVariant(path, flag string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var doc struct {
		Flags map[string]struct {
			DefaultVariant string `json:"defaultVariant"`
		} `json:"flags"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", err
	}
	return doc.Flags[flag].DefaultVariant, nil
}
