package sign

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
)

var testDoc = []byte("Countersign test document.\nLine two, no trailing newline conversion please.\r\n")

type cmsCase struct {
	alg  keys.Algorithm
	hash crypto.Hash // 0: the algorithm's default
}

func (c cmsCase) name() string {
	if c.hash == 0 {
		return string(c.alg)
	}
	return string(c.alg) + "/" + HashName(c.hash)
}

// cmsCases is every algorithm with its default digest, plus non-default
// digests to show the digest is the one asked for.
var cmsCases = []cmsCase{
	{alg: keys.ECDSAP256}, {alg: keys.ECDSAP384}, {alg: keys.RSA2048}, {alg: keys.RSA3072},
	{alg: keys.RSA2048PSS}, {alg: keys.RSA3072PSS}, {alg: keys.Ed25519},
	{alg: keys.ECDSAP256, hash: crypto.SHA512}, {alg: keys.RSA2048, hash: crypto.SHA384}, {alg: keys.RSA2048PSS, hash: crypto.SHA512},
}

// TestCMSOpenSSL signs with in-memory keys and with an opaque HSM-like
// signer, then checks the artifact with openssl cms -verify (or GnuTLS
// certtool for Ed25519, which openssl 3.0 cannot verify), with our Verify,
// and checks the digest algorithm openssl reads.
func TestCMSOpenSSL(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	certtool := needTool(t, "certtool", "gnutls-bin")
	pki := newPKI(t)
	docPath := filepath.Join(pki.dir, "doc")
	if err := os.WriteFile(docPath, testDoc, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmsCases {
		for _, opaque := range []bool{false, true} {
			name := c.name() + "/memory"
			if opaque {
				name = c.name() + "/opaque"
			}
			t.Run(name, func(t *testing.T) {
				var s crypto.Signer = testKey(t, c.alg)
				if opaque {
					s = &hsmSigner{inner: s}
				}
				leaf := pki.leaf(t, s.Public(), signingLeaf)
				now := time.Now()
				res, err := Sign(api.FormatCMS, Key{Signer: s, Algorithm: c.alg, Chain: []*x509.Certificate{leaf, pki.ca}}, Input{Document: testDoc, Hash: c.hash}, now)
				if err != nil {
					t.Fatal(err)
				}
				wantHash := c.hash
				if wantHash == 0 {
					wantHash = c.alg.Hash()
				}
				if res.Hash != wantHash || res.DigestOID != hashOID(wantHash).String() || !bytes.Equal(res.Digest, hashOf(wantHash, testDoc)) {
					t.Errorf("result hash %v oid %s, want %v %s with the document digest", res.Hash, res.DigestOID, wantHash, hashOID(wantHash))
				}
				sigPath := filepath.Join(t.TempDir(), "sig.der")
				if err := os.WriteFile(sigPath, res.Artifact, 0o600); err != nil {
					t.Fatal(err)
				}
				if c.alg == keys.Ed25519 {
					out, err := exec.Command(certtool, "--p7-verify", "--load-ca-certificate", filepath.Join(pki.dir, "ca.pem"),
						"--load-data", docPath, "--infile", sigPath, "--inder").CombinedOutput()
					if err != nil {
						t.Fatalf("certtool --p7-verify: %v\n%s", err, out)
					}
				} else {
					out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
						"-content", docPath, "-CAfile", filepath.Join(pki.dir, "ca.pem"), "-out", os.DevNull).CombinedOutput()
					if err != nil {
						t.Fatalf("openssl cms -verify: %v\n%s", err, out)
					}
				}
				out, err := exec.Command(openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", sigPath).CombinedOutput()
				if err != nil {
					t.Fatalf("openssl cms -print: %v\n%s", err, out)
				}
				digestAlgs := regexp.MustCompile(`digestAlgorithm:\s*\n\s*algorithm: (\S+)`).FindAllStringSubmatch(string(out), -1)
				if len(digestAlgs) == 0 {
					t.Fatalf("openssl printed no digestAlgorithm:\n%s", out)
				}
				for _, m := range digestAlgs {
					if m[1] != HashName(wantHash) {
						t.Errorf("openssl reads digest algorithm %s, want %s", m[1], HashName(wantHash))
					}
				}
				if strings.Contains(string(out), "sha1") {
					t.Errorf("artifact mentions sha1:\n%s", out)
				}
				if opaque && s.(*hsmSigner).calls != 1 {
					t.Errorf("signer called %d times, want 1", s.(*hsmSigner).calls)
				}
				err = Verify(api.FormatCMS, res.Artifact, Input{Document: testDoc, Hash: c.hash}, VerifyKey{Public: s.Public(), Algorithm: c.alg, Roots: pki.roots()})
				if err != nil {
					t.Errorf("Verify: %v", err)
				}
			})
		}
	}
}

// TestCMSGnuTLSAll checks every algorithm with a second, independent CMS
// implementation (GnuTLS), including RSA-PSS.
func TestCMSGnuTLSAll(t *testing.T) {
	certtool := needTool(t, "certtool", "gnutls-bin")
	pki := newPKI(t)
	docPath := filepath.Join(pki.dir, "doc")
	if err := os.WriteFile(docPath, testDoc, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, alg := range keys.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			s := testKey(t, alg)
			leaf := pki.leaf(t, s.Public(), signingLeaf)
			res, err := Sign(api.FormatCMS, Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{leaf, pki.ca}}, Input{Document: testDoc}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(t.TempDir(), "sig.der")
			if err := os.WriteFile(sigPath, res.Artifact, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(certtool, "--p7-verify", "--load-ca-certificate", filepath.Join(pki.dir, "ca.pem"),
				"--load-data", docPath, "--infile", sigPath, "--inder").CombinedOutput()
			if err != nil {
				t.Fatalf("certtool --p7-verify: %v\n%s", err, out)
			}
		})
	}
}

