package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

func testCommitSignatures(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	// One unrelated event first, so signature indexes do not start at 0.
	idx, err := s.AppendEvents(ctx, []store.AuditEvent{event("keys.frozen", "", "", 0)})
	must(t, "AppendEvents", err)
	if len(idx) != 1 || idx[0] != 0 {
		t.Fatalf("AppendEvents = %v, want [0]", idx)
	}
	ws := []store.SignatureWrite{write("acme", "k1", 1), write("acme", "k2", 2), write("acme", "k3", 3)}
	rs, err := s.CommitSignatures(ctx, ws)
	must(t, "CommitSignatures", err)
	if len(rs) != len(ws) {
		t.Fatalf("got %d results, want %d", len(rs), len(ws))
	}
	for i, r := range rs {
		if r.Existing != nil || r.AuditIndex != int64(i+1) {
			t.Errorf("result %d = %+v, want AuditIndex %d in slice order", i, r, i+1)
		}
	}
	for i, w := range ws {
		want := w.Signature
		want.AuditIndex = int64(i + 1)
		got, err := s.Signature(ctx, "acme", want.ID)
		must(t, "Signature", err)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Signature round trip:\n got %+v\nwant %+v", got, want)
		}
		got, err = s.SignatureByIdempotencyKey(ctx, "acme", want.IdempotencyKey)
		must(t, "SignatureByIdempotencyKey", err)
		if got.ID != want.ID {
			t.Errorf("SignatureByIdempotencyKey = %s, want %s", got.ID, want.ID)
		}
	}
	evs, err := s.AuditEvents(ctx, 0, 10)
	must(t, "AuditEvents", err)
	if len(evs) != 4 {
		t.Fatalf("AuditEvents = %d events, want 4", len(evs))
	}
	for i, w := range ws {
		ev := evs[i+1]
		if ev.Index != int64(i+1) || ev.Subject != w.Signature.ID || !bytes.Equal(ev.Entry, w.Event.Entry) {
			t.Errorf("event %d = %d/%s, want the event of %s", i+1, ev.Index, ev.Subject, w.Signature.ID)
		}
	}
	_, err = s.SignatureByIdempotencyKey(ctx, "acme", "nope")
	wantErr(t, "SignatureByIdempotencyKey(nope)", err, store.ErrNotFound)
	_, err = s.Signature(ctx, "acme", "nope")
	wantErr(t, "Signature(nope)", err, store.ErrNotFound)
	if rs, err := s.CommitSignatures(ctx, nil); err != nil || len(rs) != 0 {
		t.Errorf("CommitSignatures(nil) = %v, %v; want no results, no error", rs, err)
	}
}

func testIdempotencyConflict(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	first := write("acme", "dup", 1)
	rs, err := s.CommitSignatures(ctx, []store.SignatureWrite{first})
	must(t, "CommitSignatures", err)
	stored := first.Signature
	stored.AuditIndex = rs[0].AuditIndex

	// A replay (same key, another attempt with a different artifact and
	// request hash) in a batch with a new write and an in-batch duplicate.
	replay := write("acme", "dup", 7)
	replay.Signature.ID = "sig-replay"
	replay.Signature.RequestHash = []byte("different")
	fresh := write("acme", "fresh", 8)
	inBatch := write("acme", "fresh", 9)
	inBatch.Signature.ID = "sig-in-batch"
	rs, err = s.CommitSignatures(ctx, []store.SignatureWrite{replay, fresh, inBatch})
	must(t, "CommitSignatures with conflicts", err)
	if rs[0].Existing == nil || !reflect.DeepEqual(*rs[0].Existing, stored) {
		t.Errorf("replay: Existing = %+v, want %+v", rs[0].Existing, stored)
	}
	if rs[1].Existing != nil || rs[1].AuditIndex != 1 {
		t.Errorf("fresh: result %+v, want AuditIndex 1 (no gap left by the conflict)", rs[1])
	}
	if rs[2].Existing == nil || rs[2].Existing.ID != fresh.Signature.ID || rs[2].Existing.AuditIndex != 1 {
		t.Errorf("in-batch duplicate: Existing = %+v, want the batch's first write", rs[2].Existing)
	}
	if n := auditSize(t, s); n != 2 {
		t.Errorf("AuditSize = %d, want 2: a conflict writes no event", n)
	}
	for _, id := range []string{"sig-replay", "sig-in-batch"} {
		_, err := s.Signature(ctx, "acme", id)
		wantErr(t, "Signature("+id+")", err, store.ErrNotFound)
	}
}

