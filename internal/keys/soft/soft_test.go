package soft

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/keys"
)

const testPass = "correct horse battery staple"

// fastScrypt keeps the table tests quick; TestDefaultKDFParams covers the
// production parameters.
var fastScrypt = WithScrypt(1<<10, 8, 1)

func newProvider(t *testing.T, dir, pass string) *Provider {
	t.Helper()
	p, err := New(dir, NewPassphrase([]byte(pass)), fastScrypt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// verify checks sig over msg with pub as the algorithm prescribes.
func verify(alg keys.Algorithm, pub crypto.PublicKey, msg, sig []byte) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			return errors.New("ed25519 signature invalid")
		}
		return nil
	case *ecdsa.PublicKey:
		d := digest(alg.Hash(), msg)
		if !ecdsa.VerifyASN1(k, d, sig) {
			return errors.New("ecdsa signature invalid")
		}
		return nil
	case *rsa.PublicKey:
		d := digest(alg.Hash(), msg)
		if alg.PSS() {
			// Salt must be exactly the hash length.
			return rsa.VerifyPSS(k, alg.Hash(), d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.VerifyPKCS1v15(k, alg.Hash(), d, sig)
	}
	return fmt.Errorf("unexpected key type %T", pub)
}

func digest(h crypto.Hash, msg []byte) []byte {
	switch h {
	case crypto.SHA384:
		s := sha512.Sum384(msg)
		return s[:]
	default:
		s := sha256.Sum256(msg)
		return s[:]
	}
}

func sign(s crypto.Signer, alg keys.Algorithm, msg []byte) ([]byte, error) {
	if alg == keys.Ed25519 {
		return s.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	var opts crypto.SignerOpts = alg.Hash()
	if alg.PSS() {
		// What go-jose's opaque signer asks for; the provider must use salt = hash length.
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: alg.Hash()}
	}
	return s.Sign(rand.Reader, digest(alg.Hash(), msg), opts)
}

func TestRoundTripEveryAlgorithm(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	gen := newProvider(t, dir, testPass)
	msg := []byte("invoice 42")
	for _, alg := range keys.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			uri, pub, err := gen.Generate(ctx, alg, "acme/contracts/v1")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(uri, "soft:acme-contracts-v1-") {
				t.Errorf("uri = %q", uri)
			}
			// A fresh provider (as after a restart) opens the file.
			s, err := newProvider(t, dir, testPass).Signer(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
				t.Fatal("opened signer has a different public key")
			}
			if _, isKey := s.(interface{ Seed() []byte }); isKey {
				t.Fatal("signer exposes private key material")
			}
			sig, err := sign(s, alg, msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := verify(alg, pub, msg, sig); err != nil {
				t.Fatal(err)
			}
			if err := verify(alg, pub, []byte("invoice 43"), sig); err == nil {
				t.Fatal("signature verified over a different message")
			}
		})
	}
}

func TestWrongPassphrase(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	uri, _, err := newProvider(t, dir, testPass).Generate(ctx, keys.ECDSAP256, "k")
	if err != nil {
		t.Fatal(err)
	}
	_, err = newProvider(t, dir, "tr0ub4dor&3").Signer(ctx, uri)
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("err = %v, want ErrWrongPassphrase", err)
	}
	if strings.Contains(err.Error(), "tr0ub4dor") || strings.Contains(err.Error(), testPass) {
		t.Errorf("error leaks a passphrase: %v", err)
	}
}

func TestTamperedHeaderDoesNotOpen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p := newProvider(t, dir, testPass)
	uri, _, err := p.Generate(ctx, keys.RSA2048, "k")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, strings.TrimPrefix(uri, "soft:"))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Relabel the key as PSS: the additional data no longer matches.
	b = bytes.Replace(b, []byte(`"alg": "rsa-2048"`), []byte(`"alg": "rsa-2048-pss"`), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Signer(ctx, uri); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("err = %v, want ErrWrongPassphrase for a tampered header", err)
	}
}