// TestCMSLeafPurpose documents which leaf certificates openssl's default
// purpose check (smimesign) accepts: the internal CA must issue signing
// leaves with keyUsage digitalSignature and either no extKeyUsage or one
// that includes emailProtection.
func TestCMSLeafPurpose(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	pki := newPKI(t)
	docPath := filepath.Join(pki.dir, "doc")
	if err := os.WriteFile(docPath, testDoc, 0o600); err != nil {
		t.Fatal(err)
	}
	s := testKey(t, keys.ECDSAP256)
	for _, tc := range []struct {
		name string
		prof leafProfile
		ok   bool
	}{
		{"digitalSignature+emailProtection", signingLeaf, true},
		{"digitalSignature, no EKU", leafProfile{keyUsage: x509.KeyUsageDigitalSignature}, true},
		{"nonRepudiation only", leafProfile{keyUsage: x509.KeyUsageContentCommitment}, true},
		{"EKU codeSigning only", leafProfile{keyUsage: x509.KeyUsageDigitalSignature, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}, false},
		{"keyUsage keyAgreement only", leafProfile{keyUsage: x509.KeyUsageKeyAgreement}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := pki.leaf(t, s.Public(), tc.prof)
			res, err := Sign(api.FormatCMS, Key{Signer: s, Algorithm: keys.ECDSAP256, Chain: []*x509.Certificate{leaf, pki.ca}}, Input{Document: testDoc}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(t.TempDir(), "sig.der")
			if err := os.WriteFile(sigPath, res.Artifact, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", docPath, "-CAfile", filepath.Join(pki.dir, "ca.pem"), "-out", os.DevNull).CombinedOutput()
			if got := err == nil; got != tc.ok {
				t.Errorf("openssl accepted = %v, want %v\n%s", got, tc.ok, out)
			}
		})
	}
}

// TestCMSDigitorusCrossCheck parses and verifies our output with
// digitorus/pkcs7, an independent implementation (it has no RSA-PSS).
func TestCMSDigitorusCrossCheck(t *testing.T) {
	pki := newPKI(t)
	for _, alg := range keys.Algorithms {
		if alg.PSS() {
			continue
		}
		t.Run(string(alg), func(t *testing.T) {
			s := testKey(t, alg)
			leaf := pki.leaf(t, s.Public(), signingLeaf)
			res, err := Sign(api.FormatCMS, Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{leaf, pki.ca}}, Input{Document: testDoc}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			p7, err := pkcs7.Parse(res.Artifact)
			if err != nil {
				t.Fatal(err)
			}
			p7.Content = testDoc
			if err := p7.VerifyWithChain(pki.roots()); err != nil {
				t.Errorf("digitorus verify: %v", err)
			}
			if got := p7.Signers[0].DigestAlgorithm.Algorithm; !got.Equal(hashOID(alg.Hash())) {
				t.Errorf("digest algorithm %s, want %s", got, hashOID(alg.Hash()))
			}
		})
	}
}

// TestCMSDigestOnly signs a digest and checks the artifact is the same
// structure a document signature is: it verifies against the document.
func TestCMSDigestOnly(t *testing.T) {
	pki := newPKI(t)
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, alg := range keys.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			s := testKey(t, alg)
			k := Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{pki.leaf(t, s.Public(), signingLeaf), pki.ca}}
			d := hashOf(alg.Hash(), testDoc)
			res, err := Sign(api.FormatCMS, k, Input{Digest: d}, at)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Digest, d) {
				t.Errorf("result digest differs from the input digest")
			}
			vk := VerifyKey{Public: s.Public(), Algorithm: alg}
			if err := Verify(api.FormatCMS, res.Artifact, Input{Document: testDoc}, vk); err != nil {
				t.Errorf("verify against the document: %v", err)
			}
			if err := Verify(api.FormatCMS, res.Artifact, Input{Digest: d}, vk); err != nil {
				t.Errorf("verify against the digest: %v", err)
			}
			sgn, err := parseCMS(res.Artifact)
			if err != nil {
				t.Fatal(err)
			}
			if !sgn.sigTime.Equal(at) {
				t.Errorf("signing-time %v, want the injected %v", sgn.sigTime, at)
			}
		})
	}
}
