package reconcile_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/reconcile/reconciletest"
	"github.com/countersign/countersign/internal/store"
)

func TestWindowVerificationCounts(t *testing.T) {
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	ctx := context.Background()
	before, err := reconcile.CheckpointBefore(w.Inst.HistoryPath(), w.Deploy)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := reconcile.Audit(ctx, reconcile.AuditConfig{Store: w.Inst.Store, VerifierKey: w.Inst.Config.LogVerifierKey, Before: before, Window: w.Window})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := reconcile.VerifyWindow(ctx, w.Inst.Store, w.Window, audit.Before.Size, reconcile.VerifyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[reconcile.Class]int{reconcile.ClassValid: 8, reconcile.ClassInvalid: 5, reconcile.ClassDrift: 2, reconcile.ClassUnverifiable: 2}
	for c, n := range want {
		if rep.Counts[c] != n {
			t.Errorf("class %s: got %d, want %d", c, rep.Counts[c], n)
		}
	}
	if rep.Total != 17 {
		t.Errorf("total = %d, want 17 (the stable release's signatures before the window must not be selected)", rep.Total)
	}
	wantRemedy := map[reconcile.Remedy]int{reconcile.RemedyVoidReissue: 5, reconcile.RemedyAttest: 2, reconcile.RemedyResign: 2}
	got := rep.RemedyCounts()
	for m, n := range wantRemedy {
		if got[m] != n {
			t.Errorf("remedy %s: got %d, want %d (all: %v)", m, got[m], n, got)
		}
	}
	if len(rep.Remediation) != 2 || rep.Remediation[0].TenantID != reconciletest.Other || len(rep.Remediation[0].Documents) != 1 ||
		rep.Remediation[1].TenantID != reconciletest.Tenant || len(rep.Remediation[1].Documents) != 8 {
		t.Errorf("remediation groups = %+v, want acme:1 then dev:8", rep.Remediation)
	}
}

func TestAuditForensics(t *testing.T) {
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	ctx := context.Background()
	before, err := reconcile.CheckpointBefore(w.Inst.HistoryPath(), w.Deploy)
	if err != nil {
		t.Fatal(err)
	}
	a, err := reconcile.Audit(ctx, reconcile.AuditConfig{Store: w.Inst.Store, VerifierKey: w.Inst.Config.LogVerifierKey, Before: before, Window: w.Window})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Consistent || a.Before.Size == 0 || a.After.Size <= a.Before.Size || len(a.ConsistencyProof) == 0 {
		t.Errorf("consistency: %v, %d -> %d, proof %d hashes", a.Consistent, a.Before.Size, a.After.Size, len(a.ConsistencyProof))
	}
	if err := reconcile.CheckConsistencyProof([]byte(a.Before.Note), []byte(a.After.Note), a.ConsistencyProof, w.Inst.Config.LogVerifierKey); err != nil {
		t.Errorf("offline consistency check: %v", err)
	}
	wantCounts := map[string]int{"signature.created": 16, "job.accepted": 4, "keys.frozen": 2, "keys.unfrozen": 1}
	for typ, n := range wantCounts {
		if a.EventCounts[typ] != n {
			t.Errorf("events %s = %d, want %d (all %v)", typ, a.EventCounts[typ], n, a.EventCounts)
		}
	}
	if got := a.CountsByRelease[reconciletest.Regressive]["signature.created"]; got != 16 {
		t.Errorf("regressive release signature events = %d, want 16", got)
	}
	if len(a.Gaps) != 0 {
		t.Errorf("gaps = %+v, want none", a.Gaps)
	}
	if a.KeyEventsViolating != 1 {
		t.Errorf("key violations = %d, want 1 (key created during the window): %+v", a.KeyEventsViolating, a.KeyFindings)
	}
	if a.OK() {
		t.Error("report with a key violation is OK")
	}

	// A signature row whose artifact changed, and a deleted event, are found.
	t.Run("tampered", func(t *testing.T) {
		db := reconciletest.Attacker(t, w.Dir)
		reconciletest.Exec(t, db, `UPDATE signatures SET signature = X'00' WHERE id = 'sig_0005'`)
		reconciletest.Exec(t, db, `DELETE FROM audit_events WHERE idx = (SELECT audit_index FROM signatures WHERE id = 'sig_0006')`)
		a, err := reconcile.Audit(ctx, reconcile.AuditConfig{Store: w.Inst.Store, VerifierKey: w.Inst.Config.LogVerifierKey, Before: before, Window: w.Window})
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, g := range a.Gaps {
			kinds[g.Kind]++
		}
		if kinds[reconcile.GapArtifactMismatch] != 1 || kinds[reconcile.GapMissingEvent] != 1 || kinds[reconcile.GapSignatureWithoutEvent] != 1 {
			t.Errorf("gaps = %+v", a.Gaps)
		}
	})
}

func TestReplayTwiceSignsOnce(t *testing.T) {
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	ctx := context.Background()
	q, err := jetstream.OpenEmbedded(ctx, jetstream.ServerConfig{StoreDir: filepath.Join(t.TempDir(), "js")}, jetstream.Config{Logger: reconciletest.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	committer := store.NewCommitter(cctx, w.Inst.Store, store.CommitterConfig{})
	defer committer.Close()
	srv, err := node.New(node.Config{Store: w.Inst.Store, Committer: committer, Keys: w.Inst.Keys, Jobs: w.Inst.Store, Queue: q,
		Release: reconciletest.Stable, Instance: "stable-1", Logger: reconciletest.QuietLogger(), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	worker, err := node.NewWorker(srv, node.WorkerConfig{Queue: q, Logger: reconciletest.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		size, err := w.Inst.Store.AuditSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sigs, err := w.Inst.Store.Signatures(ctx, 0, size, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(sigs)
	}
	cfg := reconcile.ReplayConfig{Jobs: w.Inst.Store, Processor: worker, Queue: q, Window: w.Window, Rate: 1000, DryRun: true}
	dry, err := reconcile.Replay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := count()
	if len(dry.Found.Replay) != 3 || len(dry.Found.ManualReview) != 1 || len(dry.Replayed) != 0 {
		t.Fatalf("dry run found %d to replay, %d for review, replayed %d; want 3, 1, 0", len(dry.Found.Replay), len(dry.Found.ManualReview), len(dry.Replayed))
	}
	cfg.DryRun = false
	first, err := reconcile.Replay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Replayed) != 3 || len(first.Failed) != 0 {
		t.Fatalf("first replay: replayed %v failed %+v", first.Replayed, first.Failed)
	}
	for id, st := range first.Outcome {
		if st != store.JobSigned {
			t.Errorf("job %s is %s after replay", id, st)
		}
	}
	if got := count(); got != start+3 {
		t.Fatalf("signatures after first replay = %d, want %d", got, start+3)
	}
	second, err := reconcile.Replay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := count(); got != start+3 || len(second.Replayed) != 0 || len(second.Found.ManualReview) != 1 {
		t.Fatalf("second replay: signatures %d (want %d), replayed %v, manual %d", got, start+3, second.Replayed, len(second.Found.ManualReview))
	}
	// Processing the old messages by hand again signs nothing either.
	for _, it := range first.Found.Replay {
		if err := worker.Process(ctx, reconcile.JobMessage(it.TenantID, it.IdempotencyKey, it.JobID)); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(); got != start+3 {
		t.Fatalf("signatures after re-processing = %d, want %d", got, start+3)
	}
}