func testSignaturesRange(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var ws []store.SignatureWrite
	for i := range 10 {
		ws = append(ws, write(fmt.Sprintf("t%d", i%3), fmt.Sprintf("k%d", i), i))
	}
	_, err := s.CommitSignatures(ctx, ws)
	must(t, "CommitSignatures", err)
	tests := []struct {
		from, to  int64
		limit     int
		wantFirst int64
		wantN     int
	}{
		{0, 10, 0, 0, 10},
		{3, 7, 0, 3, 4},
		{3, 10, 2, 3, 2},
		{10, 20, 5, 0, 0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-%d-limit%d", tc.from, tc.to, tc.limit), func(t *testing.T) {
			got, err := s.Signatures(ctx, tc.from, tc.to, tc.limit)
			must(t, "Signatures", err)
			if len(got) != tc.wantN {
				t.Fatalf("got %d signatures, want %d", len(got), tc.wantN)
			}
			for i, sg := range got {
				if sg.AuditIndex != tc.wantFirst+int64(i) {
					t.Errorf("signature %d has AuditIndex %d, want %d (ascending)", i, sg.AuditIndex, tc.wantFirst+int64(i))
				}
			}
		})
	}
}

func testAuditRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	evs := []store.AuditEvent{event("a", "t1", "s1", 1), event("b", "", "", 2), event("c", "t2", "s3", 3)}
	// Entries are leaf data: stored byte for byte, whitespace and all.
	evs[1].Entry = []byte("{\"v\":1,  \"note\":\"caf\u00e9 \\u0000 \xe2\x9c\x93\"}\n")
	evs[2].Time = evs[2].Time.Add(999 * 1000) // 999 µs: still microsecond precision
	idx, err := s.AppendEvents(ctx, evs)
	must(t, "AppendEvents", err)
	if !reflect.DeepEqual(idx, []int64{0, 1, 2}) {
		t.Fatalf("AppendEvents = %v, want [0 1 2]", idx)
	}
	got, err := s.AuditEvents(ctx, 0, 3)
	must(t, "AuditEvents", err)
	if len(got) != 3 {
		t.Fatalf("AuditEvents = %d events, want 3", len(got))
	}
	for i, g := range got {
		w := evs[i]
		w.Index = int64(i)
		if !bytes.Equal(g.Entry, w.Entry) {
			t.Errorf("event %d Entry = %q, want %q", i, g.Entry, w.Entry)
		}
		if !g.Time.Equal(w.Time) || g.Time.Location().String() != "UTC" || g.Time.Format("2006-01-02T15:04:05.999999999Z07:00") != w.Time.Format("2006-01-02T15:04:05.999999999Z07:00") {
			t.Errorf("event %d Time = %v, want %v in UTC", i, g.Time, w.Time)
		}
		g.Time = w.Time
		if !reflect.DeepEqual(g, w) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	if got, err := s.AuditEvents(ctx, 1, 1); err != nil || len(got) != 1 || got[0].Index != 1 {
		t.Errorf("AuditEvents(1, 1) = %v, %v; want event 1", got, err)
	}
	if got, err := s.AuditEvents(ctx, 3, 5); err != nil || len(got) != 0 {
		t.Errorf("AuditEvents past the end = %v, %v; want none", got, err)
	}
}

