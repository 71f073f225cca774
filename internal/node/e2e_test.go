package node_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/sign"
)

// e2eAlgorithms are the algorithms every format is signed with end to end
// (rsa-3072 keygen is too slow for the default run; the sign package's
// vectors cover it).
var e2eAlgorithms = []keys.Algorithm{keys.ECDSAP256, keys.ECDSAP384, keys.Ed25519, keys.RSA2048, keys.RSA2048PSS}

var jwsAlgs = map[keys.Algorithm]jose.SignatureAlgorithm{
	keys.ECDSAP256: jose.ES256, keys.ECDSAP384: jose.ES384, keys.Ed25519: jose.EdDSA,
	keys.RSA2048: jose.RS256, keys.RSA2048PSS: jose.PS256,
}

// TestSignEveryFormatAndAlgorithm signs every format with every algorithm
// through the HTTP API and checks each artifact with a verifier that is not
// ours: OpenSSL (GnuTLS for Ed25519) for CMS, go-jose for JWS, the standard
// library for raw; then /v1/verify for the original and a changed document.
func TestSignEveryFormatAndAlgorithm(t *testing.T) {
	e := newEnv(t, envOptions{})
	caFile := e.inst.Dir + "/ca.pem"
	doc := []byte("Invoice 2026-0042: 1 200,00 EUR, due 2026-12-31.\n")
	changed := []byte("Invoice 2026-0042: 9 200,00 EUR, due 2026-12-31.\n")
	for _, alg := range e2eAlgorithms {
		t.Run(string(alg), func(t *testing.T) {
			name := "k-" + string(alg)
			kv := e.createKey(t, name, alg, soft.Scheme)
			pub := parsePublicKeyPEM(t, kv.PublicKeyPEM)
			for _, f := range []api.Format{api.FormatCMS, api.FormatJWS, api.FormatRaw} {
				t.Run(string(f), func(t *testing.T) {
					resp, _ := e.mustSign(t, fmt.Sprintf("e2e-%s-%s", alg, f), api.SignRequest{Key: name, Format: f, Document: doc, DocumentID: "inv-42"})
					checkStamp(t, resp, name, alg, alg.Hash())
					art, err := node.DecodeArtifact(f, resp.Signature)
					if err != nil {
						t.Fatal(err)
					}
					switch f {
					case api.FormatCMS:
						verifyCMSIndependently(t, alg, caFile, doc, art)
					case api.FormatJWS:
						verifyJWSIndependently(t, alg, pub, doc, art)
					case api.FormatRaw:
						verifyRawIndependently(t, alg, pub, alg.Hash(), hashOf(alg.Hash(), doc), art)
					}
					if v := e.verify(t, api.VerifyRequest{Key: name, Format: f, Signature: resp.Signature, Document: doc}); !v.Valid || v.KeyVersion != 1 {
						t.Errorf("verify original: %+v, want valid with v1", v)
					}
					if v := e.verify(t, api.VerifyRequest{Key: name, Format: f, Signature: resp.Signature, Document: changed}); v.Valid || v.Reason == "" {
						t.Errorf("verify changed document: %+v, want invalid with a reason", v)
					}
				})
			}
			t.Run("digest-only", func(t *testing.T) {
				h := alg.Hash()
				dg := &api.Digest{Alg: sign.HashName(h), Value: hashOf(h, doc)}
				for _, f := range []api.Format{api.FormatRaw, api.FormatCMS} {
					resp, _ := e.mustSign(t, fmt.Sprintf("e2e-digest-%s-%s", alg, f), api.SignRequest{Key: name, Format: f, Digest: dg})
					checkStamp(t, resp, name, alg, h)
					if got, want := resp.DocumentDigest, base64.StdEncoding.EncodeToString(dg.Value); got != want {
						t.Errorf("%s: document_digest = %s, want %s", f, got, want)
					}
					art, _ := node.DecodeArtifact(f, resp.Signature)
					if f == api.FormatCMS {
						verifyCMSIndependently(t, alg, caFile, doc, art)
					} else {
						verifyRawIndependently(t, alg, pub, h, dg.Value, art)
					}
					if v := e.verify(t, api.VerifyRequest{Key: name, Format: f, Signature: resp.Signature, Digest: dg}); !v.Valid {
						t.Errorf("%s: verify by digest: %+v", f, v)
					}
					if v := e.verify(t, api.VerifyRequest{Key: name, Format: f, Signature: resp.Signature, Document: doc}); !v.Valid {
						t.Errorf("%s: verify by document: %+v", f, v)
					}
				}
				r := e.sign(t, e.token, "e2e-digest-jws-"+string(alg), api.SignRequest{Key: name, Format: api.FormatJWS, Digest: dg})
				wantProblem(t, r, http.StatusUnprocessableEntity, api.TypeUnsupported)
			})
		})
	}
}

// checkStamp checks the metadata every signature carries.
func checkStamp(t *testing.T, r api.SignResponse, key string, alg keys.Algorithm, h crypto.Hash) {
	t.Helper()
	if r.Key != key || r.KeyVersion != 1 || r.Algorithm != string(alg) {
		t.Errorf("key stamp = %s@v%d %s, want %s@v1 %s", r.Key, r.KeyVersion, r.Algorithm, key, alg)
	}
	if r.DigestAlgorithm != sign.HashName(h) || r.DigestOID == "" || r.AlgorithmOID == "" {
		t.Errorf("digest stamp = %s (%s), algorithm OID %q; want %s and both OIDs", r.DigestAlgorithm, r.DigestOID, r.AlgorithmOID, sign.HashName(h))
	}
	if r.Release != "test-r1" || r.Instance == "" || r.ID == "" || r.SignedAt.IsZero() {
		t.Errorf("release/instance/id/time stamp missing: %+v", r)
	}
}

