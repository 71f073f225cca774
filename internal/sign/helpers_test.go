package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
)

var update = flag.Bool("update", false, "regenerate testdata/keys and the fuzz seed corpora")

// keyFile maps an algorithm to its fixed test key in testdata/keys (RSA PSS
// and PKCS#1 v1.5 share a key, as they do in production).
var keyFile = map[keys.Algorithm]string{
	keys.Ed25519: "ed25519", keys.ECDSAP256: "p256", keys.ECDSAP384: "p384",
	keys.RSA2048: "rsa2048", keys.RSA2048PSS: "rsa2048", keys.RSA3072: "rsa3072", keys.RSA3072PSS: "rsa3072",
}

// testKey loads the fixed in-memory key of alg. Keys live in testdata so
// that tests do not spend seconds generating RSA keys on a shared machine.
func testKey(tb testing.TB, alg keys.Algorithm) crypto.Signer {
	tb.Helper()
	return loadKey(tb, keyFile[alg])
}

// otherKey is a second fixed key of alg, for wrong-key tests.
func otherKey(tb testing.TB, alg keys.Algorithm) crypto.Signer {
	tb.Helper()
	return loadKey(tb, keyFile[alg]+"-other")
}

func loadKey(tb testing.TB, name string) crypto.Signer {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "keys", name+".pem"))
	if err != nil {
		tb.Fatalf("read test key (regenerate with go test -run TestFixtures -update): %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("test key %s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatalf("test key %s: %v", name, err)
	}
	return k.(crypto.Signer)
}

// hsmSigner hides the concrete key type, as a PKCS#11 signer does: format
// code only gets Public and Sign.
type hsmSigner struct {
	inner crypto.Signer
	calls int
}

func (h *hsmSigner) Public() crypto.PublicKey { return h.inner.Public() }

func (h *hsmSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	h.calls++
	if o, ok := opts.(*rsa.PSSOptions); ok && o.SaltLength != rsa.PSSSaltLengthEqualsHash {
		// crypto11 refuses PSSSaltLengthAuto ("unsupported RSA option value").
		return nil, errUnsupportedOption
	}
	return h.inner.Sign(r, digest, opts)
}

var errUnsupportedOption = &hsmError{"unsupported RSA option value"}

type hsmError struct{ msg string }

func (e *hsmError) Error() string { return "hsm: " + e.msg }

// testPKI is a CA and a leaf per algorithm, made with crypto/x509.
type testPKI struct {
	ca    *x509.Certificate
	caKey crypto.Signer
	dir   string
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Countersign Test CA", Organization: []string{"Countersign"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, caKey: caKey, dir: t.TempDir()}
	writePEM(t, filepath.Join(p.dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	return p
}

// leafProfile is the signing-certificate profile that openssl cms -verify
// accepts with its default purpose (smimesign): keyUsage digitalSignature
// (and nonRepudiation), extKeyUsage emailProtection or no EKU at all.
type leafProfile struct {
	keyUsage x509.KeyUsage
	eku      []x509.ExtKeyUsage
}

var signingLeaf = leafProfile{
	keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
}

func (p *testPKI) leaf(t testing.TB, pub crypto.PublicKey, prof leafProfile) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "countersign test signer", Organization: []string{"Countersign"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     prof.keyUsage,
		ExtKeyUsage:  prof.eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, pub, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *testPKI) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// needTool returns the path of an external tool; it fails under CI=true
// when the tool is missing and skips otherwise.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (install Debian package %s): %v", name, pkg, err)
		}
		t.Skipf("%s not found (install Debian package %s); skipping outside CI", name, pkg)
	}
	return p
}

// TestFixtures regenerates testdata/keys with -update; without it, it checks
// that every key loads and matches its algorithm.
func TestFixtures(t *testing.T) {
	if *update {
		gen := map[string]func() (crypto.Signer, error){
			"ed25519": func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err },
			"p256":    func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
			"p384":    func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) },
			"rsa2048": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
			"rsa3072": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 3072) },
		}
		if err := os.MkdirAll(filepath.Join("testdata", "keys"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, g := range gen {
			for _, suffix := range []string{"", "-other"} {
				k, err := g()
				if err != nil {
					t.Fatal(err)
				}
				der, err := x509.MarshalPKCS8PrivateKey(k)
				if err != nil {
					t.Fatal(err)
				}
				writePEM(t, filepath.Join("testdata", "keys", name+suffix+".pem"), "PRIVATE KEY", der)
			}
		}
		writeFuzzCorpora(t)
	}
	for _, alg := range keys.Algorithms {
		for _, k := range []crypto.Signer{testKey(t, alg), otherKey(t, alg)} {
			if err := checkKey(k.Public(), alg); err != nil {
				t.Errorf("testdata key for %s: %v", alg, err)
			}
		}
		if testKey(t, alg).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(otherKey(t, alg).Public()) {
			t.Errorf("testdata keys for %s are the same key", alg)
		}
	}
}
