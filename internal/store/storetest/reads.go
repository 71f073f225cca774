package storetest

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

func testTenantsList(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	if ts, err := s.Tenants(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("Tenants = %v, %v; want none", ts, err)
	}
	for i, id := range []string{"zeta", "alpha", "mid"} {
		must(t, "CreateTenant", s.CreateTenant(ctx, store.Tenant{ID: id, Name: "Tenant " + id, CreatedAt: at(i)},
			event("tenant.created", id, id, i)))
	}
	ts, err := s.Tenants(ctx)
	must(t, "Tenants", err)
	want := []store.Tenant{
		{ID: "zeta", Name: "Tenant zeta", CreatedAt: at(0)},
		{ID: "alpha", Name: "Tenant alpha", CreatedAt: at(1)},
		{ID: "mid", Name: "Tenant mid", CreatedAt: at(2)},
	}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("Tenants = %+v, want %+v in creation order", ts, want)
	}
}

func testSignatureByID(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("A", "k", 1), write("B", "k", 2)})
	must(t, "CommitSignatures", err)
	for i, tenant := range []string{"A", "B"} {
		want := sig(tenant, "k", i+1)
		want.AuditIndex = int64(i)
		got, err := s.SignatureByID(ctx, want.ID)
		must(t, "SignatureByID", err)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("SignatureByID(%s):\n got %+v\nwant %+v", want.ID, got, want)
		}
	}
	_, err = s.SignatureByID(ctx, "nope")
	wantErr(t, "SignatureByID(nope)", err, store.ErrNotFound)
}

func testSignaturesByRelease(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var ws []store.SignatureWrite
	for i := range 12 {
		w := write(fmt.Sprintf("t%d", i%3), fmt.Sprintf("k%02d", i), i)
		if i%4 == 3 {
			w.Signature.Release = "v1.2.2" // the good release, interleaved
		}
		ws = append(ws, w)
	}
	_, err := s.CommitSignatures(ctx, ws)
	must(t, "CommitSignatures", err)
	id := func(i int) string { return ws[i].Signature.ID }
	// Window [at(2), at(10)) of v1.2.3: 2, 4, 5, 6, 8, 9 — by ID, which
	// sorts t0, t1, t2 first.
	var all []string
	after := ""
	for page := 0; ; page++ {
		got, err := s.SignaturesByRelease(ctx, "v1.2.3", at(2), at(10), 4, after)
		must(t, "SignaturesByRelease", err)
		if len(got) == 0 {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		for _, sg := range got {
			if sg.Release != "v1.2.3" || sg.SignedAt.Before(at(2)) || !sg.SignedAt.Before(at(10)) {
				t.Errorf("signature %s of %s at %v is outside the window", sg.ID, sg.Release, sg.SignedAt)
			}
			all = append(all, sg.ID)
		}
		after = got[len(got)-1].ID
	}
	want := []string{id(6), id(9), id(4), id(2), id(5), id(8)} // sig-t0-k06, sig-t0-k09, sig-t1-k04, sig-t2-k02, sig-t2-k05, sig-t2-k08
	if !reflect.DeepEqual(all, want) {
		t.Errorf("pages = %v, want %v", all, want)
	}
	got, err := s.SignaturesByRelease(ctx, "v1.2.2", at(0), at(100), 0, "")
	must(t, "SignaturesByRelease v1.2.2", err)
	if len(got) != 3 {
		t.Errorf("v1.2.2 has %d signatures, want 3", len(got))
	}
}

func testTreeHashRange(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	h := func(i int64) [32]byte { return [32]byte{byte(i), 0xee, byte(i >> 8)} }
	var hs []store.IndexedHash
	for i := range int64(700) {
		hs = append(hs, store.IndexedHash{Index: i, Hash: h(i)})
	}
	must(t, "PutTreeHashes", s.PutTreeHashes(ctx, 350, hs))
	tests := []struct {
		from, to int64
		missing  bool
	}{{0, 700, false}, {5, 9, false}, {699, 700, false}, {3, 3, false}, {698, 701, true}, {800, 802, true}}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-%d", tc.from, tc.to), func(t *testing.T) {
			got, err := s.TreeHashRange(ctx, tc.from, tc.to)
			if tc.missing {
				wantErr(t, "TreeHashRange", err, store.ErrNotFound)
				return
			}
			must(t, "TreeHashRange", err)
			if int64(len(got)) != tc.to-tc.from {
				t.Fatalf("got %d hashes, want %d", len(got), tc.to-tc.from)
			}
			for i, g := range got {
				if g != h(tc.from+int64(i)) {
					t.Fatalf("hash %d = %x, want %x", tc.from+int64(i), g, h(tc.from+int64(i)))
				}
			}
		})
	}
	// A hole in the middle is reported too.
	must(t, "PutTreeHashes", s.PutTreeHashes(ctx, 400, []store.IndexedHash{{Index: 702, Hash: h(702)}}))
	_, err := s.TreeHashRange(ctx, 699, 703)
	wantErr(t, "TreeHashRange over a hole", err, store.ErrNotFound)
	// The multi-row insert kept every hash of the odd-sized batch.
	got, err := s.TreeHashes(ctx, []int64{0, 511, 512, 699, 702})
	must(t, "TreeHashes", err)
	if !reflect.DeepEqual(got, [][32]byte{h(0), h(511), h(512), h(699), h(702)}) {
		t.Errorf("TreeHashes = %x", got)
	}
}

