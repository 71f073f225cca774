package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("reconcile", "replay in-flight work, audit forensics and window verification for an incident", runReconcile)
}

func runReconcile(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "reconcile", "--release R --from T [--to T] [flags]")
	data := fs.String("data", "./data", "data directory")
	releases := fs.String("release", "", "regressive release(s), comma-separated (required)")
	from := fs.String("from", "", "window start, RFC 3339: when the regressive release was deployed (required)")
	to := fs.String("to", "", "window end, RFC 3339 (default now)")
	incident := fs.String("incident", "", "incident ID stamped on the report")
	replay := fs.Bool("replay", false, "replay the in-flight set through a worker of the stable release")
	dryRun := fs.Bool("dry-run", false, "list the in-flight set without replaying (implies the replay section)")
	stable := fs.String("stable-release", envOr(env, "COUNTERSIGN_RELEASE", "dev"), "release stamped on signatures made by the replay")
	rate := fs.Float64("rate", reconcile.DefaultReplayRate, "replay: jobs per second")
	extQ := addExternalQueueFlags(env, fs, "of the replay, instead of the data dir's embedded one")
	noQueue := fs.Bool("no-queue", false, "replay from the job rows only, without quarantining queued messages")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	mdOut := fs.String("md", "", "write the report as Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *releases == "" || *from == "" {
		return usageError("reconcile: --release and --from are required")
	}
	w := reconcile.Window{Releases: strings.Split(*releases, ",")}
	qurl, err := extQ.value()
	if err != nil {
		return err
	}
	if w.From, err = time.Parse(time.RFC3339Nano, *from); err != nil {
		return usageError("reconcile: --from: %v", err)
	}
	w.To = time.Now().UTC()
	if *to != "" {
		if w.To, err = time.Parse(time.RFC3339Nano, *to); err != nil {
			return usageError("reconcile: --to: %v", err)
		}
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	inst, err := install.Open(ctx, *data, install.OpenOptions{Release: *stable, Instance: "reconcile", Logger: logger})
	if err != nil {
		return err
	}
	defer inst.Close()
	before, err := reconcile.CheckpointBefore(inst.HistoryPath(), w.From)
	if errors.Is(err, reconcile.ErrNoCheckpointBefore) {
		fmt.Fprintf(env.stderr, "reconcile: no checkpoint before %s; proving from the empty tree\n", w.From.Format(time.RFC3339))
		before, err = nil, nil
	}
	if err != nil {
		return err
	}
	var rr *reconcile.ReplayReport
	if *replay || *dryRun {
		if rr, err = reconcileReplay(ctx, inst, w, *stable, *rate, *dryRun, *noQueue, qurl, *data, logger); err != nil {
			return err
		}
	}
	rep, err := reconcile.Run(ctx, reconcile.Config{Store: inst.Store, VerifierKey: inst.Config.LogVerifierKey, Before: before,
		Window: w, Incident: *incident, Replay: rr})
	if err != nil {
		return err
	}
	if *jsonOut != "" {
		b, err := rep.JSON()
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, rep.Markdown(), 0o644); err != nil {
			return err
		}
	}
	printReconcileSummary(env, rep)
	return nil
}

func reconcileReplay(ctx context.Context, inst *install.Installation, w reconcile.Window, stable string, rate float64, dryRun, noQueue bool,
	queueURL, data string, logger *slog.Logger) (*reconcile.ReplayReport, error) {
	cfg := reconcile.ReplayConfig{Jobs: inst.Store, Window: w, IncludeOlder: true, Rate: rate, DryRun: dryRun, Logger: logger}
	if dryRun {
		return reconcile.Replay(ctx, cfg)
	}
	q, err := openQueue(ctx, queueOptions{data: data, url: queueURL, logger: logger})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	if !noQueue {
		cfg.Queue = q
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	committer := store.NewCommitter(runCtx, inst.Store, store.CommitterConfig{})
	defer committer.Close()
	srv, err := node.New(node.Config{Store: inst.Store, Committer: committer, Keys: inst.Keys, Jobs: inst.Store, Queue: q,
		Release: stable, Instance: "reconcile-" + fmt.Sprint(os.Getpid()), Logger: logger})
	if err != nil {
		return nil, err
	}
	worker, err := node.NewWorker(srv, node.WorkerConfig{Queue: q, Logger: logger})
	if err != nil {
		return nil, err
	}
	cfg.Processor = worker
	return reconcile.Replay(ctx, cfg)
}

func printReconcileSummary(env *cliEnv, rep *reconcile.Report) {
	s := rep.Summary()
	out := env.stdout
	if rp := rep.Replay; rp != nil {
		verb := "replayed"
		if rp.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(out, "in-flight: %s %d, manual review %d, failed %d\n", verb, len(rp.Found.Replay), len(rp.Found.ManualReview), len(rp.Failed))
		for _, it := range rp.Found.Replay {
			fmt.Fprintf(out, "  replay %s (%s, job %s)\n", it.MessageID, it.Kind, it.JobID)
		}
		for _, it := range rp.Found.ManualReview {
			fmt.Fprintf(out, "  manual %s: %s\n", it.MessageID, it.Reason)
		}
	}
	fmt.Fprintf(out, "audit: checkpoint %d -> %d consistent=%v, gaps %d, key violations %d\n",
		s.CheckpointBefore, s.CheckpointAfter, s.LogConsistent, s.Gaps, s.KeyViolations)
	fmt.Fprintf(out, "signatures: %d verified:", s.Signatures)
	for _, c := range reconcile.Classes {
		fmt.Fprintf(out, " %s %d", c, s.Classes[string(c)])
	}
	fmt.Fprintln(out)
	for _, t := range rep.Signatures.Remediation {
		for _, d := range t.Documents {
			fmt.Fprintf(out, "  %s %s %s: %s -> %s\n", t.TenantID, d.SignatureID, d.DocumentID, d.Class, d.Remedy)
		}
	}
}
