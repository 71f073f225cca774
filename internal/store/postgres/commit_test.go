package postgres

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

func testWrite(id, idem string, i int) store.SignatureWrite {
	at := time.Date(2026, 11, 26, 12, 0, i, 0, time.UTC)
	return store.SignatureWrite{
		Signature: store.Signature{
			ID: id, TenantID: "acme", IdempotencyKey: idem, RequestHash: []byte("req-" + idem),
			KeyName: "default", KeyVersion: 1, Format: "raw", Algorithm: "ecdsa-p256",
			AlgorithmOID: "1.2.840.10045.4.3.2", DigestAlgorithm: "sha256", DigestOID: "2.16.840.1.101.3.4.2.1",
			DocumentDigest: []byte{byte(i)}, Signature: []byte{0x30, byte(i)}, Release: "v1", Instance: "node-1", SignedAt: at,
		},
		Event: store.AuditEvent{Time: at, Type: "signature.created", Actor: "tenant:acme", TenantID: "acme",
			Release: "v1", Instance: "node-1", Subject: "signature:" + id,
			Entry: fmt.Appendf(nil, `{"v":1,"type":"signature.created","subject":"signature:%s"}`, id)},
	}
}

// TestFailedCommitRollsBack fails CommitSignatures in each of its two
// pipelines on a pool of one connection and checks that nothing of the
// failed batch is written and that the connection commits the next batch:
// BEGIN travels in the first pipeline and COMMIT in the second, so a
// failure must roll the transaction back before the connection is reused.
func TestFailedCommitRollsBack(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, store.Options{Migrate: true, MaxConns: 1})
	if _, err := s.CommitSignatures(ctx, []store.SignatureWrite{testWrite("sig-1", "k1", 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateJob(ctx, store.Job{ID: "job-1", TenantID: "acme", IdempotencyKey: "held", RequestHash: []byte("r"),
		Request: []byte("{}"), State: store.JobAccepted, Release: "v1", Instance: "node-1", AcceptedAt: time.Now()},
		testWrite("job-1", "held", 0).Event); err != nil {
		t.Fatal(err)
	}
	conns := s.pool.Stat().NewConnsCount()
	for _, tc := range []struct {
		name  string
		batch []store.SignatureWrite
		want  error
	}{
		// Settled in Go between the pipelines: the transaction is open.
		{"key held by a job", []store.SignatureWrite{testWrite("sig-2", "k2", 2), testWrite("sig-3", "held", 3)}, store.ErrIdempotencyTaken},
		// Fails inside the second pipeline: the signature id exists.
		{"duplicate signature id", []store.SignatureWrite{testWrite("sig-4", "k4", 4), testWrite("sig-1", "k5", 5)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CommitSignatures(ctx, tc.batch)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("CommitSignatures: err = %v, want %v", err, tc.want)
			}
			if n, err := s.AuditSize(ctx); err != nil || n != 2 {
				t.Fatalf("AuditSize = %d, %v; want 2 (nothing of the failed batch)", n, err)
			}
			for _, w := range tc.batch {
				if w.Signature.ID == "sig-1" {
					continue
				}
				if _, err := s.SignatureByIdempotencyKey(ctx, "acme", w.Signature.IdempotencyKey); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("signature %s of the failed batch: err = %v, want ErrNotFound", w.Signature.ID, err)
				}
			}
		})
	}
	if n := s.pool.Stat().NewConnsCount(); n != conns {
		t.Errorf("the pool opened %d connections during the failures: a failed commit left its connection unusable", n-conns)
	}
	res, err := s.CommitSignatures(ctx, []store.SignatureWrite{testWrite("sig-6", "k6", 6), testWrite("sig-7", "k7", 7)})
	if err != nil {
		t.Fatalf("commit after the failures: %v", err)
	}
	if res[0].AuditIndex != 2 || res[1].AuditIndex != 3 {
		t.Fatalf("audit indexes %d, %d; want 2, 3", res[0].AuditIndex, res[1].AuditIndex)
	}
}

// TestInsertConflictNamesTheLock inserts, as CommitSignatures' second
// pipeline does but without its lookups, a signature whose idempotency key
// is taken: what only a writer bypassing the audit head lock could do. The
// transaction fails with an error that says so.
func TestInsertConflictNamesTheLock(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, store.Options{Migrate: true})
	if _, err := s.CommitSignatures(ctx, []store.SignatureWrite{testWrite("sig-1", "k1", 1)}); err != nil {
		t.Fatal(err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	w := testWrite("sig-2", "k1", 2)
	err = insertRows(ctx, conn, []newRow{{&w, 1}}, 2)
	if err == nil || !strings.Contains(err.Error(), "bypassed the audit head lock") {
		t.Fatalf("insert of a taken key: err = %v, want one naming the audit head lock", err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.AuditSize(ctx); err != nil || n != 1 {
		t.Fatalf("AuditSize = %d, %v; want 1", n, err)
	}
}
