package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/store"
)

// TestMalformedRequests sends each kind of bad request and checks the
// precise problem, and that nothing was stored.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t, envOptions{node: func(c *node.Config) { c.MaxDocumentBytes = 4 << 10 }})
	before := e.counts(t)
	okBody := `{"key":"default","format":"raw","document":"aGVsbG8="}`
	for _, tc := range []struct {
		name   string
		path   string
		idem   string
		body   string
		status int
		typ    string
		detail string
	}{
		{"oversized body", "/v1/sign", "m-1", `{"key":"default","format":"raw","document":"` + strings.Repeat("A", 200<<10) + `"}`, 413, api.TypeTooLarge, "request body exceeds"},
		{"bad JSON", "/v1/sign", "m-2", `{"key":`, 400, api.TypeMalformed, "invalid JSON body"},
		{"not an object", "/v1/sign", "m-3", `[1,2]`, 400, api.TypeMalformed, "invalid JSON body"},
		{"unknown field", "/v1/sign", "m-4", `{"key":"default","format":"raw","document":"aGVsbG8=","color":"red"}`, 400, api.TypeMalformed, `unknown field "color"`},
		{"trailing data", "/v1/sign", "m-5", okBody + `{}`, 400, api.TypeMalformed, "trailing data"},
		{"document not base64", "/v1/sign", "m-6", `{"key":"default","format":"raw","document":"%%%"}`, 400, api.TypeMalformed, "invalid JSON body"},
		{"both document and digest", "/v1/sign", "m-7", `{"key":"default","format":"raw","document":"aGVsbG8=","digest":{"alg":"sha256","value":"` + b64(make([]byte, 32)) + `"}}`, 400, api.TypeMalformed, `give either "document" or "digest", not both`},
		{"neither document nor digest", "/v1/sign", "m-8", `{"key":"default","format":"raw"}`, 400, api.TypeMalformed, `one of "document" or "digest" is required`},
		{"bad digest length", "/v1/sign", "m-9", `{"key":"default","format":"raw","digest":{"alg":"sha256","value":"` + b64(make([]byte, 20)) + `"}}`, 400, api.TypeMalformed, `"digest.value" must be 32 bytes for sha256, got 20`},
		{"bad digest algorithm", "/v1/sign", "m-10", `{"key":"default","format":"raw","digest":{"alg":"md5","value":"` + b64(make([]byte, 16)) + `"}}`, 400, api.TypeMalformed, `"digest.alg" must be sha256, sha384 or sha512, not "md5"`},
		{"bad format", "/v1/sign", "m-11", `{"key":"default","format":"xml","document":"aGVsbG8="}`, 400, api.TypeMalformed, `"format" must be "cms", "jws" or "raw", not "xml"`},
		{"missing key", "/v1/sign", "m-12", `{"format":"raw","document":"aGVsbG8="}`, 400, api.TypeMalformed, `"key" is required`},
		{"long document id", "/v1/sign", "m-13", `{"key":"default","format":"raw","document":"aGVsbG8=","document_id":"` + strings.Repeat("d", 300) + `"}`, 400, api.TypeMalformed, `"document_id" is longer than 256 bytes`},
		{"missing Idempotency-Key", "/v1/sign", "", okBody, 400, api.TypeIdempotencyMissing, "Idempotency-Key is required"},
		{"long Idempotency-Key", "/v1/sign", strings.Repeat("k", 256), okBody, 400, api.TypeMalformed, "Idempotency-Key is longer than 255 bytes"},
		{"non-ASCII Idempotency-Key", "/v1/sign", "clé-1", okBody, 400, api.TypeMalformed, "Idempotency-Key must be printable ASCII"},
		{"verify: bad signature encoding", "/v1/verify", "", `{"key":"default","format":"raw","signature":"***","document":"aGVsbG8="}`, 400, api.TypeMalformed, `"signature" is not valid base64`},
		{"verify: unknown field", "/v1/verify", "", `{"key":"default","format":"raw","signature":"AA==","document":"aGVsbG8=","x":1}`, 400, api.TypeMalformed, `unknown field "x"`},
		{"verify: oversized", "/v1/verify", "", `{"key":"default","format":"raw","signature":"AA==","document":"` + strings.Repeat("A", 200<<10) + `"}`, 413, api.TypeTooLarge, "request body exceeds"},
		{"batch: empty", "/v1/sign:batch", "", `{"items":[]}`, 400, api.TypeMalformed, `"items" is empty`},
		{"batch: shared key", "/v1/sign:batch", "", `{"items":[{"idempotency_key":"b","key":"default","format":"raw","document":"aGVsbG8="},{"idempotency_key":"b","key":"default","format":"raw","document":"aGVsbG8="}]}`, 400, api.TypeMalformed, `share idempotency_key "b"`},
		{"unknown endpoint", "/v1/nothing", "", `{}`, 404, api.TypeNotFound, "no such endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.idem != "" {
				hdr["Idempotency-Key"] = tc.idem
			}
			r := e.call(t, http.MethodPost, tc.path, e.token, hdr, []byte(tc.body))
			p := wantProblem(t, r, tc.status, tc.typ)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tc.detail)
			}
		})
	}
	if after := e.counts(t); after != before {
		t.Errorf("malformed requests changed the store: %+v -> %+v", before, after)
	}
	// The node still serves after all of that.
	e.mustSign(t, "m-ok", api.SignRequest{Key: "default", Format: api.FormatRaw, Document: []byte("hello")})
}

