package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/node"
)

// FuzzSignRequest drives the whole sign handler (auth, Idempotency-Key
// check, body limit, strict decoding, validation, signing) with arbitrary
// bodies and headers. Every answer must be a signature (200) or an RFC 9457
// problem with a 4xx status: never a 5xx, never a panic.
func FuzzSignRequest(f *testing.F) {
	for _, s := range []struct {
		body, idem, ctype string
		batch             bool
	}{
		{`{"key":"default","format":"raw","document":"aGVsbG8="}`, "seed-1", "application/json", false},
		{`{"key":"default","format":"cms","digest":{"alg":"sha256","value":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`, "seed-2", "application/json", false},
		{`{"key":"default","format":"jws","digest":{"alg":"sha512","value":"AA=="}}`, "seed-3", "", false},
		{`{"key":"default","format":"raw","document":null,"digest":null}`, "seed-4", "text/plain", false},
		{`{"key":"nope","format":"raw","document":""}`, "\x00", "application/json", false},
		{`{"items":[{"idempotency_key":"i1","key":"default","format":"raw","document":"aGk="}]}`, "", "application/json", true},
		{`{"items":[{"idempotency_key":"","key":"default","format":"xml"}]}`, "", "", true},
		{`{"key":"default","format":"raw","document":"aGVsbG8=","document_id":"\ud800"}`, "seed-5", "application/json", false},
		{`[]`, "seed-6", "", false},
		{"", "seed-7", "", false},
	} {
		f.Add([]byte(s.body), s.idem, s.ctype, s.batch)
	}
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte, idem, ctype string, batch bool) {
		path := "/v1/sign"
		if batch {
			path = "/v1/sign:batch"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.token)
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		res := rec.Result()
		switch {
		case res.StatusCode == http.StatusOK:
			if batch {
				var out api.BatchSignResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
					t.Fatalf("200 batch body is not a batch response: %v: %s", err, rec.Body)
				}
				for i, r := range out.Results {
					if r.Status >= 500 || (r.Status != 200 && (r.Problem == nil || r.Problem.Type == "")) {
						t.Fatalf("batch item %d: %+v", i, r)
					}
				}
				return
			}
			var out api.SignResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.ID == "" || out.Signature == "" {
				t.Fatalf("200 body is not a signature: %v: %s", err, rec.Body)
			}
		case res.StatusCode >= 400 && res.StatusCode < 500:
			if ct := res.Header.Get("Content-Type"); ct != api.ContentTypeProblem {
				t.Fatalf("%d with Content-Type %q", res.StatusCode, ct)
			}
			var p api.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Type == "" || p.Status != res.StatusCode || p.Detail == "" {
				t.Fatalf("%d problem body %q: %v", res.StatusCode, rec.Body, err)
			}
		default:
			t.Fatalf("status %d for body %q idem %q: %s", res.StatusCode, body, idem, rec.Body)
		}
	})
}

// fuzzEnv is a real installation served in-process (no listener: the
// fuzzer calls ServeHTTP directly).
type fuzzEnv struct {
	srv   *node.Server
	token string
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	e := newEnv(f, envOptions{node: func(c *node.Config) { c.MaxDocumentBytes = 64 << 10 }})
	return &fuzzEnv{srv: e.srv, token: e.token}
}
