package reconcile_test

import (
	"context"
	"errors"
	"testing"

	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/reconcile/reconciletest"
)

// TestVerifyWindowPages checks that the pipelined VerifyWindow, whose store
// reads span several pages and overlap verification, selects and
// classifies exactly what WindowSignatures + VerifySignatures do.
func TestVerifyWindowPages(t *testing.T) {
	ctx := context.Background()
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	before, err := reconcile.CheckpointBefore(w.Inst.HistoryPath(), w.Deploy)
	if err != nil {
		t.Fatal(err)
	}
	a, err := reconcile.Audit(ctx, reconcile.AuditConfig{Store: w.Inst.Store, VerifierKey: w.Inst.Config.LogVerifierKey, Before: before, Window: w.Window})
	if err != nil {
		t.Fatal(err)
	}
	const extra = 11_000 // more than two store pages
	w.CommitRaw(t, extra)

	sigs, err := reconcile.WindowSignatures(ctx, w.Inst.Store, w.Window, a.Before.Size)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(sigs), 17+extra; got != want {
		t.Fatalf("WindowSignatures: got %d signatures, want %d", got, want)
	}
	seen := map[string]bool{}
	for i, s := range sigs {
		if seen[s.ID] {
			t.Fatalf("signature %s selected twice", s.ID)
		}
		seen[s.ID] = true
		if i > 0 && sigs[i-1].AuditIndex >= s.AuditIndex {
			t.Fatalf("not ordered by audit index at %d: %d then %d", i, sigs[i-1].AuditIndex, s.AuditIndex)
		}
	}
	vs, err := reconcile.VerifySignatures(ctx, w.Inst.Store, sigs, reconcile.VerifyConfig{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v.SignatureID != sigs[i].ID {
			t.Fatalf("verdict %d is for %s, want %s", i, v.SignatureID, sigs[i].ID)
		}
	}
	want := reconcile.Summarize(vs)
	got, err := reconcile.VerifyWindow(ctx, w.Inst.Store, w.Window, a.Before.Size, reconcile.VerifyConfig{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != want.Total || got.Workers != 3 || got.Elapsed <= 0 {
		t.Errorf("VerifyWindow: total %d workers %d elapsed %v, want total %d, 3 workers, elapsed > 0", got.Total, got.Workers, got.Elapsed, want.Total)
	}
	for _, c := range reconcile.Classes {
		if got.Counts[c] != want.Counts[c] {
			t.Errorf("class %s: VerifyWindow %d, VerifySignatures %d", c, got.Counts[c], want.Counts[c])
		}
	}
	if got.Counts[reconcile.ClassValid] != 8+extra {
		t.Errorf("valid = %d, want %d", got.Counts[reconcile.ClassValid], 8+extra)
	}
	gr, wr := got.RemedyCounts(), want.RemedyCounts()
	for _, m := range []reconcile.Remedy{reconcile.RemedyVoidReissue, reconcile.RemedyAttest, reconcile.RemedyResign, reconcile.RemedyManual} {
		if gr[m] != wr[m] {
			t.Errorf("remedy %s: VerifyWindow %d, VerifySignatures %d", m, gr[m], wr[m])
		}
	}
}

func TestVerifyWindowCanceled(t *testing.T) {
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	w.CommitRaw(t, 6000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := reconcile.VerifyWindow(ctx, w.Inst.Store, w.Window, 0, reconcile.VerifyConfig{}); !errors.Is(err, context.Canceled) {
		t.Errorf("VerifyWindow with a canceled context: got %v, want context.Canceled", err)
	}
	sigs := w.Raw(t, 500)
	if _, err := reconcile.VerifySignatures(ctx, w.Inst.Store, sigs, reconcile.VerifyConfig{}); !errors.Is(err, context.Canceled) {
		t.Errorf("VerifySignatures with a canceled context: got %v, want context.Canceled", err)
	}
}