// TestFileHoldsNoPlaintext decrypts the envelope to learn the PKCS#8 DER and
// checks that neither it, its base64, nor the raw key scalar is in the file.
func TestFileHoldsNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p := newProvider(t, dir, testPass)
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ECDSAP256, keys.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			uri, _, err := p.Generate(ctx, alg, "k")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, strings.TrimPrefix(uri, "soft:"))
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
			}
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			env, err := parseEnvelope(file)
			if err != nil {
				t.Fatal(err)
			}
			pkcs8, err := env.open(NewPassphrase([]byte(testPass)))
			if err != nil {
				t.Fatal(err)
			}
			k, err := x509.ParsePKCS8PrivateKey(pkcs8)
			if err != nil {
				t.Fatal(err)
			}
			needles := map[string][]byte{
				"pkcs8 DER":    pkcs8,
				"pkcs8 base64": []byte(base64.StdEncoding.EncodeToString(pkcs8)),
				"pkcs8 hex":    fmt.Appendf(nil, "%x", pkcs8),
			}
			switch k := k.(type) {
			case ed25519.PrivateKey:
				needles["seed"] = k.Seed()
			case *ecdsa.PrivateKey:
				needles["scalar"] = k.D.Bytes()
			case *rsa.PrivateKey:
				needles["prime"] = k.Primes[0].Bytes()
			}
			for name, n := range needles {
				if bytes.Contains(file, n) {
					t.Errorf("key file contains the %s", name)
				}
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestDefaultKDFParams(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p, err := New(dir, NewPassphrase([]byte(testPass)))
	if err != nil {
		t.Fatal(err)
	}
	uri, _, err := p.Generate(ctx, keys.ECDSAP256, "k")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(uri, "soft:")))
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if env.Version != 1 || env.KDF.Name != "scrypt" || env.KDF.N != 1<<15 || env.KDF.R != 8 || env.KDF.P != 1 || len(env.KDF.Salt) != 32 || env.Cipher != "aes-256-gcm" {
		t.Errorf("envelope header = %+v", env.KDF)
	}
	if _, err := p.Signer(ctx, uri); err != nil {
		t.Fatal(err)
	}
}

func TestNeverOverwritten(t *testing.T) {
	dir := t.TempDir()
	if err := writeNew(dir, "a.key", []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := writeNew(dir, "a.key", []byte("second")); err == nil {
		t.Fatal("writeNew replaced an existing key file")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.key")); string(b) != "first" {
		t.Fatalf("key file content = %q", b)
	}
}

func TestDestroy(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	p := newProvider(t, dir, testPass)
	uri, _, err := p.Generate(ctx, keys.ECDSAP384, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Destroy(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Signer(ctx, uri); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Signer after Destroy: err = %v, want ErrNotFound", err)
	}
	if err := p.Destroy(ctx, uri); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
}

func TestInvalidURIs(t *testing.T) {
	p := newProvider(t, t.TempDir(), testPass)
	for _, uri := range []string{"soft:", "soft:../outside.key", "soft:/etc/passwd", "pkcs11:token=x", "x.key"} {
		t.Run(uri, func(t *testing.T) {
			if _, err := p.Signer(context.Background(), uri); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Signer(%q) err = %v, want an invalid-URI error", uri, err)
			}
		})
	}
}

func TestPassphraseRedacted(t *testing.T) {
	p := NewPassphrase([]byte(testPass))
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("opening", "pass", p)
	j, err := json.Marshal(struct{ P Passphrase }{p})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", p), "%+v": fmt.Sprintf("%+v", p), "%#v": fmt.Sprintf("%#v", p),
		"%s": fmt.Sprintf("%s", p), "%x": fmt.Sprintf("%x", p), "%q": fmt.Sprintf("%q", p),
		"struct %+v": fmt.Sprintf("%+v", struct{ P Passphrase }{p}),
		"slog":       logBuf.String(), "json": string(j),
	}
	for name, out := range outputs {
		if strings.Contains(out, "horse") || strings.Contains(out, fmt.Sprintf("%x", testPass)[:16]) {
			t.Errorf("%s leaks the passphrase: %s", name, out)
		}
	}
}

func TestPassphraseSources(t *testing.T) {
	t.Setenv("CS_TEST_PASS", testPass)
	p, err := PassphraseFromEnv("CS_TEST_PASS")
	if err != nil || string(p.secret) != testPass {
		t.Fatalf("PassphraseFromEnv: %v", err)
	}
	if _, err := PassphraseFromEnv("CS_TEST_PASS_UNSET"); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("unset env: err = %v, want ErrNoPassphrase", err)
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "pass")
	if err := os.WriteFile(f, []byte(testPass+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err = PassphraseFromFile(f)
	if err != nil || string(p.secret) != testPass {
		t.Fatalf("PassphraseFromFile: %v (got %d bytes)", err, len(p.secret))
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := PassphraseFromFile(empty); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("empty file: err = %v, want ErrNoPassphrase", err)
	}
	if _, err := New(dir, Passphrase{}); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("New without passphrase: err = %v", err)
	}
}
