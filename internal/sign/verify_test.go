package sign

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
)

var formats = []api.Format{api.FormatCMS, api.FormatJWS, api.FormatRaw}

func signFor(t *testing.T, pki *testPKI, format api.Format, s crypto.Signer, alg keys.Algorithm, in Input) []byte {
	t.Helper()
	k := Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{pki.leaf(t, s.Public(), signingLeaf), pki.ca}, KeyID: "k1"}
	res, err := Sign(format, k, in, time.Now())
	if err != nil {
		t.Fatalf("Sign %s/%s: %v", format, alg, err)
	}
	return res.Artifact
}

// flipSignature changes one byte inside the signature value itself.
func flipSignature(t *testing.T, format api.Format, art []byte) []byte {
	t.Helper()
	out := bytes.Clone(art)
	switch format {
	case api.FormatJWS:
		parts := strings.Split(string(art), ".")
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		sig[len(sig)/2] ^= 0x01
		return []byte(parts[0] + ".." + base64.RawURLEncoding.EncodeToString(sig))
	case api.FormatCMS:
		out[len(out)-10] ^= 0x01 // the signature OCTET STRING ends the DER
	default:
		out[len(out)/2] ^= 0x01
	}
	return out
}

// TestVerifyTamper: every format and algorithm, the valid artifact verifies
// and each tampering yields the distinct error drift detection relies on.
func TestVerifyTamper(t *testing.T) {
	pki := newPKI(t)
	for _, format := range formats {
		for _, alg := range keys.Algorithms {
			t.Run(string(format)+"/"+string(alg), func(t *testing.T) {
				s := testKey(t, alg)
				art := signFor(t, pki, format, s, alg, Input{Document: testDoc})
				vk := VerifyKey{Public: s.Public(), Algorithm: alg}
				for _, tc := range []struct {
					name string
					art  []byte
					in   Input
					vk   VerifyKey
					want error
				}{
					{"valid", art, Input{Document: testDoc}, vk, nil},
					{"document changed", art, Input{Document: append(bytes.Clone(testDoc), '!')}, vk, ErrInvalidSignature},
					{"signature byte flipped", flipSignature(t, format, art), Input{Document: testDoc}, vk, ErrInvalidSignature},
					{"wrong key", art, Input{Document: testDoc}, VerifyKey{Public: otherKey(t, alg).Public(), Algorithm: alg}, ErrInvalidSignature},
					{"truncated", art[:len(art)/2], Input{Document: testDoc}, vk, map[api.Format]error{api.FormatCMS: ErrMalformed, api.FormatJWS: ErrInvalidSignature, api.FormatRaw: ErrInvalidSignature}[format]},
					{"empty", nil, Input{Document: testDoc}, vk, ErrMalformed},
					{"key not of the algorithm", art, Input{Document: testDoc}, VerifyKey{Public: testKey(t, otherAlg(alg)).Public(), Algorithm: alg}, ErrInput},
				} {
					err := Verify(format, tc.art, tc.in, tc.vk)
					if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
						t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
					}
					if tc.want != ErrAlgorithmMismatch && errors.Is(err, ErrAlgorithmMismatch) {
						t.Errorf("%s: reported as algorithm drift: %v", tc.name, err)
					}
				}
			})
		}
	}
}

func otherAlg(alg keys.Algorithm) keys.Algorithm {
	if alg == keys.ECDSAP256 {
		return keys.ECDSAP384
	}
	return keys.ECDSAP256
}

