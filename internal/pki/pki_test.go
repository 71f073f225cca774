package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"

	"github.com/countersign/countersign/internal/pki"
)

func newKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func requireTool(t *testing.T, name string) string {
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

// TestIssuedLeafPassesOpenSSLCMSVerify signs a detached CMS with an issued
// leaf and verifies it with openssl's default purpose check against the CA.
func TestIssuedLeafPassesOpenSSLCMSVerify(t *testing.T) {
	openssl := requireTool(t, "openssl")
	now := time.Now()
	tests := []struct {
		ca, leaf string
		digest   []int // pkcs7 digest OID
	}{
		{"p256", "p256", []int{2, 16, 840, 1, 101, 3, 4, 2, 1}},
		{"p384", "p384", []int{2, 16, 840, 1, 101, 3, 4, 2, 2}},
		{"rsa2048", "rsa2048", []int{2, 16, 840, 1, 101, 3, 4, 2, 1}},
		{"ed25519", "p256", []int{2, 16, 840, 1, 101, 3, 4, 2, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.ca+"-ca/"+tc.leaf+"-leaf", func(t *testing.T) {
			caKey, leafKey := newKey(t, tc.ca), newKey(t, tc.leaf)
			ca, err := pki.NewCA(caKey, "Countersign Test CA", now, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := pki.IssueSigningCert(ca, caKey, leafKey.Public(), "acme/contracts v1", now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) || len(leaf.SubjectKeyId) != 20 {
				t.Errorf("key ids: leaf AKID %x, CA SKID %x, leaf SKID %x", leaf.AuthorityKeyId, ca.SubjectKeyId, leaf.SubjectKeyId)
			}
			if leaf.SerialNumber.Cmp(ca.SerialNumber) == 0 || leaf.SerialNumber.Sign() <= 0 {
				t.Errorf("serials: leaf %v, CA %v", leaf.SerialNumber, ca.SerialNumber)
			}
			doc := []byte("contract text\n")
			sd, err := pkcs7.NewSignedData(doc)
			if err != nil {
				t.Fatal(err)
			}
			sd.SetDigestAlgorithm(tc.digest)
			if err := sd.AddSignerChain(leaf, leafKey, []*x509.Certificate{ca}, pkcs7.SignerInfoConfig{}); err != nil {
				t.Fatal(err)
			}
			sd.Detach()
			der, err := sd.Finish()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			write := func(name string, b []byte) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return p
			}
			sig, content := write("sig.der", der), write("doc", doc)
			caFile := write("ca.pem", []byte(pki.EncodeChainPEM([]*x509.Certificate{ca})))
			out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sig,
				"-content", content, "-CAfile", caFile, "-out", os.DevNull).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Verification successful") {
				t.Fatalf("openssl cms -verify: %v\n%s", err, out)
			}

			// The same signature must fail against an unrelated CA.
			other := newKey(t, "p256")
			otherCA, err := pki.NewCA(other, "Other CA", now, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			otherFile := write("other.pem", []byte(pki.EncodeChainPEM([]*x509.Certificate{otherCA})))
			out, err = exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", sig,
				"-content", content, "-CAfile", otherFile, "-out", os.DevNull).CombinedOutput()
			if err == nil {
				t.Fatalf("openssl accepted a signature against the wrong CA:\n%s", out)
			}
		})
	}
}

func TestLeafProperties(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	caKey, leafKey := newKey(t, "p256"), newKey(t, "p256")
	ca, err := pki.NewCA(caKey, "CA", now, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	leaf, err := pki.IssueSigningCert(ca, caKey, leafKey.Public(), "t/k v1", now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if !leaf.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("leaf NotAfter = %v, want clamped to CA NotAfter %v", leaf.NotAfter, ca.NotAfter)
	}
	found := false
	for _, o := range leaf.UnknownExtKeyUsage {
		if o.Equal(pki.OIDDocumentSigning) {
			found = true
		}
	}
	if !found {
		t.Errorf("leaf lacks id-kp-documentSigning: %v", leaf.UnknownExtKeyUsage)
	}
	if err := pki.VerifyChainOrder([]*x509.Certificate{leaf, ca}); err != nil {
		t.Error(err)
	}
	if err := pki.VerifyChainOrder([]*x509.Certificate{ca, leaf}); err == nil {
		t.Error("VerifyChainOrder accepted a reversed chain")
	}
	// A signer that does not match the CA certificate is refused.
	if _, err := pki.IssueSigningCert(ca, leafKey, leafKey.Public(), "x", now, time.Hour); err == nil {
		t.Error("IssueSigningCert accepted a signer that is not the CA's key")
	}
	if _, err := pki.IssueSigningCert(leaf, leafKey, caKey.Public(), "x", now, time.Hour); err == nil {
		t.Error("IssueSigningCert accepted a non-CA issuer")
	}
}

func TestPEMRoundTrip(t *testing.T) {
	now := time.Now()
	caKey, leafKey := newKey(t, "rsa2048"), newKey(t, "ed25519")
	ca, err := pki.NewCA(caKey, "CA", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.IssueSigningCert(ca, caKey, leafKey.Public(), "leaf", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseChainPEM(pki.EncodeChainPEM([]*x509.Certificate{leaf, ca}))
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[0].Equal(leaf) || !chain[1].Equal(ca) {
		t.Fatalf("chain round trip: got %d certs", len(chain))
	}
	if _, err := pki.ParseChainPEM("not pem"); err == nil {
		t.Error("ParseChainPEM accepted text without PEM")
	}
	for _, k := range []crypto.Signer{caKey, leafKey, newKey(t, "p384")} {
		p, err := pki.PublicKeyPEM(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		got, err := pki.ParsePublicKeyPEM(p)
		if err != nil {
			t.Fatal(err)
		}
		if !pki.SamePublicKey(got, k.Public()) {
			t.Errorf("public key round trip changed the key (%T)", k)
		}
	}
}

// TestFingerprint compares with `openssl pkey -pubin -outform DER | sha256sum`
// recorded in testdata.
func TestFingerprint(t *testing.T) {
	pemBytes, err := os.ReadFile("testdata/p256.pub.pem")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/p256.pub.sha256")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pki.ParsePublicKeyPEM(string(pemBytes))
	if err != nil {
		t.Fatal(err)
	}
	if got := pki.Fingerprint(pub); got != strings.TrimSpace(string(want)) {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
}
