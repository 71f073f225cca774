package storetest

import (
	"bytes"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// testAuditEntries checks store.AuditEntryReader (both backends implement
// it) against AuditEvents: the same entries, byte for byte, stopping where
// the log ends.
func testAuditEntries(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	r, ok := s.(store.AuditEntryReader)
	if !ok {
		t.Fatalf("%T does not implement store.AuditEntryReader", s)
	}
	evs := []store.AuditEvent{event("a", "t1", "s1", 1), event("b", "", "", 2), event("c", "t2", "s3", 3)}
	evs[1].Entry = []byte("{\"v\":1,  \"x\":\"\xe2\x9c\x93 \\u0000\"}\n")
	_, err := s.AppendEvents(ctx, evs)
	must(t, "AppendEvents", err)
	_, err = s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "k", 4)})
	must(t, "CommitSignatures", err)
	all, err := s.AuditEvents(ctx, 0, 4)
	must(t, "AuditEvents", err)
	for _, c := range []struct{ from, n, want int64 }{{0, 4, 4}, {1, 2, 2}, {2, 10, 2}, {4, 3, 0}, {0, 0, 0}} {
		got, err := r.AuditEntries(ctx, c.from, c.n)
		must(t, "AuditEntries", err)
		if int64(len(got)) != c.want {
			t.Errorf("AuditEntries(%d, %d) = %d entries, want %d", c.from, c.n, len(got), c.want)
			continue
		}
		for i, e := range got {
			if !bytes.Equal(e, all[c.from+int64(i)].Entry) {
				t.Errorf("AuditEntries(%d, %d)[%d] = %q, want event %d's entry", c.from, c.n, i, e, c.from+int64(i))
			}
		}
	}
}
