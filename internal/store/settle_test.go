package store

import (
	"errors"
	"testing"
	"time"
)

func TestSettleBatch(t *testing.T) {
	signed := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	w := func(tenant, key string) SignatureWrite {
		return SignatureWrite{Signature: Signature{ID: "sig-" + key, TenantID: tenant, IdempotencyKey: key, SignedAt: signed}}
	}
	ws := []SignatureWrite{w("a", "new1"), w("a", "old"), w("a", "new1"), w("b", "new1"), w("a", "new2")}
	stored := Signature{ID: "sig-stored", TenantID: "a", IdempotencyKey: "old", AuditIndex: 3}
	existing := func(i int) (Signature, bool) { return stored, ws[i].Signature.IdempotencyKey == "old" }
	none := func(int) (string, bool) { return "", false }

	res, fresh, err := SettleBatch(ws, 10, existing, none)
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh) != 3 || fresh[0] != 0 || fresh[1] != 3 || fresh[2] != 4 {
		t.Fatalf("fresh = %v, want [0 3 4]: the first of each (tenant, key), in batch order", fresh)
	}
	for i, want := range map[int]int64{0: 10, 3: 11, 4: 12} {
		if res[i].Existing != nil || res[i].AuditIndex != want {
			t.Errorf("res[%d] = %+v, want new at audit index %d", i, res[i], want)
		}
	}
	if res[1].Existing == nil || res[1].Existing.ID != "sig-stored" {
		t.Errorf("res[1] = %+v, want the stored signature", res[1])
	}
	dup := res[2].Existing
	if dup == nil || dup.ID != "sig-new1" || dup.AuditIndex != 10 || !dup.SignedAt.Equal(signed.Truncate(time.Microsecond)) ||
		dup.SignedAt.Location() != time.UTC {
		t.Errorf("res[2] = %+v, want write 0 as stored: audit index 10, SignedAt in UTC at µs precision", dup)
	}

	held := func(i int) (string, bool) { return "job-7", ws[i].Signature.TenantID == "b" }
	if _, _, err := SettleBatch(ws, 10, existing, held); !errors.Is(err, ErrIdempotencyTaken) {
		t.Fatalf("a key held by a job: err = %v, want ErrIdempotencyTaken", err)
	}
}