// testConcurrentCommitter drives the group committer from 16 goroutines
// while other goroutines append plain events, then checks the audit table
// is gap-free and every signature points at its own event.
func testConcurrentCommitter(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const writers, each, appenders, appends = 16, 20, 2, 10
	c := store.NewCommitter(ctx, s, store.CommitterConfig{MaxBatch: 64})
	var wg sync.WaitGroup
	errs := make(chan error, writers*each+appenders*appends)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				w := write(fmt.Sprintf("t%d", g%4), fmt.Sprintf("g%d-%d", g, i), g*each+i)
				r, err := c.Commit(ctx, w)
				if err == nil && r.Existing != nil {
					err = fmt.Errorf("write %s answered Existing", w.Signature.ID)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for g := range appenders {
		wg.Go(func() {
			for i := range appends {
				if _, err := s.AppendEvents(ctx, []store.AuditEvent{event("probe", "", fmt.Sprintf("p%d-%d", g, i), i)}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	must(t, "Committer.Close", c.Close())
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := int64(writers*each + appenders*appends)
	if n := auditSize(t, s); n != total {
		t.Fatalf("AuditSize = %d, want %d", n, total)
	}
	evs, err := s.AuditEvents(ctx, 0, total)
	must(t, "AuditEvents", err)
	for i, ev := range evs {
		if ev.Index != int64(i) {
			t.Fatalf("event at position %d has index %d: gap or duplicate", i, ev.Index)
		}
	}
	sigs, err := s.Signatures(ctx, 0, total, 0)
	must(t, "Signatures", err)
	if len(sigs) != writers*each {
		t.Fatalf("Signatures = %d, want %d", len(sigs), writers*each)
	}
	for _, sg := range sigs {
		if ev := evs[sg.AuditIndex]; ev.Subject != sg.ID || ev.Type != "signature.created" {
			t.Errorf("signature %s has AuditIndex %d, whose event is %s/%s", sg.ID, sg.AuditIndex, ev.Type, ev.Subject)
		}
	}
	st := c.Stats()
	if st.Writes != uint64(writers*each) || st.Failed != 0 {
		t.Errorf("Stats = %+v, want %d writes and no failures", st, writers*each)
	}
	t.Logf("committer: %d batches, mean %.1f writes per batch, largest %d", st.Batches, st.MeanBatch(), st.MaxBatch)
}

func testTreeHashes(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	if n, err := s.TreeSize(ctx); err != nil || n != 0 {
		t.Fatalf("TreeSize = %d, %v; want 0", n, err)
	}
	h := func(b byte) [32]byte { return [32]byte{b, 0xff, b} }
	must(t, "PutTreeHashes", s.PutTreeHashes(ctx, 2, []store.IndexedHash{{Index: 0, Hash: h(1)}, {Index: 1, Hash: h(2)}, {Index: 2, Hash: h(3)}}))
	must(t, "PutTreeHashes", s.PutTreeHashes(ctx, 3, []store.IndexedHash{{Index: 3, Hash: h(4)}}))
	got, err := s.TreeHashes(ctx, []int64{3, 0, 2})
	must(t, "TreeHashes", err)
	if !reflect.DeepEqual(got, [][32]byte{h(4), h(1), h(3)}) {
		t.Errorf("TreeHashes = %x, want in the order asked", got)
	}
	_, err = s.TreeHashes(ctx, []int64{0, 9})
	wantErr(t, "TreeHashes missing", err, store.ErrNotFound)
	if n, err := s.TreeSize(ctx); err != nil || n != 3 {
		t.Errorf("TreeSize = %d, %v; want 3", n, err)
	}
	wantErr(t, "PutTreeHashes shrink", s.PutTreeHashes(ctx, 2, nil), store.ErrTreeShrink)
	if n, err := s.TreeSize(ctx); err != nil || n != 3 {
		t.Errorf("TreeSize after refused shrink = %d, %v; want 3", n, err)
	}
}

func testCheckpoints(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.LatestCheckpoint(ctx)
	wantErr(t, "LatestCheckpoint empty", err, store.ErrNotFound)
	for i, size := range []int64{1, 5, 3} {
		c := store.Checkpoint{Size: size, Note: []byte(fmt.Sprintf("countersign.test/log\n%d\nroot\n\n— sig\n", size)), CreatedAt: at(i)}
		must(t, "PutCheckpoint", s.PutCheckpoint(ctx, c))
	}
	c, err := s.LatestCheckpoint(ctx)
	must(t, "LatestCheckpoint", err)
	if c.Size != 5 || !bytes.Contains(c.Note, []byte("\n5\n")) || !c.CreatedAt.Equal(at(1)) {
		t.Errorf("LatestCheckpoint = %d %q %v, want the size-5 checkpoint", c.Size, c.Note, c.CreatedAt)
	}
}