// testLargeBatch commits batches larger than one multi-row statement, with
// replays and in-batch duplicates scattered through them.
func testLargeBatch(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const n = 301
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "k150", 150)})
	must(t, "CommitSignatures", err)
	ws := make([]store.SignatureWrite, n)
	for i := range ws {
		ws[i] = write("acme", fmt.Sprintf("k%d", i), i)
	}
	ws[299] = write("acme", "k7", 299) // in-batch duplicate of item 7
	ws[299].Signature.ID = "sig-dup"
	rs, err := s.CommitSignatures(ctx, ws)
	must(t, "CommitSignatures large", err)
	next := int64(1)
	for i, r := range rs {
		switch i {
		case 150:
			if r.Existing == nil || r.Existing.AuditIndex != 0 {
				t.Errorf("item 150: %+v, want Existing at 0", r)
			}
		case 299:
			if r.Existing == nil || r.Existing.ID != ws[7].Signature.ID {
				t.Errorf("item 299: %+v, want Existing %s", r, ws[7].Signature.ID)
			}
		default:
			if r.Existing != nil || r.AuditIndex != next {
				t.Fatalf("item %d: %+v, want AuditIndex %d", i, r, next)
			}
			next++
		}
	}
	evs := make([]store.AuditEvent, n)
	for i := range evs {
		evs[i] = event("bulk", "", fmt.Sprintf("e%d", i), i)
	}
	idx, err := s.AppendEvents(ctx, evs)
	must(t, "AppendEvents large", err)
	if idx[0] != next || idx[n-1] != next+n-1 {
		t.Errorf("AppendEvents indexes %d..%d, want %d..%d", idx[0], idx[n-1], next, next+n-1)
	}
	got, err := s.AuditEvents(ctx, 0, next+n)
	must(t, "AuditEvents", err)
	if int64(len(got)) != next+n {
		t.Fatalf("%d events, want %d", len(got), next+n)
	}
	for i, ev := range got {
		if ev.Index != int64(i) {
			t.Fatalf("event %d has index %d", i, ev.Index)
		}
		if i >= int(next) && ev.Subject != fmt.Sprintf("e%d", i-int(next)) {
			t.Fatalf("event %d is %s, want e%d: rows out of order", i, ev.Subject, i-int(next))
		}
	}
	sigs, err := s.Signatures(ctx, 0, next, 0)
	must(t, "Signatures", err)
	for _, sg := range sigs {
		if ev := got[sg.AuditIndex]; ev.Subject != sg.ID {
			t.Fatalf("signature %s at %d, whose event is for %s", sg.ID, sg.AuditIndex, ev.Subject)
		}
	}
}
