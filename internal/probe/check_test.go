package probe

import (
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"
)

// storedSig signs doc with version v of the probe key as a node would and
// returns the row the store would hold.
func storedSig(t *testing.T, f api.Format, v int, doc []byte) store.Signature {
	t.Helper()
	k := newTestKeys(t).versions[v]
	res, err := sign.Sign(f, k, sign.Input{Document: doc}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return store.Signature{ID: "sig-1", TenantID: "acme", KeyName: "probe", KeyVersion: v, Format: string(f),
		Algorithm: string(k.Algorithm), AlgorithmOID: res.AlgorithmOID, DigestAlgorithm: sign.HashName(res.Hash), DigestOID: res.DigestOID,
		DocumentDigest: res.Digest, Signature: res.Artifact, Release: "v2", Instance: "canary-0"}
}

func TestCheckStored(t *testing.T) {
	ks := newTestKeys(t)
	var tks []TrustedKey
	for _, v := range []int{1, 2} {
		k := ks.versions[v]
		tks = append(tks, TrustedKey{Tenant: "acme", Key: "probe", Version: v, Algorithm: k.Algorithm, Public: k.Signer.Public(), Chain: k.Chain})
	}
	roots := x509.NewCertPool()
	roots.AddCert(ks.ca)
	ts, err := NewTrustSet(roots, tks...)
	if err != nil {
		t.Fatal(err)
	}
	// No policy entry for acme/probe: expectations come from the pinned inventory.
	c := &Checker{Trust: ts}
	doc := []byte("invoice 42")
	for _, tc := range []struct {
		name   string
		format api.Format
		mutate func(*store.Signature)
		want   Kind
	}{
		{"cms ok", api.FormatCMS, nil, KindOK},
		{"raw ok", api.FormatRaw, nil, KindOK},
		{"raw version 2 ok", api.FormatRaw, func(s *store.Signature) { *s = storedSig(t, api.FormatRaw, 2, doc) }, KindOK},
		{"jws needs the document", api.FormatJWS, nil, KindError},
		{"cms flipped", api.FormatCMS, func(s *store.Signature) { s.Signature = corrupt(api.FormatCMS, s.Signature) }, KindInvalid},
		{"raw flipped", api.FormatRaw, func(s *store.Signature) { s.Signature = corrupt(api.FormatRaw, s.Signature) }, KindInvalid},
		{"cms truncated", api.FormatCMS, func(s *store.Signature) { s.Signature = s.Signature[:20] }, KindInvalid},
		{"other digest recorded", api.FormatRaw, func(s *store.Signature) { s.DocumentDigest[0] ^= 1 }, KindInvalid},
		{"unpinned version", api.FormatRaw, func(s *store.Signature) { *s = storedSig(t, api.FormatRaw, 3, doc) }, KindDrift},
		{"wrong oid stamped", api.FormatCMS, func(s *store.Signature) { s.AlgorithmOID = "1.2.840.10045.4.3.3" }, KindDrift},
		{"wrong digest name", api.FormatRaw, func(s *store.Signature) { s.DigestAlgorithm = "sha1" }, KindDrift},
		{"other tenant", api.FormatRaw, func(s *store.Signature) { s.TenantID = "globex" }, KindDrift},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := storedSig(t, tc.format, 1, doc)
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			f := c.CheckStored(s)
			if f.Kind != tc.want {
				t.Fatalf("got %s (%s), want %s", f.Kind, f.Detail, tc.want)
			}
			if f.SignatureID != s.ID || f.Release != "v2" || f.KeyVersion != s.KeyVersion {
				t.Errorf("finding not stamped from the signature: %+v", f)
			}
		})
	}
}

func TestCheckSignatureWithDocument(t *testing.T) {
	c := &Checker{Policy: testPolicy(), Trust: newTestKeys(t).trust(t)}
	doc := []byte("contract")
	for _, f := range AllFormats {
		s := storedSig(t, f, 1, doc)
		resp := api.SignResponse{ID: s.ID, Format: f, Signature: node.EncodeArtifact(f, s.Signature), Key: "probe", KeyVersion: 1,
			Algorithm: s.Algorithm, AlgorithmOID: s.AlgorithmOID, DigestAlgorithm: s.DigestAlgorithm, DigestOID: s.DigestOID,
			DocumentDigest: encodeB64(s.DocumentDigest), Release: "v2"}
		if got := c.CheckSignature(resp, nil, doc); got.Kind != KindOK {
			t.Errorf("%s: %s %s, want ok", f, got.Kind, got.Detail)
		}
		if got := c.CheckSignature(resp, nil, []byte("another contract")); got.Kind != KindInvalid {
			t.Errorf("%s over another document: %s %s, want invalid", f, got.Kind, got.Detail)
		}
		lie := resp
		lie.DocumentDigest = encodeB64(hashOf(crypto.SHA256, []byte("x")))
		if got := c.CheckSignature(lie, nil, doc); got.Kind != KindDrift {
			t.Errorf("%s with a false document_digest: %s %s, want drift", f, got.Kind, got.Detail)
		}
		v2 := resp // version 2 is pinned but the policy allows only 1
		v2.KeyVersion = 2
		if got := c.CheckSignature(v2, nil, doc); got.Kind != KindInvalid {
			t.Errorf("%s claimed by version 2: %s %s, want invalid (v2's key did not sign it)", f, got.Kind, got.Detail)
		}
	}
}