func verifyCMSIndependently(t *testing.T, alg keys.Algorithm, caFile string, doc, der []byte) {
	t.Helper()
	verify := opensslVerifyCMS
	if alg == keys.Ed25519 {
		verify = certtoolVerifyCMS // OpenSSL 3.0 cannot verify Ed25519 CMS
	}
	if err := verify(t, caFile, doc, der); err != nil {
		t.Error(err)
	}
	tampered := append([]byte(nil), doc...)
	tampered[0] ^= 0x20
	if err := verify(t, caFile, tampered, der); err == nil {
		t.Error("independent CMS verifier accepted a changed document")
	}
}

func verifyJWSIndependently(t *testing.T, alg keys.Algorithm, pub any, doc, compact []byte) {
	t.Helper()
	obj, err := jose.ParseDetached(string(compact), doc, []jose.SignatureAlgorithm{jwsAlgs[alg]})
	if err != nil {
		t.Fatalf("go-jose ParseDetached: %v", err)
	}
	if _, err := obj.Verify(pub); err != nil {
		t.Errorf("go-jose Verify: %v", err)
	}
	if b64, ok := obj.Signatures[0].Protected.ExtraHeaders["b64"]; !ok || b64 != false {
		t.Errorf("JWS header b64 = %v, want false (RFC 7797)", b64)
	}
}

func verifyRawIndependently(t *testing.T, alg keys.Algorithm, pub any, h crypto.Hash, digest, sig []byte) {
	t.Helper()
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		if alg.PSS() {
			ok = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
		}
	case ed25519.PublicKey:
		ok = ed25519.VerifyWithOptions(k, digest, sig, &ed25519.Options{Hash: crypto.SHA512}) == nil
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
	if !ok {
		t.Errorf("raw %s signature does not verify with the standard library", alg)
	}
}

func hashOf(h crypto.Hash, b []byte) []byte {
	w := h.New()
	w.Write(b)
	return w.Sum(nil)
}

// TestAuth checks that requests without a valid token are refused the same
// way, and that tenants are invisible to each other.
func TestAuth(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	doc := api.SignRequest{Key: "default", Format: api.FormatRaw, Document: []byte("hello")}

	revoked := mintRevokedToken(t, e)
	for _, tc := range []struct{ name, token string }{
		{"missing", ""},
		{"garbage", "not-a-token"},
		{"unknown id", "cst_0123456789abcdef_" + strings.Repeat("A", 43)},
		{"wrong secret", e.token[:len(e.token)-4] + "AAAA"},
		{"revoked", revoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ep := range []struct{ method, path string }{{"POST", "/v1/sign"}, {"POST", "/v1/verify"}, {"GET", "/v1/keys"}, {"GET", "/v1/keys/default"}} {
				r := e.call(t, ep.method, ep.path, tc.token, map[string]string{"Idempotency-Key": "auth-1"}, mustJSON(t, doc))
				wantProblem(t, r, http.StatusUnauthorized, api.TypeUnauthorized)
				if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") {
					t.Errorf("%s %s: WWW-Authenticate = %q", ep.method, ep.path, h)
				}
			}
		})
	}

	tokB, err := e.inst.CreateTenant(ctx, "beta", "test")
	if err != nil {
		t.Fatal(err)
	}
	b := string(tokB)
	signed, _ := e.mustSign(t, "tenant-a-1", doc)
	t.Run("tenant B cannot use tenant A's key", func(t *testing.T) {
		missing := func(r reply, name string) []byte {
			return []byte(strings.ReplaceAll(string(r.body), "ghost-key", name))
		}
		for _, tc := range []struct {
			name string
			do   func(key string) reply
		}{
			{"sign", func(key string) reply {
				return e.sign(t, b, "b-"+key, api.SignRequest{Key: key, Format: api.FormatRaw, Document: []byte("hello")})
			}},
			{"verify", func(key string) reply {
				return e.call(t, "POST", "/v1/verify", b, nil, mustJSON(t, api.VerifyRequest{Key: key, Format: api.FormatRaw, Signature: signed.Signature, Document: []byte("hello")}))
			}},
			{"get key", func(key string) reply { return e.call(t, "GET", "/v1/keys/"+key, b, nil, nil) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				other, ghost := tc.do("default"), tc.do("ghost-key")
				wantProblem(t, other, http.StatusNotFound, api.TypeKeyNotFound)
				wantProblem(t, ghost, http.StatusNotFound, api.TypeKeyNotFound)
				if got, want := string(other.body), string(missing(ghost, "default")); got != want {
					t.Errorf("another tenant's key answers\n%s\nbut a missing key answers\n%s", got, want)
				}
			})
		}
		r := e.call(t, "GET", "/v1/keys", b, nil, nil)
		if r.status != 200 || strings.Contains(string(r.body), "default") {
			t.Errorf("tenant B's key list = %v, want 200 without tenant A's keys", r)
		}
	})
}

func mintRevokedToken(t *testing.T, e *testEnv) string {
	t.Helper()
	secret, err := e.inst.CreateToken(t.Context(), "dev", "test")
	if err != nil {
		t.Fatal(err)
	}
	// Revoke by rewriting the row the way an operator's revoke does.
	id := strings.Split(string(secret), "_")[1]
	if _, err := sqlDB(t, e.inst.Store).ExecContext(t.Context(), `UPDATE tokens SET revoked = 1 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	return string(secret)
}
