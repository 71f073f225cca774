package probe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/sign"
)

// fakeNode is a loopback HTTP server that answers POST /v1/sign and
// GET /v1/keys/{name} the way internal/node does (api.SignResponse JSON,
// X-Countersign-Release/Instance headers), signing with in-memory keys
// through internal/sign. It is a protocol-level stand-in for the node, used
// because the node cannot run here without the store. A mode makes it
// misbehave.
type fakeNode struct {
	t   *testing.T
	srv *httptest.Server
	ks  *testKeys

	mu       sync.Mutex
	mode     mode
	release  string
	instance string
	fail503  int           // answer the next n sign requests with 503
	delay    time.Duration // modeSlow
	signs    int
	arrived  chan struct{} // one token per sign request, if not nil
}

type mode string

const (
	modeOK          mode = "ok"
	modeCorrupt     mode = "corrupt"      // flip a byte of the signature
	modeOtherKey    mode = "other-key"    // sign with another key, claim version 1
	modeWrongDigest mode = "wrong-digest" // sign over sha512 instead of sha256
	modeStampAlg    mode = "stamp-alg"    // correct signature, algorithm field says ecdsa-p384
	modeVersion2    mode = "version-2"    // sign with the pinned version 2 (outside policy range)
	modeVersion3    mode = "version-3"    // sign with an unpinned version 3
	modeBodyRelease mode = "body-release" // body release differs from header
	mode503         mode = "503"
	mode400         mode = "400"
	modeGarbage     mode = "garbage" // 200 with a body that is not JSON
	modeHang        mode = "hang"    // never answer until the client gives up
	modeSlow        mode = "slow"    // answer correctly after delay
	modeServeOther  mode = "serve-other-key"
)

// testKeys are the probe key's versions: v1 and v2 are pinned, v3 and
// other are not.
type testKeys struct {
	ca       *x509.Certificate
	versions map[int]sign.Key
	other    sign.Key
}

var (
	keysOnce sync.Once
	sharedKs *testKeys
)

func newTestKeys(t *testing.T) *testKeys {
	t.Helper()
	keysOnce.Do(func() {
		now := time.Now()
		caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		ca, err := pki.NewCA(caKey, "probe test CA", now, 24*time.Hour)
		if err != nil {
			panic(err)
		}
		mk := func(name string) sign.Key {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			leaf, err := pki.IssueSigningCert(ca, caKey, k.Public(), name, now, 24*time.Hour)
			if err != nil {
				panic(err)
			}
			return sign.Key{Signer: k, Algorithm: keys.ECDSAP256, Chain: []*x509.Certificate{leaf, ca}}
		}
		sharedKs = &testKeys{ca: ca, versions: map[int]sign.Key{1: mk("probe-1"), 2: mk("probe-2"), 3: mk("probe-3")}, other: mk("intruder")}
	})
	return sharedKs
}

// trust pins versions 1 and 2 of key "probe".
func (ks *testKeys) trust(t *testing.T) *TrustSet {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ks.ca)
	var tks []TrustedKey
	for _, v := range []int{1, 2} {
		k := ks.versions[v]
		tks = append(tks, TrustedKey{Key: "probe", Version: v, Algorithm: k.Algorithm, Public: k.Signer.Public(), Chain: k.Chain})
	}
	ts, err := NewTrustSet(roots, tks...)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func newFakeNode(t *testing.T, release string) *fakeNode {
	t.Helper()
	n := &fakeNode{t: t, ks: newTestKeys(t), mode: modeOK, release: release, instance: release + "-0"}
	n.srv = httptest.NewServer(n)
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) URL() string { return n.srv.URL }

func (n *fakeNode) set(m mode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mode = m
}

func (n *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	m, rel, inst, delay := n.mode, n.release, n.instance, n.delay
	fail := n.fail503 > 0 && r.Method == http.MethodPost
	if fail {
		n.fail503--
	}
	if r.Method == http.MethodPost {
		n.signs++
		if n.arrived != nil {
			select {
			case n.arrived <- struct{}{}:
			default:
			}
		}
	}
	n.mu.Unlock()
	w.Header().Set("X-Countersign-Release", rel)
	w.Header().Set("X-Countersign-Instance", inst)
	if r.Header.Get("Authorization") != "Bearer probe-token" {
		problem(w, http.StatusUnauthorized, api.TypeUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/keys/probe":
		n.serveKey(w, m)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/sign":
		if fail {
			m = mode503
		}
		n.serveSign(w, r, m, rel, inst, delay)
	default:
		problem(w, http.StatusNotFound, api.TypeNotFound)
	}
}

func problem(w http.ResponseWriter, status int, typ string) {
	w.Header().Set("Content-Type", "application/problem+json")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.Problem{Type: typ, Title: http.StatusText(status), Status: status})
}

