package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/internal/drill"
)

func init() {
	register("drill", "run a whole incident on the embedded default and grade the response", runDrill)
}

func runDrill(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "drill", "[--scenario NAME] [--json] [--out DIR]")
	scenario := fs.String("scenario", "invalid-signatures", "fault scenario v2 ships with: invalid-signatures | metadata-drift | hsm-timeouts | partial-persist | irreversible-migration")
	asJSON := fs.Bool("json", false, "print the graded report as JSON on stdout")
	out := fs.String("out", "", "directory for the world, logs and report (default: a new temporary directory)")
	hold := fs.Duration("hold", 5*time.Second, "canary hold per stage (1% → 10% → 50% → 100%)")
	conc := fs.Int("concurrency", 8, "concurrent SDK clients applying load through the gateway")
	timeout := fs.Duration("timeout", 150*time.Second, "give up after this long")
	verbose := fs.Bool("v", false, "log the control plane to stderr")
	extQ := addExternalQueueFlags(env, fs, "instead of the world's embedded JetStream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	queueURL, err := extQ.value()
	if err != nil {
		return err
	}
	sc, err := drill.Lookup(*scenario)
	if err != nil {
		return usageError("%v", err)
	}
	if *out == "" {
		if *out, err = os.MkdirTemp("", "countersign-drill-"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(*out, "control.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(env.stderr, nil))
	} else {
		logger = slog.New(slog.NewJSONHandler(logFile, nil))
	}
	progress := env.stderr
	if !*asJSON {
		progress = env.stdout
	}
	rep, err := drill.Run(ctx, drill.Config{Scenario: sc, Out: *out, Concurrency: *conc, CanaryHold: *hold, Timeout: *timeout,
		QueueURL: queueURL, Progress: progress, Logger: logger})
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if *asJSON {
		fmt.Fprintln(env.stdout, string(b))
	} else {
		printReport(env, rep)
	}
	if !rep.Pass {
		return &exitError{code: 1, err: fmt.Errorf("drill %s FAILED (%d findings); report in %s", rep.Scenario, len(rep.Failures), filepath.Join(*out, "report.json"))}
	}
	return nil
}

func printReport(env *cliEnv, r *drill.Report) {
	w := env.stdout
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n== drill %s: %s (%.1fs) ==\n", r.Scenario, verdict, float64(r.DurationMs)/1000)
	fmt.Fprintf(w, "requests        sent %d, accepted %d, refused 503 %d, errors %d, LOST %d, DUPLICATES %d\n",
		r.Requests.Sent, r.Requests.Accepted, r.Requests.Refused503, r.Requests.Errors, r.Requests.Lost, r.Requests.Duplicates)
	fmt.Fprintf(w, "time to detect  %d ms\ntime to contain %d ms (target ≤ 2000)\ntime to restore %d ms\n", r.TimeToDetectMs, r.TimeToContainMs, r.TimeToRestoreMs)
	fmt.Fprintf(w, "incident        %s, playbook run %s ended %s\n", r.Incident, r.RunID, r.RunState)
	for _, s := range r.Steps {
		line := fmt.Sprintf("  %-14s %-12s", s.ID, s.Status)
		if !s.Started.IsZero() && !s.Finished.IsZero() {
			line += fmt.Sprintf(" %6.2fs", s.Finished.Sub(s.Started).Seconds())
		}
		if s.Error != "" {
			line += "  " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "async           %d sent, %d signed\n", r.Requests.AsyncSent, r.Requests.AsyncAccepted)
	fmt.Fprintf(w, "snapshot        %s\n", r.SnapshotManifest)
	if rc := r.Reconciliation; rc != nil {
		fmt.Fprintf(w, "reconciliation  valid %d, invalid %d, metadata-drift %d, unverifiable %d, replayed %d, manual review %d\n",
			rc.Valid, rc.Invalid, rc.MetadataDrift, rc.Unverifiable, rc.Replayed, rc.ManualReview)
	}
	delivered := 0
	for _, n := range r.Notices {
		if n.Delivered {
			delivered++
		}
	}
	fmt.Fprintf(w, "notices         %d of %d deliveries made (phases A-D, file and webhook channels)\n", delivered, len(r.Notices))
	fmt.Fprintf(w, "evidence        %s (verified offline: %v)\n", r.EvidenceBundle, r.EvidenceVerified)
	fmt.Fprintf(w, "postmortem      %s\n", r.Postmortem)
	fmt.Fprintf(w, "audit log       consistent across the incident: %v %s\n", r.Audit.Consistent, r.Audit.Detail)
	if !r.Complete {
		fmt.Fprintf(w, "NOT AVAILABLE IN THIS BUILD (not counted as passed): %v\n", r.Unavailable)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILURE: %s\n", f)
	}
	fmt.Fprintf(w, "report          %s\n", filepath.Join(r.Dir, "report.json"))
}
