package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/store"
)

// signatureEventGeneric is signatureEvent through auditlog.Event.Record:
// the definition the hand-written encoder must match byte for byte.
func signatureEventGeneric(sig *store.Signature) (store.AuditEvent, error) {
	art := sha256.Sum256(sig.Signature)
	idem := sha256.Sum256([]byte(sig.IdempotencyKey))
	return auditlog.Event{
		Type:     "signature.created",
		Time:     sig.SignedAt,
		Actor:    "tenant:" + sig.TenantID,
		TenantID: sig.TenantID,
		Release:  sig.Release,
		Instance: sig.Instance,
		Subject:  "signature:" + sig.ID,
		Details: map[string]any{
			"key":                    sig.KeyName,
			"key_version":            sig.KeyVersion,
			"format":                 sig.Format,
			"algorithm":              sig.Algorithm,
			"algorithm_oid":          sig.AlgorithmOID,
			"digest_algorithm":       sig.DigestAlgorithm,
			"digest_oid":             sig.DigestOID,
			"document_digest":        base64.StdEncoding.EncodeToString(sig.DocumentDigest),
			"document_id":            sig.DocumentID,
			"artifact_sha256":        hex.EncodeToString(art[:]),
			"idempotency_key_sha256": hex.EncodeToString(idem[:]),
		},
	}.Record()
}

// hostile strings exercise every escaping rule of encoding/json.
var hostile = []string{"", "plain", `quote"d`, `back\slash`, "<script>&amp;</script>", "tab\there\nnl\r\x00\x1f\x7f",
	"é ü 日本", "bad utf8 \xff\xfe", "line\u2028sep\u2029", "emoji 😀", "~!@#$%^*()_+{}|:?"}

func fixtureSignature(r *rand.Rand, i int) store.Signature {
	pick := func() string {
		if r.IntN(3) == 0 {
			return hostile[r.IntN(len(hostile))]
		}
		return "ok-" + string(rune('a'+r.IntN(26)))
	}
	formats := []string{"raw", "jws", "cms"}
	doc := make([]byte, r.IntN(65))
	for j := range doc {
		doc[j] = byte(r.Uint32())
	}
	return store.Signature{
		ID: newID("sig_", time.Unix(1700000000, 0)), TenantID: pick(), IdempotencyKey: pick(), RequestHash: doc,
		KeyName: pick(), KeyVersion: r.IntN(1 << 20), Format: formats[i%3], Algorithm: pick(), AlgorithmOID: pick(),
		DigestAlgorithm: pick(), DigestOID: pick(), DocumentDigest: doc, DocumentID: pick(),
		Signature: append([]byte("eyJ"), doc...), Release: pick(), Instance: pick(), AuditIndex: r.Int64N(1 << 40),
		SignedAt: time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).In(time.FixedZone("x", 3600)),
	}
}

func TestEncodersMatchGeneric(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sigs := []store.Signature{{}, {SignedAt: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)}}
	for i := range 2000 {
		sigs = append(sigs, fixtureSignature(r, i))
	}
	for i := range sigs {
		sig := &sigs[i]
		got, err := signatureEvent(sig)
		if err != nil {
			t.Fatal(err)
		}
		want, err := signatureEventGeneric(sig)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Entry, want.Entry) {
			t.Fatalf("signature %d: event entry\n got %s\nwant %s", i, got.Entry, want.Entry)
		}
		got.Entry, want.Entry = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("signature %d: event\n got %+v\nwant %+v", i, got, want)
		}
		if g, w := renderSignature(sig), renderSignatureGeneric(sig); !bytes.Equal(g, w) {
			t.Fatalf("signature %d: response\n got %s\nwant %s", i, g, w)
		}
	}
}

func BenchmarkEncoders(b *testing.B) {
	now := time.Now()
	sig := store.Signature{ID: newID("sig_", now), TenantID: "default", IdempotencyKey: "bench-1", RequestHash: make([]byte, 32),
		KeyName: "default", KeyVersion: 1, Format: "raw", Algorithm: "ecdsa-p256", AlgorithmOID: "1.2.840.10045.4.3.2",
		DigestAlgorithm: "sha256", DigestOID: "2.16.840.1.101.3.4.2.1", DocumentDigest: make([]byte, 32), DocumentID: "invoice-42",
		Signature: make([]byte, 72), Release: "v1.2.3", Instance: "host-1234", AuditIndex: 123456, SignedAt: now}
	b.Run("event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			signatureEvent(&sig)
		}
	})
	b.Run("event-generic", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			signatureEventGeneric(&sig)
		}
	})
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			renderSignature(&sig)
		}
	})
	b.Run("response-generic", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			renderSignatureGeneric(&sig)
		}
	})
}