// TestVerifyAlgorithmDrift: genuine signatures made with another
// algorithm, digest or parameter are *AlgorithmMismatchError, not invalid.
func TestVerifyAlgorithmDrift(t *testing.T) {
	pki := newPKI(t)
	rsaKey := testKey(t, keys.RSA2048)
	p256 := testKey(t, keys.ECDSAP256)
	edKey := testKey(t, keys.Ed25519)
	type drift struct {
		name   string
		format api.Format
		art    []byte
		in     Input
		vk     VerifyKey
		field  string
	}
	cases := []drift{}
	for _, format := range formats {
		cases = append(cases,
			drift{"pkcs1v15 verified as pss", format, signFor(t, pki, format, rsaKey, keys.RSA2048, Input{Document: testDoc}),
				Input{Document: testDoc}, VerifyKey{Public: rsaKey.Public(), Algorithm: keys.RSA2048PSS}, "signature"},
			drift{"pss verified as pkcs1v15", format, signFor(t, pki, format, rsaKey, keys.RSA2048PSS, Input{Document: testDoc}),
				Input{Document: testDoc}, VerifyKey{Public: rsaKey.Public(), Algorithm: keys.RSA2048}, "signature"},
			drift{"sha512 where sha256 expected", format, signFor(t, pki, format, rsaKey, keys.RSA2048, Input{Document: testDoc, Hash: crypto.SHA512}),
				Input{Document: testDoc}, VerifyKey{Public: rsaKey.Public(), Algorithm: keys.RSA2048}, map[api.Format]string{api.FormatCMS: "digest", api.FormatJWS: "signature", api.FormatRaw: "digest"}[format]},
		)
	}
	cases = append(cases,
		drift{"ecdsa sha384 where sha256 expected", api.FormatCMS, signFor(t, pki, api.FormatCMS, p256, keys.ECDSAP256, Input{Document: testDoc, Hash: crypto.SHA384}),
			Input{Document: testDoc}, VerifyKey{Public: p256.Public(), Algorithm: keys.ECDSAP256}, "digest"},
		drift{"ecdsa sha384 where sha256 expected", api.FormatRaw, signFor(t, pki, api.FormatRaw, p256, keys.ECDSAP256, Input{Document: testDoc, Hash: crypto.SHA384}),
			Input{Document: testDoc}, VerifyKey{Public: p256.Public(), Algorithm: keys.ECDSAP256}, "digest"},
		drift{"pure ed25519 where ed25519ph expected", api.FormatRaw, ed25519.Sign(edKey.(ed25519.PrivateKey), testDoc),
			Input{Document: testDoc}, VerifyKey{Public: edKey.Public(), Algorithm: keys.Ed25519}, "signature"},
		drift{"sha1 default of a CMS library", api.FormatCMS, digitorusDefaultCMS(t, pki, p256),
			Input{Document: testDoc}, VerifyKey{Public: p256.Public(), Algorithm: keys.ECDSAP256}, "digest"},
		drift{"pss with maximum salt", api.FormatRaw, maxSaltPSS(t, rsaKey.(*rsa.PrivateKey)),
			Input{Document: testDoc}, VerifyKey{Public: rsaKey.Public(), Algorithm: keys.RSA2048PSS}, "pss-salt"},
		drift{"PS256 with go-jose's automatic salt", api.FormatJWS, autoSaltJWS(t, rsaKey),
			Input{Document: testDoc}, VerifyKey{Public: rsaKey.Public(), Algorithm: keys.RSA2048PSS}, "pss-salt"},
	)
	for _, c := range cases {
		t.Run(string(c.format)+"/"+c.name, func(t *testing.T) {
			err := Verify(c.format, c.art, c.in, c.vk)
			var am *AlgorithmMismatchError
			if !errors.As(err, &am) || !errors.Is(err, ErrAlgorithmMismatch) {
				t.Fatalf("Verify = %v, want *AlgorithmMismatchError", err)
			}
			if am.Field != c.field || am.Format != string(c.format) {
				t.Errorf("mismatch %s/%s (%v), want field %s", am.Format, am.Field, am, c.field)
			}
			if errors.Is(err, ErrInvalidSignature) {
				t.Errorf("drift also reported as invalid: %v", err)
			}
		})
	}
}