func TestTrustSetCheckServed(t *testing.T) {
	ks := newTestKeys(t)
	ts := ks.trust(t)
	served := func(v int, k sign.Key, chain bool) api.KeyVersion {
		pub, err := pki.PublicKeyPEM(k.Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		kv := api.KeyVersion{Version: v, Algorithm: string(k.Algorithm), PublicKeyPEM: pub}
		if chain {
			kv.CertChainPEM = pki.EncodeChainPEM(k.Chain)
		}
		return kv
	}
	for _, tc := range []struct {
		name string
		key  api.Key
		want string // "" = no drift
	}{
		{"same", api.Key{Name: "probe", Versions: []api.KeyVersion{served(1, ks.versions[1], true), served(2, ks.versions[2], false)}}, ""},
		{"only v1 served", api.Key{Name: "probe", Versions: []api.KeyVersion{served(1, ks.versions[1], true)}}, ""},
		{"impostor key", api.Key{Name: "probe", Versions: []api.KeyVersion{served(1, ks.other, false)}}, "public key"},
		{"new version", api.Key{Name: "probe", Versions: []api.KeyVersion{served(3, ks.versions[3], true)}}, "not pinned"},
		{"other leaf", api.Key{Name: "probe", Versions: []api.KeyVersion{{Version: 1, Algorithm: "ecdsa-p256",
			PublicKeyPEM: served(1, ks.versions[1], false).PublicKeyPEM, CertChainPEM: pki.EncodeChainPEM(ks.versions[2].Chain)}}}, "leaf certificate"},
		{"algorithm", api.Key{Name: "probe", Versions: []api.KeyVersion{{Version: 1, Algorithm: "ecdsa-p384", PublicKeyPEM: served(1, ks.versions[1], false).PublicKeyPEM}}}, "algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ts.CheckServed("", tc.key)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckServed = %v, want nil", err)
				}
				return
			}
			var kd *KeyDriftError
			if !errors.As(err, &kd) || !errors.Is(err, ErrKeyDrift) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckServed = %v, want *KeyDriftError mentioning %q", err, tc.want)
			}
		})
	}
}

func TestFetchTrustSetFromTrustedSource(t *testing.T) {
	n := newFakeNode(t, "v1") // stands in for the trusted key inventory endpoint
	c := newTrustedClient(t, n.URL())
	ts, err := FetchTrustSet(t.Context(), c, nil, "", "probe")
	if err != nil {
		t.Fatal(err)
	}
	if got := ts.Versions("", "probe"); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("pinned versions %v, want [1 2]", got)
	}
	tk, _ := ts.Lookup("", "probe", 2)
	if !pki.SamePublicKey(tk.Public, newTestKeys(t).versions[2].Signer.Public()) || len(tk.Chain) != 2 {
		t.Errorf("version 2 pinned as %+v", tk)
	}
	if _, err := FetchTrustSet(t.Context(), c, nil, "", "missing"); err == nil {
		t.Error("FetchTrustSet of a missing key succeeded")
	}
}

func TestNewTrustSetRejects(t *testing.T) {
	ks := newTestKeys(t)
	k1 := ks.versions[1]
	for _, tc := range []struct {
		name string
		tk   []TrustedKey
	}{
		{"no key", []TrustedKey{{Key: "p", Version: 1, Algorithm: "ecdsa-p256"}}},
		{"wrong algorithm", []TrustedKey{{Key: "p", Version: 1, Algorithm: "ed25519", Public: k1.Signer.Public()}}},
		{"chain of another key", []TrustedKey{{Key: "p", Version: 1, Algorithm: "ecdsa-p256", Public: k1.Signer.Public(), Chain: ks.other.Chain}}},
		{"version 0", []TrustedKey{{Key: "p", Algorithm: "ecdsa-p256", Public: k1.Signer.Public()}}},
		{"duplicate", []TrustedKey{{Key: "p", Version: 1, Algorithm: "ecdsa-p256", Public: k1.Signer.Public()}, {Key: "p", Version: 1, Algorithm: "ecdsa-p256", Public: k1.Signer.Public()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewTrustSet(nil, tc.tk...); err == nil {
				t.Fatal("NewTrustSet accepted it")
			}
		})
	}
}