func (n *fakeNode) serveKey(w http.ResponseWriter, m mode) {
	out := api.Key{Name: "probe", CurrentVersion: 2}
	for _, v := range []int{1, 2} {
		k := n.ks.versions[v]
		if m == modeServeOther && v == 2 {
			k = n.ks.other
		}
		pub, err := pki.PublicKeyPEM(k.Signer.Public())
		if err != nil {
			n.t.Error(err)
		}
		out.Versions = append(out.Versions, api.KeyVersion{Version: v, Algorithm: string(k.Algorithm), State: "enabled",
			PublicKeyPEM: pub, CertChainPEM: pki.EncodeChainPEM(k.Chain)})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (n *fakeNode) serveSign(w http.ResponseWriter, r *http.Request, m mode, rel, inst string, delay time.Duration) {
	// Read the body first: only then does net/http watch the connection
	// and cancel r.Context() when the client gives up (hang, slow).
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	switch m {
	case mode503:
		problem(w, http.StatusServiceUnavailable, api.TypeUnavailable)
		return
	case mode400:
		problem(w, http.StatusBadRequest, api.TypeMalformed)
		return
	case modeGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("<html>oops</html>"))
		return
	case modeHang:
		<-r.Context().Done()
		return
	case modeSlow:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	var req api.SignRequest
	if err := json.Unmarshal(body, &req); err != nil || r.Header.Get("Idempotency-Key") == "" {
		problem(w, http.StatusBadRequest, api.TypeMalformed)
		return
	}
	version, key, h := 1, n.ks.versions[1], crypto.SHA256
	switch m {
	case modeOtherKey:
		key = n.ks.other
	case modeVersion2:
		version, key = 2, n.ks.versions[2]
	case modeVersion3:
		version, key = 3, n.ks.versions[3]
	case modeWrongDigest:
		h = crypto.SHA512
	}
	if m == modeWrongDigest && req.Format == api.FormatJWS {
		h = crypto.SHA256 // ES256 exists only with sha256; the stamp below still lies
	}
	res, err := sign.Sign(req.Format, key, sign.Input{Document: req.Document, Hash: h}, time.Now())
	if err != nil {
		n.t.Errorf("fake node sign: %v", err)
		problem(w, http.StatusInternalServerError, api.TypeInternal)
		return
	}
	if m == modeCorrupt {
		res.Artifact = corrupt(req.Format, res.Artifact)
	}
	resp := api.SignResponse{
		ID: "sig-" + strconv.Itoa(n.count()), Format: req.Format, Signature: node.EncodeArtifact(req.Format, res.Artifact),
		Key: req.Key, KeyVersion: version, Algorithm: string(key.Algorithm), AlgorithmOID: res.AlgorithmOID,
		DigestAlgorithm: sign.HashName(res.Hash), DigestOID: res.DigestOID,
		DocumentDigest: base64.StdEncoding.EncodeToString(hashOf(crypto.SHA256, req.Document)),
		DocumentID:     req.DocumentID, Release: rel, Instance: inst, SignedAt: time.Now().UTC(),
	}
	switch m {
	case modeWrongDigest:
		resp.DocumentDigest = base64.StdEncoding.EncodeToString(res.Digest)
		resp.DigestAlgorithm, resp.DigestOID = "sha512", oidSHA512
	case modeStampAlg:
		resp.Algorithm = string(keys.ECDSAP384)
	case modeBodyRelease:
		resp.Release = "v-other"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.signs
}

// corrupt flips a bit of the signature value, keeping the encoding valid.
func corrupt(f api.Format, a []byte) []byte {
	a = append([]byte(nil), a...)
	if f == api.FormatJWS {
		// Flip a bit in the middle of the decoded signature segment.
		i := len(a) - 1
		for a[i-1] != '.' {
			i--
		}
		sig, err := base64.RawURLEncoding.DecodeString(string(a[i:]))
		if err != nil {
			panic(err)
		}
		sig[len(sig)/2] ^= 0x01
		return append(a[:i], base64.RawURLEncoding.EncodeToString(sig)...)
	}
	a[len(a)-8] ^= 0x01
	return a
}