// TestVerifyDriftWithChangedDocument: a signature made with another digest
// over another document is invalid, not drift.
func TestVerifyDriftWithChangedDocument(t *testing.T) {
	pki := newPKI(t)
	s := testKey(t, keys.ECDSAP256)
	changed := append(bytes.Clone(testDoc), '!')
	// JWS has no ES256 with sha384, and its header names the algorithm.
	for _, format := range []api.Format{api.FormatCMS, api.FormatRaw} {
		t.Run(string(format), func(t *testing.T) {
			art := signFor(t, pki, format, s, keys.ECDSAP256, Input{Document: testDoc, Hash: crypto.SHA384})
			err := Verify(format, art, Input{Document: changed}, VerifyKey{Public: s.Public(), Algorithm: keys.ECDSAP256})
			if !errors.Is(err, ErrInvalidSignature) || errors.Is(err, ErrAlgorithmMismatch) {
				t.Errorf("Verify = %v, want ErrInvalidSignature only", err)
			}
		})
	}
}

// digitorusDefaultCMS is what a release that forgot SetDigestAlgorithm
// would emit: digitorus/pkcs7 with its SHA-1 default.
func digitorusDefaultCMS(t *testing.T, pki *testPKI, s crypto.Signer) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(testDoc)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSignerChain(pki.leaf(t, s.Public(), signingLeaf), s, []*x509.Certificate{pki.ca}, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func maxSaltPSS(t *testing.T, k *rsa.PrivateKey) []byte {
	t.Helper()
	sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, hashOf(crypto.SHA256, testDoc), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// autoSaltJWS signs PS256 the way go-jose's cryptosigner does without our
// salt wrapper (PSSSaltLengthAuto: maximum salt with an in-memory key).
func autoSaltJWS(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.PS256, Key: cryptosigner.Opaque(k)}, (&jose.SignerOptions{}).WithBase64(false))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(testDoc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.DetachedCompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// TestVerifyJWSConfusion: an HS256 token keyed with the public key bytes
// (the classic algorithm-confusion forgery) is invalid, not drift.
func TestVerifyJWSConfusion(t *testing.T) {
	s := testKey(t, keys.RSA2048)
	pubDER, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","b64":false,"crit":["b64"]}`))
	mac := hmac.New(crypto.SHA256.New, pubDER)
	mac.Write([]byte(hdr + "."))
	mac.Write(testDoc)
	art := []byte(hdr + ".." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)))
	err = Verify(api.FormatJWS, art, Input{Document: testDoc}, VerifyKey{Public: s.Public(), Algorithm: keys.RSA2048})
	if !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("Verify = %v, want ErrInvalidSignature", err)
	}
}

