package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// testMixedRuns commits a batch whose rows differ in the columns backends
// bind once per run of equal rows (tenant, key, key version, format,
// algorithm, release, instance, and the event's type and actor), in runs
// of different lengths, together with a replay of a stored key and an
// in-batch duplicate: every row and event must round-trip column for
// column, at gap-free indexes in slice order.
func testMixedRuns(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	old := write("beta", "stored", 0)
	rs, err := s.CommitSignatures(ctx, []store.SignatureWrite{old})
	must(t, "CommitSignatures(first)", err)
	old.Signature.AuditIndex = rs[0].AuditIndex

	var ws []store.SignatureWrite
	add := func(tenant, key string, mutate func(*store.SignatureWrite)) {
		w := write(tenant, key, len(ws)+1)
		if mutate != nil {
			mutate(&w)
		}
		ws = append(ws, w)
	}
	for i := range 3 {
		add("acme", fmt.Sprint("a", i), nil)
	}
	add("beta", "b0", nil)
	add("acme", "a3", func(w *store.SignatureWrite) { w.Signature.KeyName, w.Signature.KeyVersion = "invoices", 3 })
	add("acme", "a4", func(w *store.SignatureWrite) { w.Signature.Format, w.Signature.Release = "jws", "v9" })
	add("beta", "stored", nil) // replay of a stored key
	add("acme", "a5", func(w *store.SignatureWrite) { w.Event.Actor, w.Signature.Instance = "operator:x", "node-2" })
	add("acme", "a5", nil) // in-batch duplicate of the previous row
	for i := range 4 {
		add("beta", fmt.Sprint("b", i+1), func(w *store.SignatureWrite) { w.Signature.DocumentID = "" })
	}

	next := old.Signature.AuditIndex + 1
	rs, err = s.CommitSignatures(ctx, ws)
	must(t, "CommitSignatures(mixed)", err)
	for i, w := range ws {
		r := rs[i]
		switch {
		case w.Signature.IdempotencyKey == "stored":
			if r.Existing == nil || r.Existing.ID != old.Signature.ID {
				t.Errorf("row %d (stored key): %+v, want the stored signature", i, r)
			}
			continue
		case i > 0 && w.Signature.IdempotencyKey == ws[i-1].Signature.IdempotencyKey && w.Signature.TenantID == ws[i-1].Signature.TenantID:
			if r.Existing == nil || r.Existing.ID != ws[i-1].Signature.ID || r.Existing.AuditIndex != rs[i-1].AuditIndex {
				t.Errorf("row %d (in-batch duplicate): %+v, want the row before it", i, r)
			}
			continue
		}
		if r.Existing != nil || r.AuditIndex != next {
			t.Errorf("row %d: %+v, want a new signature at index %d", i, r, next)
		}
		want := w.Signature
		want.AuditIndex = next
		got, err := s.Signature(ctx, want.TenantID, want.ID)
		must(t, "Signature", err)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("row %d round trip:\n got %+v\nwant %+v", i, got, want)
		}
		evs, err := s.AuditEvents(ctx, next, 1)
		must(t, "AuditEvents", err)
		wantEv := w.Event
		wantEv.Index = next
		if len(evs) != 1 || !reflect.DeepEqual(evs[0], wantEv) || !bytes.Equal(evs[0].Entry, w.Event.Entry) {
			t.Errorf("row %d event:\n got %+v\nwant %+v", i, evs, wantEv)
		}
		next++
	}
	if n := auditSize(t, s); n != next {
		t.Errorf("AuditSize = %d, want %d (gap-free)", n, next)
	}
}
