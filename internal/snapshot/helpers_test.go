package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/store"
)

func newDir(t *testing.T) *WriteOnceDir {
	t.Helper()
	d, err := NewWriteOnceDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// unavailable fails under CI=true and skips otherwise.
func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unavailable (CI=true requires it): %v", what, err)
	}
	t.Skipf("%s unavailable, skipping (CI=true makes this fail): %v", what, err)
}

func readObject(t *testing.T, st ImmutableStore, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// sigWrite is signature i of tenant acme with its audit event. It is
// called from writer goroutines, so it panics rather than calling t.Fatal.
func sigWrite(_ testing.TB, i int) store.SignatureWrite {
	id := fmt.Sprintf("sig-%06d", i)
	at := t0.Add(time.Duration(i) * time.Millisecond)
	ev, err := auditlog.Event{Type: "signature.created", Time: at, Actor: "node", TenantID: "acme",
		Release: "v1", Instance: "n1", Subject: id}.Record()
	if err != nil {
		panic(err)
	}
	return store.SignatureWrite{
		Signature: store.Signature{ID: id, TenantID: "acme", IdempotencyKey: fmt.Sprintf("idem-%d", i),
			RequestHash: bytes.Repeat([]byte{1}, 32), KeyName: "default", KeyVersion: 1, Format: "raw",
			Algorithm: "ecdsa-p256", AlgorithmOID: "1.2.840.10045.4.3.2", DigestAlgorithm: "sha-256",
			DigestOID: "2.16.840.1.101.3.4.2.1", DocumentDigest: bytes.Repeat([]byte{2}, 32),
			DocumentID: fmt.Sprintf("doc-%d", i), Signature: bytes.Repeat([]byte{3}, 64),
			Release: "v1", Instance: "n1", SignedAt: at},
		Event: ev,
	}
}

// bytesPart is a Part with fixed content, for tests of Take and Verify.
type bytesPart struct {
	name string
	data []byte
	err  error
}

func (p bytesPart) Name() string { return p.name }
func (p bytesPart) Kind() string { return "test.bytes" }
func (p bytesPart) Write(_ context.Context, w io.Writer) (map[string]any, error) {
	if _, err := w.Write(p.data); err != nil {
		return nil, err
	}
	return map[string]any{"len": len(p.data)}, p.err
}
