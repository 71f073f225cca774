package sign

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
)

// TestJWSGoJose verifies every algorithm with go-jose's own ParseDetached
// and Verify, independently of our Verify, and checks the RFC 7797 header.
func TestJWSGoJose(t *testing.T) {
	cases := []struct {
		alg  keys.Algorithm
		hash crypto.Hash
		want jose.SignatureAlgorithm
	}{
		{keys.ECDSAP256, 0, jose.ES256},
		{keys.ECDSAP384, 0, jose.ES384},
		{keys.Ed25519, 0, jose.EdDSA},
		{keys.RSA2048, 0, jose.RS256},
		{keys.RSA3072, 0, jose.RS256},
		{keys.RSA2048, crypto.SHA512, jose.RS512},
		{keys.RSA2048PSS, 0, jose.PS256},
		{keys.RSA3072PSS, 0, jose.PS256},
		{keys.RSA2048PSS, crypto.SHA384, jose.PS384},
	}
	for _, c := range cases {
		for _, opaque := range []bool{false, true} {
			name := string(c.want) + "/" + string(c.alg) + "/memory"
			if opaque {
				name = string(c.want) + "/" + string(c.alg) + "/opaque"
			}
			t.Run(name, func(t *testing.T) {
				var s crypto.Signer = testKey(t, c.alg)
				if opaque {
					s = &hsmSigner{inner: s} // rejects PSSSaltLengthAuto as crypto11 does
				}
				res, err := Sign(api.FormatJWS, Key{Signer: s, Algorithm: c.alg, KeyID: "tenant/key/3"}, Input{Document: testDoc, Hash: c.hash}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				compact := string(res.Artifact)
				parts := strings.Split(compact, ".")
				if len(parts) != 3 || parts[1] != "" {
					t.Fatalf("artifact %q is not header..signature", compact)
				}
				obj, err := jose.ParseDetached(compact, testDoc, []jose.SignatureAlgorithm{c.want})
				if err != nil {
					t.Fatalf("go-jose ParseDetached: %v", err)
				}
				if _, err := obj.Verify(s.Public()); err != nil {
					t.Fatalf("go-jose Verify: %v", err)
				}
				h := obj.Signatures[0].Protected
				if h.Algorithm != string(c.want) || h.KeyID != "tenant/key/3" {
					t.Errorf("header alg %q kid %q, want %q %q", h.Algorithm, h.KeyID, c.want, "tenant/key/3")
				}
				if b64, ok := h.ExtraHeaders["b64"]; !ok || b64 != false {
					t.Errorf("header b64 = %v (present %v), want false", b64, ok)
				}
				if crit, _ := h.ExtraHeaders["crit"].([]any); len(crit) != 1 || crit[0] != "b64" {
					t.Errorf("header crit = %v, want [b64]", h.ExtraHeaders["crit"])
				}
				if c.alg.PSS() {
					hh := crypto.SHA256
					if c.hash != 0 {
						hh = c.hash
					}
					input := append([]byte(parts[0]+"."), testDoc...)
					if err := rsa.VerifyPSS(s.Public().(*rsa.PublicKey), hh, hashOf(hh, input), obj.Signatures[0].Signature,
						&rsa.PSSOptions{SaltLength: hh.Size(), Hash: hh}); err != nil {
						t.Errorf("PSS salt is not the hash length: %v", err)
					}
				}
				if err := Verify(api.FormatJWS, res.Artifact, Input{Document: testDoc, Hash: c.hash}, VerifyKey{Public: s.Public(), Algorithm: c.alg}); err != nil {
					t.Errorf("Verify: %v", err)
				}
			})
		}
	}
}

func TestJWSRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		alg  keys.Algorithm
		in   Input
		want error
	}{
		{"digest only", keys.ECDSAP256, Input{Digest: hashOf(crypto.SHA256, testDoc)}, ErrDigestOnly},
		{"ES256 with sha512", keys.ECDSAP256, Input{Document: testDoc, Hash: crypto.SHA512}, ErrUnsupported},
		{"EdDSA with sha256", keys.Ed25519, Input{Document: testDoc, Hash: crypto.SHA256}, ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testKey(t, tc.alg)
			_, err := Sign(api.FormatJWS, Key{Signer: s, Algorithm: tc.alg}, tc.in, time.Now())
			if !errors.Is(err, tc.want) {
				t.Errorf("Sign error %v, want %v", err, tc.want)
			}
			err = Verify(api.FormatJWS, []byte("e30..AA"), tc.in, VerifyKey{Public: s.Public(), Algorithm: tc.alg})
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify error %v, want %v", err, tc.want)
			}
		})
	}
}