func b64(b []byte) string {
	s, _ := json.Marshal(b)
	return strings.Trim(string(s), `"`)
}

// TestKeyStates checks that a disabled key refuses to sign but still
// verifies, and that a rotated key signs with its new version while the old
// version's signatures keep verifying.
func TestKeyStates(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	e.createKey(t, "contracts", keys.ECDSAP256, soft.Scheme)
	doc := []byte("contract")
	sig1, _ := e.mustSign(t, "ks-1", api.SignRequest{Key: "contracts", Format: api.FormatCMS, Document: doc})

	if _, err := e.inst.Keys.SetState(ctx, "dev", "contracts", 1, store.KeyDisabled, "test"); err != nil {
		t.Fatal(err)
	}
	r := e.sign(t, e.token, "ks-2", api.SignRequest{Key: "contracts", Format: api.FormatCMS, Document: doc})
	p := wantProblem(t, r, http.StatusConflict, api.TypeKeyDisabled)
	if !strings.Contains(p.Detail, "disabled") {
		t.Errorf("detail = %q, want it to say the key is disabled", p.Detail)
	}
	if v := e.verify(t, api.VerifyRequest{Key: "contracts", Format: api.FormatCMS, Signature: sig1.Signature, Document: doc}); !v.Valid || v.KeyVersion != 1 {
		t.Errorf("verify with the disabled key: %+v, want valid v1", v)
	}
	// A replay of an answered key is still answered while the key is disabled.
	if again, _ := e.mustSign(t, "ks-1", api.SignRequest{Key: "contracts", Format: api.FormatCMS, Document: doc}); again.ID != sig1.ID {
		t.Errorf("replay while disabled got %s, want %s", again.ID, sig1.ID)
	}

	if _, err := e.inst.Keys.SetState(ctx, "dev", "contracts", 1, store.KeyEnabled, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.inst.Keys.Rotate(ctx, "dev", "contracts", "test"); err != nil {
		t.Fatal(err)
	}
	sig2, _ := e.mustSign(t, "ks-3", api.SignRequest{Key: "contracts", Format: api.FormatCMS, Document: doc})
	if sig2.KeyVersion != 2 {
		t.Errorf("after rotation signed with v%d, want v2", sig2.KeyVersion)
	}
	if err := opensslVerifyCMS(t, e.inst.Dir+"/ca.pem", doc, mustDecode(t, api.FormatCMS, sig2.Signature)); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		sig  api.SignResponse
		want int
	}{{sig1, 1}, {sig2, 2}} {
		if v := e.verify(t, api.VerifyRequest{Key: "contracts", Format: api.FormatCMS, Signature: tc.sig.Signature, Document: doc}); !v.Valid || v.KeyVersion != tc.want {
			t.Errorf("verify v%d signature after rotation: %+v", tc.want, v)
		}
	}
	// Pinning the wrong version says invalid; pinning a missing one is 404.
	if v := e.verify(t, api.VerifyRequest{Key: "contracts", KeyVersion: 2, Format: api.FormatCMS, Signature: sig1.Signature, Document: doc}); v.Valid {
		t.Errorf("v1 signature verified as v2: %+v", v)
	}
	r = e.call(t, "POST", "/v1/verify", e.token, nil, mustJSON(t, api.VerifyRequest{Key: "contracts", KeyVersion: 9, Format: api.FormatCMS, Signature: sig1.Signature, Document: doc}))
	wantProblem(t, r, http.StatusNotFound, api.TypeKeyNotFound)

	// Disabling v1 (old) leaves signing with v2 alone; destroying v1 keeps
	// its signatures verifiable from the stored public key.
	for _, st := range []string{store.KeyDisabled, store.KeyDestroyed} {
		if _, err := e.inst.Keys.SetState(ctx, "dev", "contracts", 1, st, "test"); err != nil {
			t.Fatal(err)
		}
	}
	e.mustSign(t, "ks-4", api.SignRequest{Key: "contracts", Format: api.FormatCMS, Document: doc})
	if v := e.verify(t, api.VerifyRequest{Key: "contracts", Format: api.FormatCMS, Signature: sig1.Signature, Document: doc}); !v.Valid || v.KeyVersion != 1 {
		t.Errorf("verify with the destroyed v1: %+v, want valid v1", v)
	}
}

