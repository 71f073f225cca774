//go:build cgo

package pkcs11_test

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
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/pkcs11"
	"github.com/countersign/countersign/internal/keys/pkcs11/pkcs11test"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

func open(t *testing.T, cfg pkcs11.Config) *pkcs11.Provider {
	t.Helper()
	p, err := pkcs11.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func digest(h crypto.Hash, msg []byte) []byte {
	if h == crypto.SHA384 {
		s := sha512.Sum384(msg)
		return s[:]
	}
	s := sha256.Sum256(msg)
	return s[:]
}

// signAndVerify signs as callers do (PSS with Auto, as go-jose asks) and
// verifies independently; PSS must use salt = hash length.
func signAndVerify(t *testing.T, s crypto.Signer, alg keys.Algorithm) {
	t.Helper()
	msg := []byte("pkcs11 document")
	d := digest(alg.Hash(), msg)
	if alg == keys.Ed25519 {
		signAndVerifyEd25519(t, s, msg)
		return
	}
	var opts crypto.SignerOpts = alg.Hash()
	if alg.PSS() {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: alg.Hash()}
	}
	sig, err := s.Sign(rand.Reader, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	switch k := s.Public().(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d, sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		if alg.PSS() {
			err = rsa.VerifyPSS(k, alg.Hash(), d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(k, alg.Hash(), d, sig)
		}
		if err != nil {
			t.Fatalf("RSA signature does not verify: %v", err)
		}
	default:
		t.Fatalf("unexpected key type %T", k)
	}
}

// signAndVerifyEd25519 signs msg as the jws and cms formats do (pure
// Ed25519) and checks the raw format's Ed25519ph either verifies or is
// refused as unsupported: SoftHSM2 2.6 ignores CK_EDDSA_PARAMS.
func signAndVerifyEd25519(t *testing.T, s crypto.Signer, msg []byte) {
	t.Helper()
	pub := s.Public().(ed25519.PublicKey)
	sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		t.Fatal("Ed25519 signature does not verify")
	}
	if sig2, err := s.Sign(rand.Reader, msg, &ed25519.Options{}); err != nil || !bytes.Equal(sig, sig2) {
		t.Fatalf("pure Ed25519 through *ed25519.Options: %x, %v; want the same deterministic signature", sig2, err)
	}
	d := sha512.Sum512(msg)
	phSig, err := s.Sign(rand.Reader, d[:], &ed25519.Options{Hash: crypto.SHA512})
	switch {
	case err == nil:
		if ed25519.VerifyWithOptions(pub, d[:], phSig, &ed25519.Options{Hash: crypto.SHA512}) != nil {
			t.Fatal("Ed25519ph signature does not verify")
		}
	case errors.Is(err, keys.ErrUnsupported) && strings.Contains(err.Error(), "Ed25519ph"):
		t.Logf("Ed25519ph: %v", err)
	default:
		t.Fatalf("Ed25519ph: %v", err)
	}
	for _, opts := range []crypto.SignerOpts{crypto.SHA256, &ed25519.Options{Context: "ctx"}, &ed25519.Options{Hash: crypto.SHA256}} {
		if _, err := s.Sign(rand.Reader, msg, opts); !errors.Is(err, keys.ErrUnsupported) {
			t.Errorf("Sign with %#v: err = %v, want ErrUnsupported", opts, err)
		}
	}
}

func TestSignVerifyEveryAlgorithm(t *testing.T) {
	cfg := pkcs11test.NewToken(t)
	p := open(t, cfg)
	ctx := context.Background()
	for _, alg := range keys.Algorithms {
		t.Run(string(alg), func(t *testing.T) {
			uri, pub, err := p.Generate(ctx, alg, "acme/contracts/v1")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(uri, "pkcs11:token="+cfg.TokenLabel+";id=%") || !strings.Contains(uri, ";object=acme%2Fcontracts%2Fv1") {
				t.Errorf("uri = %s", uri)
			}
			s, err := p.Signer(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(s.Public()) {
				t.Fatal("found key differs from generated key")
			}
			signAndVerify(t, s, alg)
			if err := p.Destroy(ctx, uri); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Signer(ctx, uri); !errors.Is(err, pkcs11.ErrNotFound) {
				t.Fatalf("Signer after Destroy: err = %v, want ErrNotFound", err)
			}
			if err := p.Destroy(ctx, uri); err != nil {
				t.Fatalf("second Destroy: %v", err)
			}
		})
	}
	if _, err := p.Signer(ctx, "pkcs11:token=other;id=%01"); err == nil {
		t.Error("Signer accepted a key on another token")
	}
}

func TestWrongPIN(t *testing.T) {
	tok := pkcs11test.New(t)
	cfg := tok.Config
	cfg.PIN = pkcs11.NewPIN("not-the-pin-4711")
	p, err := pkcs11.New(cfg)
	if err == nil {
		p.Close()
		t.Fatal("New with a wrong PIN succeeded")
	}
	var pe *pkcs11.Error
	if !errors.As(err, &pe) || pe.Code != 0xA0 || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		t.Fatalf("err = %v, want *pkcs11.Error with CKR_PIN_INCORRECT", err)
	}
	if strings.Contains(err.Error(), "4711") || strings.Contains(err.Error(), tok.PIN) {
		t.Errorf("error leaks a PIN: %v", err)
	}
}

// TestRecoveryAfterTokenLoss removes the token under a running provider,
// checks the failure is surfaced, then re-initialises the token and checks
// the same provider recovers without being rebuilt: for crypto11's keys
// and for the raw PKCS#11 path Ed25519 keys take, each time checking both
// paths work on the re-configured module.
func TestRecoveryAfterTokenLoss(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			tok := pkcs11test.New(t)
			p := open(t, tok.Config)
			ctx := context.Background()
			uri, _, err := p.Generate(ctx, alg, "before")
			if err != nil {
				t.Fatal(err)
			}
			s, err := p.Signer(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			signAndVerify(t, s, alg)

			tok.Remove(t)
			msg, opts := digest(crypto.SHA256, []byte("x")), crypto.SignerOpts(crypto.SHA256)
			if alg == keys.Ed25519 {
				opts = crypto.Hash(0)
			}
			if _, err := s.Sign(rand.Reader, msg, opts); err == nil {
				t.Fatal("signing succeeded after the token was removed")
			} else {
				var pe *pkcs11.Error
				if !errors.As(err, &pe) || pe.Name == "" {
					t.Fatalf("err = %v, want a *pkcs11.Error naming the CKR_ code", err)
				}
				t.Logf("after token removal: %v", err)
			}

			tok.Reinit(t)
			for _, alg := range []keys.Algorithm{alg, keys.Ed25519, keys.ECDSAP256} {
				uri2, _, err := p.Generate(ctx, alg, "after")
				if err != nil {
					t.Fatalf("Generate %s after re-init: %v", alg, err)
				}
				s2, err := p.Signer(ctx, uri2)
				if err != nil {
					t.Fatal(err)
				}
				signAndVerify(t, s2, alg)
				if err := p.Destroy(ctx, uri2); err != nil {
					t.Fatal(err)
				}
				if _, err := p.Signer(ctx, uri2); !errors.Is(err, pkcs11.ErrNotFound) {
					t.Fatalf("%s key after Destroy: err = %v, want ErrNotFound", alg, err)
				}
			}
			if _, err := p.Signer(ctx, uri); !errors.Is(err, pkcs11.ErrNotFound) {
				t.Fatalf("old key after re-init: err = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestManagerOnSoftHSM runs the key lifecycle with the CA and the keys on
// the token, and checks no audit entry holds the PIN.
func TestManagerOnSoftHSM(t *testing.T) {
	tok := pkcs11test.New(t)
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cs.db"), store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := keys.NewRegistry()
	if err := reg.Register(pkcs11.Scheme, open(t, tok.Config)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, ca, err := keys.CreateCA(ctx, reg, pkcs11.Scheme, keys.ECDSAP384, "HSM CA", now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := keys.NewManager(keys.ManagerConfig{Store: st, Registry: reg, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := mgr.Create(ctx, "acme", "hsm", keys.RSA2048PSS, pkcs11.Scheme, "alice")
	if err != nil {
		t.Fatal(err)
	}
	s, err := mgr.SignerFor(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, s, keys.RSA2048PSS)
	if _, err := mgr.SetState(ctx, "acme", "hsm", 1, store.KeyDestroyed, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Signer(ctx, kv.ProviderURI); !errors.Is(err, pkcs11.ErrNotFound) {
		t.Fatalf("key still on the token after destroy: %v", err)
	}
	n, err := st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.AuditEvents(ctx, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
		if bytes.Contains(ev.Entry, []byte(tok.PIN)) || bytes.Contains(ev.Entry, []byte(tok.SOPIN)) {
			t.Errorf("audit entry holds a PIN: %s", ev.Entry)
		}
	}
	if got := strings.Join(types, ","); got != "key.created,key.state_changed,key.material_destroyed" {
		t.Errorf("events = %s", got)
	}
}

// TestEd25519AndECDSAConcurrently signs with both paths from many
// goroutines at once: the raw sessions are pooled, never shared by two
// operations (a PKCS#11 session runs one operation at a time).
func TestEd25519AndECDSAConcurrently(t *testing.T) {
	cfg := pkcs11test.NewToken(t)
	cfg.MaxSessions = 3
	p := open(t, cfg)
	ctx := context.Background()
	var signers []crypto.Signer
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ECDSAP256} {
		uri, _, err := p.Generate(ctx, alg, string(alg))
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.Signer(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	errs := make(chan error, 16)
	for g := range 16 {
		go func() {
			s := signers[g%2]
			for i := range 10 {
				msg := []byte{byte(g), byte(i)}
				if ed, ok := s.Public().(ed25519.PublicKey); ok {
					sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
					if err == nil && !ed25519.Verify(ed, msg, sig) {
						err = errors.New("Ed25519 signature does not verify")
					}
					if err != nil {
						errs <- err
						return
					}
					continue
				}
				d := digest(crypto.SHA256, msg)
				sig, err := s.Sign(rand.Reader, d, crypto.SHA256)
				if err == nil && !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d, sig) {
					err = errors.New("ECDSA signature does not verify")
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