// TestVerifyCMSRoots: with Roots set the signer must chain to them.
func TestVerifyCMSRoots(t *testing.T) {
	pki, stranger := newPKI(t), newPKI(t)
	s := testKey(t, keys.ECDSAP256)
	art := signFor(t, pki, api.FormatCMS, s, keys.ECDSAP256, Input{Document: testDoc})
	for _, tc := range []struct {
		name string
		vk   VerifyKey
		want error
	}{
		{"trusted root", VerifyKey{Public: s.Public(), Algorithm: keys.ECDSAP256, Roots: pki.roots()}, nil},
		{"roots only, no key", VerifyKey{Algorithm: keys.ECDSAP256, Roots: pki.roots()}, nil},
		{"key from chain", VerifyKey{Algorithm: keys.ECDSAP256, Chain: []*x509.Certificate{pki.leaf(t, s.Public(), signingLeaf)}}, nil},
		{"other root", VerifyKey{Public: s.Public(), Algorithm: keys.ECDSAP256, Roots: stranger.roots()}, ErrUntrusted},
		{"no key, no roots", VerifyKey{Algorithm: keys.ECDSAP256}, ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(api.FormatCMS, art, Input{Document: testDoc}, tc.vk)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignInputErrors(t *testing.T) {
	pki := newPKI(t)
	p256 := testKey(t, keys.ECDSAP256)
	leaf := pki.leaf(t, p256.Public(), signingLeaf)
	good := Key{Signer: p256, Algorithm: keys.ECDSAP256, Chain: []*x509.Certificate{leaf}}
	for _, tc := range []struct {
		name   string
		format api.Format
		k      Key
		in     Input
		want   error
	}{
		{"both document and digest", api.FormatRaw, good, Input{Document: testDoc, Digest: make([]byte, 32)}, ErrInput},
		{"digest of the wrong length", api.FormatRaw, good, Input{Digest: make([]byte, 31)}, ErrInput},
		{"sha1", api.FormatRaw, good, Input{Document: testDoc, Hash: crypto.SHA1}, ErrUnsupported},
		{"key is not of the algorithm", api.FormatRaw, Key{Signer: p256, Algorithm: keys.RSA2048}, Input{Document: testDoc}, ErrInput},
		{"cms without chain", api.FormatCMS, Key{Signer: p256, Algorithm: keys.ECDSAP256}, Input{Document: testDoc}, ErrInput},
		{"cms leaf of another key", api.FormatCMS, Key{Signer: otherKey(t, keys.ECDSAP256), Algorithm: keys.ECDSAP256, Chain: []*x509.Certificate{leaf}}, Input{Document: testDoc}, ErrInput},
		{"cms ed25519 with sha256", api.FormatCMS, Key{Signer: testKey(t, keys.Ed25519), Algorithm: keys.Ed25519, Chain: []*x509.Certificate{pki.leaf(t, testKey(t, keys.Ed25519).Public(), signingLeaf)}}, Input{Document: testDoc, Hash: crypto.SHA256}, ErrUnsupported},
		{"raw ed25519ph with sha384", api.FormatRaw, Key{Signer: testKey(t, keys.Ed25519), Algorithm: keys.Ed25519}, Input{Document: testDoc, Hash: crypto.SHA384}, ErrUnsupported},
		{"unknown format", api.Format("pgp"), good, Input{Document: testDoc}, ErrUnsupported},
		{"unknown algorithm", api.FormatRaw, Key{Signer: p256, Algorithm: "dsa"}, Input{Document: testDoc}, ErrInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Sign(tc.format, tc.k, tc.in, time.Now())
			if !errors.Is(err, tc.want) {
				t.Errorf("Sign = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRawResult pins the OIDs the node stamps on raw signatures, and that
// raw Ed25519 is Ed25519ph over SHA-512 (verifiable with the standard
// library alone), so a digest-only request signs the same bytes.
func TestRawResult(t *testing.T) {
	want := map[keys.Algorithm]string{
		keys.ECDSAP256: "1.2.840.10045.4.3.2", keys.ECDSAP384: "1.2.840.10045.4.3.3",
		keys.RSA2048: "1.2.840.113549.1.1.11", keys.RSA3072: "1.2.840.113549.1.1.11",
		keys.RSA2048PSS: "1.2.840.113549.1.1.10", keys.RSA3072PSS: "1.2.840.113549.1.1.10",
		keys.Ed25519: "1.3.101.112",
	}
	for _, alg := range keys.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			s := testKey(t, alg)
			d := hashOf(alg.Hash(), testDoc)
			res, err := Sign(api.FormatRaw, Key{Signer: &hsmSigner{inner: s}, Algorithm: alg}, Input{Digest: d}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if res.AlgorithmOID != want[alg] || res.DigestOID != hashOID(alg.Hash()).String() {
				t.Errorf("OIDs %s %s, want %s %s", res.AlgorithmOID, res.DigestOID, want[alg], hashOID(alg.Hash()))
			}
			if alg == keys.Ed25519 {
				if err := ed25519.VerifyWithOptions(s.Public().(ed25519.PublicKey), d, res.Artifact, &ed25519.Options{Hash: crypto.SHA512}); err != nil {
					t.Errorf("not Ed25519ph over the SHA-512 digest: %v", err)
				}
			}
			if err := Verify(api.FormatRaw, res.Artifact, Input{Document: testDoc}, VerifyKey{Public: s.Public(), Algorithm: alg}); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestHashNames(t *testing.T) {
	for _, name := range []string{"sha256", "sha384", "sha512"} {
		h, err := HashByName(name)
		if err != nil || HashName(h) != name {
			t.Errorf("HashByName(%q) = %v, %v; HashName back = %q", name, h, err, HashName(h))
		}
	}
	if _, err := HashByName("sha1"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("HashByName(sha1) = %v, want ErrUnsupported", err)
	}
	if HashName(crypto.SHA1) != "" {
		t.Errorf("HashName(SHA1) = %q, want empty", HashName(crypto.SHA1))
	}
}
