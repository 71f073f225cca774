package node_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

// testScryptN keeps the soft-key KDF fast in tests.
const testScryptN = 1 << 10

// testEnv is one real installation (SQLite store, soft keys, CA) served by
// a real node.Server over loopback HTTP.
type testEnv struct {
	dir   string
	inst  *install.Installation
	srv   *node.Server
	ts    *httptest.Server
	token string // tenant "dev"
}

// envOptions tune newEnv.
type envOptions struct {
	init     install.Options
	node     func(*node.Config)
	instance string
}

// newEnv initialises a dev data directory (tenant "dev", key "default"
// ecdsa-p256) and serves it.
func newEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "data")
	o.init.Dev = true
	o.init.ScryptN = testScryptN
	o.init.Logger = quietLogger()
	if _, err := install.Init(ctx, dir, o.init); err != nil {
		t.Fatalf("install.Init: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "dev-token"))
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{dir: dir, token: strings.TrimSpace(string(tok))}
	if o.instance == "" {
		o.instance = "test-node-1"
	}
	e.inst, e.srv, e.ts = serveDir(t, dir, o.instance, o.node)
	return e
}

// serveDir opens the installation in dir (its own store handle, committer
// and key manager: what a second node process would have) and serves it.
func serveDir(t testing.TB, dir, instance string, tune func(*node.Config)) (*install.Installation, *node.Server, *httptest.Server) {
	t.Helper()
	inst, err := install.Open(t.Context(), dir, install.OpenOptions{ScryptN: testScryptN, Release: "test-r1", Instance: instance, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("install.Open: %v", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	cm := node.NewCommitMetrics()
	committer := store.NewCommitter(runCtx, inst.Store, store.CommitterConfig{Observe: cm.Observe})
	cfg := node.Config{Store: inst.Store, Committer: committer, Keys: inst.Keys, CommitMetrics: cm,
		Release: "test-r1", Instance: instance, KeyCacheTTL: time.Nanosecond, Logger: quietLogger()}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		committer.Close()
		cancel()
		inst.Close()
	})
	return inst, srv, ts
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// reply is one HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// call sends one request to the node. token "" sends no Authorization.
func (e *testEnv) call(t *testing.T, method, path, token string, hdr map[string]string, body []byte) reply {
	t.Helper()
	return callURL(t, e.ts.URL, method, path, token, hdr, body)
}

func callURL(t testing.TB, base, method, path, token string, hdr map[string]string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// sign posts a sign request with an idempotency key.
func (e *testEnv) sign(t *testing.T, token, idem string, req any) reply {
	t.Helper()
	return e.call(t, http.MethodPost, "/v1/sign", token, map[string]string{"Idempotency-Key": idem}, mustJSON(t, req))
}

// mustSign signs and decodes a 200 answer.
func (e *testEnv) mustSign(t *testing.T, idem string, req api.SignRequest) (api.SignResponse, reply) {
	t.Helper()
	r := e.sign(t, e.token, idem, req)
	if r.status != http.StatusOK {
		t.Fatalf("sign %s: got %v, want 200", idem, r)
	}
	var resp api.SignResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatalf("sign response: %v", err)
	}
	return resp, r
}

// verify posts a verify request and decodes a 200 answer.
func (e *testEnv) verify(t *testing.T, req api.VerifyRequest) api.VerifyResponse {
	t.Helper()
	r := e.call(t, http.MethodPost, "/v1/verify", e.token, nil, mustJSON(t, req))
	if r.status != http.StatusOK {
		t.Fatalf("verify: got %v, want 200", r)
	}
	var resp api.VerifyResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	if b, ok := v.([]byte); ok {
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantProblem checks r is an RFC 9457 problem of status and type, and
// returns it.
func wantProblem(t testing.TB, r reply, status int, typ string) api.Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %v, want status %d (%s)", r, status, typ)
	}
	if ct := r.header.Get("Content-Type"); ct != api.ContentTypeProblem {
		t.Errorf("Content-Type = %q, want %q", ct, api.ContentTypeProblem)
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Type != typ || p.Status != status {
		t.Errorf("problem = %+v, want type %s status %d", p, typ, status)
	}
	return p
}

// counts is the number of signatures and audit events in the store.
type counts struct{ signatures, events int64 }

func (e *testEnv) counts(t testing.TB) counts {
	t.Helper()
	return storeCounts(t, e.inst.Store)
}

func storeCounts(t testing.TB, st store.Store) counts {
	t.Helper()
	ctx := context.Background()
	ev, err := st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sigs int64
	if err := sqlDB(t, st).QueryRowContext(ctx, `SELECT COUNT(*) FROM signatures`).Scan(&sigs); err != nil {
		t.Fatal(err)
	}
	return counts{signatures: sigs, events: ev}
}

// sqlDB is the SQLite handle under a store, for checks the store
// interface does not offer (row counts, constraints).
func sqlDB(t testing.TB, st store.Store) *sql.DB {
	t.Helper()
	s, ok := st.(*sqlite.Store)
	if !ok {
		t.Fatalf("store is %T, want *sqlite.Store", st)
	}
	return s.DB()
}

// createKey makes a key for tenant "dev" through the key manager.
func (e *testEnv) createKey(t *testing.T, name string, alg keys.Algorithm, scheme string) store.KeyVersion {
	t.Helper()
	kv, err := e.inst.Keys.Create(t.Context(), "dev", name, alg, scheme, "test")
	if err != nil {
		t.Fatalf("create key %s (%s, %s): %v", name, alg, scheme, err)
	}
	return kv
}

// requireTool returns the path of an external tool, failing under CI=true
// and skipping otherwise when it is missing.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// opensslVerifyCMS checks a detached DER CMS signature with OpenSSL against
// the installation's CA.
func opensslVerifyCMS(t testing.TB, caFile string, doc, der []byte) error {
	t.Helper()
	openssl := requireTool(t, "openssl")
	dir := t.TempDir()
	docF, sigF := filepath.Join(dir, "doc"), filepath.Join(dir, "sig.der")
	writeFile(t, docF, doc)
	writeFile(t, sigF, der)
	out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigF,
		"-content", docF, "-CAfile", caFile, "-out", os.DevNull).CombinedOutput()
	if err != nil {
		return fmt.Errorf("openssl cms -verify: %v\n%s", err, out)
	}
	return nil
}

// certtoolVerifyCMS checks a detached DER CMS signature with GnuTLS (which,
// unlike OpenSSL 3.0, verifies Ed25519 CMS).
func certtoolVerifyCMS(t testing.TB, caFile string, doc, der []byte) error {
	t.Helper()
	certtool := requireTool(t, "certtool")
	dir := t.TempDir()
	docF, sigF := filepath.Join(dir, "doc"), filepath.Join(dir, "sig.der")
	writeFile(t, docF, doc)
	writeFile(t, sigF, der)
	out, err := exec.Command(certtool, "--p7-verify", "--inder", "--infile", sigF, "--load-data", docF,
		"--load-ca-certificate", caFile).CombinedOutput()
	if err != nil {
		return fmt.Errorf("certtool --p7-verify: %v\n%s", err, out)
	}
	return nil
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func parsePublicKeyPEM(t testing.TB, s string) any {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		t.Fatalf("no PEM block in %q", s)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