func mustDecode(t *testing.T, f api.Format, s string) []byte {
	t.Helper()
	b, err := node.DecodeArtifact(f, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDrillFaults runs the data-plane fault scenarios against a second
// server on the same installation and checks each does what a drill
// expects the playbook to detect.
func TestDrillFaults(t *testing.T) {
	e := newEnv(t, envOptions{})
	faulty := func(t *testing.T, scenario string) *testEnv {
		f, err := node.NewFaults(scenario, 1, 7)
		if err != nil {
			t.Fatal(err)
		}
		inst, srv, ts := serveDir(t, e.dir, "faulty-"+scenario, func(c *node.Config) { c.Faults = f })
		return &testEnv{dir: e.dir, inst: inst, srv: srv, ts: ts, token: e.token}
	}
	doc := []byte("drill document")

	t.Run(node.FaultInvalidSignatures, func(t *testing.T) {
		bad := faulty(t, node.FaultInvalidSignatures)
		for _, f := range []api.Format{api.FormatCMS, api.FormatJWS, api.FormatRaw} {
			resp, _ := bad.mustSign(t, "inv-"+string(f), api.SignRequest{Key: "default", Format: f, Document: doc})
			if v := e.verify(t, api.VerifyRequest{Key: "default", Format: f, Signature: resp.Signature, Document: doc}); v.Valid {
				t.Errorf("%s: a corrupted signature verifies: %+v", f, v)
			}
			if f == api.FormatCMS {
				if err := opensslVerifyCMS(t, e.inst.Dir+"/ca.pem", doc, mustDecode(t, f, resp.Signature)); err == nil {
					t.Error("openssl accepts the corrupted CMS signature")
				}
			}
		}
	})
	t.Run(node.FaultMetadataDrift, func(t *testing.T) {
		drift := faulty(t, node.FaultMetadataDrift)
		resp, _ := drift.mustSign(t, "drift-cms", api.SignRequest{Key: "default", Format: api.FormatCMS, Document: doc})
		if resp.DigestAlgorithm != "sha512" {
			t.Errorf("digest_algorithm = %s, want the drifted sha512 (ecdsa-p256 policy is sha256)", resp.DigestAlgorithm)
		}
		// The signature is cryptographically valid (any CMS verifier accepts
		// it) but breaks the algorithm policy, which /v1/verify reports.
		if err := opensslVerifyCMS(t, e.inst.Dir+"/ca.pem", doc, mustDecode(t, api.FormatCMS, resp.Signature)); err != nil {
			t.Errorf("drifted CMS should be cryptographically valid: %v", err)
		}
		if v := e.verify(t, api.VerifyRequest{Key: "default", Format: api.FormatCMS, Signature: resp.Signature, Document: doc}); v.Valid || !strings.Contains(v.Reason, "digest algorithm mismatch") {
			t.Errorf("/v1/verify of a drifted signature = %+v, want invalid for a digest algorithm mismatch", v)
		}
	})
	t.Run(node.FaultPartialPersist, func(t *testing.T) {
		lossy := faulty(t, node.FaultPartialPersist)
		before := e.counts(t)
		req := api.SignRequest{Key: "default", Format: api.FormatRaw, Document: doc}
		r := lossy.sign(t, e.token, "pp-1", req)
		wantProblem(t, r, http.StatusServiceUnavailable, api.TypeUnavailable)
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if after := e.counts(t); after != before {
			t.Errorf("a failed persist left rows: %+v -> %+v", before, after)
		}
		if _, err := e.inst.Store.SignatureByIdempotencyKey(t.Context(), "dev", "pp-1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("signature for pp-1 after failed persist: %v, want ErrNotFound", err)
		}
		// The client retries with the same key against a healthy node: one
		// signature, and replays return it.
		_, first := e.mustSign(t, "pp-1", req)
		_, again := e.mustSign(t, "pp-1", req)
		if !bytes.Equal(first.body, again.body) {
			t.Error("replay after recovery differs from the first answer")
		}
		if after := e.counts(t); after.signatures != before.signatures+1 || after.events != before.events+1 {
			t.Errorf("after retry: %+v -> %+v, want exactly one signature and one event more", before, after)
		}
	})
}

// TestReadyAndMetrics checks the operational endpoints.
func TestReadyAndMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	if r := e.call(t, "GET", "/readyz", "", nil, nil); r.status != 200 {
		t.Errorf("/readyz = %v, want 200", r)
	}
	if r := e.call(t, "GET", "/healthz", "", nil, nil); r.status != 200 {
		t.Errorf("/healthz = %v, want 200", r)
	}
	e.mustSign(t, "metrics-1", api.SignRequest{Key: "default", Format: api.FormatJWS, Document: []byte("m")})
	r := e.call(t, "GET", "/metrics", "", nil, nil)
	if r.status != 200 || !strings.Contains(string(r.body), `countersign_signatures_total{algorithm="ecdsa-p256",format="jws"} 1`) {
		t.Errorf("/metrics lacks the signature counter:\n%s", r.body)
	}
	for _, want := range []string{"countersign_commit_batch_size_count 1", `countersign_commit_batch_size_bucket{le="1"} 1`, "countersign_commit_duration_seconds_count 1"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %q (one sign, one group commit)", want)
		}
	}

	// A second server whose store handle is closed is not ready.
	inst, _, ts := serveDir(t, e.dir, "closed-store", nil)
	inst.Store.Close()
	r = callURL(t, ts.URL, "GET", "/readyz", "", nil, nil)
	wantProblem(t, r, http.StatusServiceUnavailable, api.TypeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("/readyz 503 without Retry-After")
	}
}

// failedCommitter is a committer that latched a durability failure.
type failedCommitter struct{ node.Committer }

func (failedCommitter) Err() error { return store.ErrNotDurable }

// A node whose committer can no longer make commits durable is not ready.
func TestNotReadyAfterDurabilityFailure(t *testing.T) {
	e := newEnv(t, envOptions{node: func(c *node.Config) { c.Committer = failedCommitter{c.Committer} }})
	r := e.call(t, "GET", "/readyz", "", nil, nil)
	if r.status != 503 || !strings.Contains(string(r.body), "could not be made durable") {
		t.Errorf("/readyz = %d %s, want 503 naming the durability failure", r.status, r.body)
	}
}
