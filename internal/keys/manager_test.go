package keys_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

const passphrase = "manager-test passphrase 7f3a"

type world struct {
	st      *sqlite.Store
	reg     *keys.Registry
	mgr     *keys.Manager
	ca      *keys.CA
	keyDir  string
	now     time.Time
	softPrv *soft.Provider
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cs.db"), store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyDir := filepath.Join(dir, "keys")
	sp, err := soft.New(keyDir, soft.NewPassphrase([]byte(passphrase)), soft.WithScrypt(1<<10, 8, 1))
	if err != nil {
		t.Fatal(err)
	}
	reg := keys.NewRegistry()
	if err := reg.Register(soft.Scheme, sp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	_, ca, err := keys.CreateCA(ctx, reg, soft.Scheme, keys.ECDSAP256, "Countersign Test CA", now, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := keys.NewManager(keys.ManagerConfig{Store: st, Registry: reg, CA: ca, Release: "v1", Instance: "test-1",
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return &world{st: st, reg: reg, mgr: mgr, ca: ca, keyDir: keyDir, now: now, softPrv: sp}
}

func (w *world) events(t *testing.T) []store.AuditEvent {
	t.Helper()
	ctx := context.Background()
	n, err := w.st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := w.st.AuditEvents(ctx, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

type entry struct {
	Type    string         `json:"type"`
	Actor   string         `json:"actor"`
	Tenant  string         `json:"tenant"`
	Subject string         `json:"subject"`
	Details map[string]any `json:"details"`
}

func decode(t *testing.T, ev store.AuditEvent) entry {
	t.Helper()
	var e entry
	if err := json.Unmarshal(ev.Entry, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func signVerify(t *testing.T, s crypto.Signer, alg keys.Algorithm, chain []*x509.Certificate) {
	t.Helper()
	msg := []byte("document")
	var sig []byte
	var err error
	if alg == keys.Ed25519 {
		sig, err = s.Sign(rand.Reader, msg, crypto.Hash(0))
	} else {
		d := sha256.Sum256(msg)
		sig, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	sa := x509.ECDSAWithSHA256
	if alg == keys.Ed25519 {
		sa = x509.PureEd25519
	} else if alg == keys.RSA2048 {
		sa = x509.SHA256WithRSA
	}
	if err := chain[0].CheckSignature(sa, msg, sig); err != nil {
		t.Fatalf("signature does not verify against the leaf certificate: %v", err)
	}
}

func TestManagerLifecycle(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	roots := x509.NewCertPool()
	roots.AddCert(w.ca.Cert)
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.Ed25519, keys.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			name := "contracts-" + string(alg)
			kv, err := w.mgr.Create(ctx, "acme", name, alg, soft.Scheme, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if kv.Version != 1 || kv.State != store.KeyEnabled || !strings.HasPrefix(kv.ProviderURI, "soft:") {
				t.Fatalf("created %+v", kv)
			}
			pub, chain, err := w.mgr.VerifyMaterial(kv)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 2 || !chain[1].Equal(w.ca.Cert) {
				t.Fatalf("chain has %d certificates", len(chain))
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, CurrentTime: w.now,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
				t.Fatalf("leaf does not chain to the CA: %v", err)
			}
			s, err := w.mgr.SignerFor(ctx, kv)
			if err != nil {
				t.Fatal(err)
			}
			if !pki.SamePublicKey(pub, s.Public()) {
				t.Fatal("signer key differs from the recorded key")
			}
			signVerify(t, s, alg, chain)

			if _, err := w.mgr.Create(ctx, "acme", name, alg, soft.Scheme, "alice"); !errors.Is(err, store.ErrExists) {
				t.Fatalf("second Create: err = %v, want store.ErrExists", err)
			}
			kv2, err := w.mgr.Rotate(ctx, "acme", name, "bob")
			if err != nil {
				t.Fatal(err)
			}
			if kv2.Version != 2 || kv2.Algorithm != string(alg) || kv2.ProviderURI == kv.ProviderURI {
				t.Fatalf("rotated %+v", kv2)
			}
			if active, err := w.mgr.Active(ctx, "acme", name); err != nil || active.Version != 2 {
				t.Fatalf("Active = v%d, %v; want v2", active.Version, err)
			}
			disabled, err := w.mgr.SetState(ctx, "acme", name, 2, store.KeyDisabled, "bob")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.mgr.SignerFor(ctx, disabled); !errors.Is(err, keys.ErrNotEnabled) {
				t.Fatalf("SignerFor disabled: err = %v", err)
			}
			if active, err := w.mgr.Active(ctx, "acme", name); err != nil || active.Version != 1 {
				t.Fatalf("Active after disabling v2 = v%d, %v; want v1", active.Version, err)
			}
			destroyed, err := w.mgr.SetState(ctx, "acme", name, 2, store.KeyDestroyed, "carol")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(w.keyDir, strings.TrimPrefix(kv2.ProviderURI, "soft:"))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("key file still present after destroy: %v", err)
			}
			if _, _, err := w.mgr.VerifyMaterial(destroyed); err != nil {
				t.Fatalf("destroyed version no longer verifiable: %v", err)
			}
			if _, err := w.mgr.SetState(ctx, "acme", name, 2, store.KeyEnabled, "carol"); !errors.Is(err, store.ErrKeyState) {
				t.Fatalf("re-enabling a destroyed version: err = %v, want store.ErrKeyState", err)
			}
		})
	}

	evs := w.events(t)
	var types []string
	for _, ev := range evs {
		e := decode(t, ev)
		types = append(types, e.Type)
		if bytes.Contains(ev.Entry, []byte(passphrase)) || bytes.Contains(ev.Entry, []byte("PRIVATE")) {
			t.Errorf("audit entry holds secret material: %s", ev.Entry)
		}
		if e.Actor == "" || e.Tenant != "acme" || !strings.HasPrefix(e.Subject, "key:acme/contracts-") {
			t.Errorf("event %s: actor %q tenant %q subject %q", e.Type, e.Actor, e.Tenant, e.Subject)
		}
		for _, k := range []string{"algorithm", "provider", "public_key_sha256"} {
			if s, _ := e.Details[k].(string); s == "" {
				t.Errorf("event %s %s lacks detail %s: %s", e.Type, e.Subject, k, ev.Entry)
			}
		}
		if ev.Release != "v1" || ev.Instance != "test-1" {
			t.Errorf("event release/instance = %q/%q", ev.Release, ev.Instance)
		}
	}
	want := strings.Repeat("key.created key.rotated key.state_changed key.state_changed key.material_destroyed ", 3)
	if got := strings.Join(types, " ") + " "; got != want {
		t.Errorf("event types:\n got %s\nwant %s", got, want)
	}
}

func TestManagerImport(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	// An external CA issues a certificate for a key generated in the provider.
	extKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	extCA, err := pki.NewCA(extKey, "External CA", w.now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	uri, pub, err := w.reg.Generate(ctx, soft.Scheme, keys.ECDSAP384, "imported")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.IssueSigningCert(extCA, extKey, pub, "imported", w.now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := pki.EncodeChainPEM([]*x509.Certificate{leaf, extCA})

	otherURI, _, err := w.reg.Generate(ctx, soft.Scheme, keys.ECDSAP384, "other")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		alg     keys.Algorithm
		uri     string
		chain   string
		wantErr error
	}{
		{"key does not match leaf", keys.ECDSAP384, otherURI, chainPEM, keys.ErrMismatch},
		{"wrong algorithm", keys.ECDSAP256, uri, chainPEM, keys.ErrMismatch},
		{"reversed chain", keys.ECDSAP384, uri, pki.EncodeChainPEM([]*x509.Certificate{extCA, leaf}), nil},
		{"no chain", keys.ECDSAP384, uri, "", pki.ErrNoPEM},
		{"ok", keys.ECDSAP384, uri, chainPEM, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kv, err := w.mgr.Import(ctx, "acme", "imported", tc.alg, tc.uri, tc.chain, "alice")
			switch {
			case tc.name == "ok":
				if err != nil {
					t.Fatal(err)
				}
				if kv.Version != 1 || kv.CertChainPEM != chainPEM {
					t.Fatalf("imported %+v", kv)
				}
				if _, err := w.mgr.SignerFor(ctx, kv); err != nil {
					t.Fatal(err)
				}
			case err == nil:
				t.Fatal("Import succeeded, want an error")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	evs := w.events(t)
	if len(evs) != 1 || evs[0].Type != keys.EventKeyImported || evs[0].Subject != "key:acme/imported@v1" {
		t.Fatalf("events after imports: %d, first %+v", len(evs), evs)
	}
}

// TestFreezeRefusesEveryOperation checks each key operation is refused
// while frozen, writes nothing, and proceeds under a declared compromise.
func TestFreezeRefusesEveryOperation(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.mgr.Create(ctx, "acme", "base", keys.ECDSAP256, soft.Scheme, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.Create(ctx, "acme", "todestroy", keys.ECDSAP256, soft.Scheme, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.SetState(ctx, "acme", "base", 1, store.KeyDisabled, "alice"); err != nil {
		t.Fatal(err)
	}
	extURI, extPub, err := w.reg.Generate(ctx, soft.Scheme, keys.ECDSAP256, "ext")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.IssueSigningCert(w.ca.Cert, w.ca.Signer, extPub, "ext", w.now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := pki.EncodeChainPEM([]*x509.Certificate{leaf, w.ca.Cert})

	ops := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"create", func(ctx context.Context) error {
			_, err := w.mgr.Create(ctx, "acme", "new", keys.ECDSAP256, soft.Scheme, "mallory")
			return err
		}},
		{"rotate", func(ctx context.Context) error { _, err := w.mgr.Rotate(ctx, "acme", "base", "mallory"); return err }},
		{"import", func(ctx context.Context) error {
			_, err := w.mgr.Import(ctx, "acme", "ext", keys.ECDSAP256, extURI, chainPEM, "mallory")
			return err
		}},
		{"enable", func(ctx context.Context) error {
			_, err := w.mgr.SetState(ctx, "acme", "base", 1, store.KeyEnabled, "mallory")
			return err
		}},
		{"disable", func(ctx context.Context) error {
			_, err := w.mgr.SetState(ctx, "acme", "todestroy", 1, store.KeyDisabled, "mallory")
			return err
		}},
		{"destroy", func(ctx context.Context) error {
			_, err := w.mgr.SetState(ctx, "acme", "todestroy", 1, store.KeyDestroyed, "mallory")
			return err
		}},
	}

	if err := w.mgr.Freeze(ctx, "incident-commander", "INC-7 opened"); err != nil {
		t.Fatal(err)
	}
	if frozen, err := w.mgr.Frozen(ctx); err != nil || !frozen {
		t.Fatalf("Frozen = %v, %v", frozen, err)
	}
	before, err := w.st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir(w.keyDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		t.Run("frozen/"+op.name, func(t *testing.T) {
			if err := op.do(ctx); !errors.Is(err, keys.ErrFrozen) {
				t.Fatalf("err = %v, want ErrFrozen", err)
			}
		})
	}
	if after, _ := w.st.AuditSize(ctx); after != before {
		t.Fatalf("refused operations wrote %d audit events", after-before)
	}
	if now, _ := os.ReadDir(w.keyDir); len(now) != len(files) {
		t.Fatalf("refused operations changed key files: %d -> %d", len(files), len(now))
	}

	cctx := keys.WithCompromise(ctx, "INC-7")
	for _, op := range ops {
		t.Run("compromise/"+op.name, func(t *testing.T) {
			if err := op.do(cctx); err != nil {
				t.Fatalf("under declared compromise: %v", err)
			}
		})
	}
	evs := w.events(t)
	for _, ev := range evs[before:] {
		if e := decode(t, ev); e.Details["compromise_incident"] != "INC-7" {
			t.Errorf("event %s %s lacks the compromise incident: %s", e.Type, e.Subject, ev.Entry)
		}
	}

	if err := w.mgr.Unfreeze(ctx, "incident-commander", "INC-7 closed"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.Rotate(ctx, "acme", "base", "alice"); err != nil {
		t.Fatalf("Rotate after Unfreeze: %v", err)
	}
	var freezeEvents []string
	for _, ev := range w.events(t) {
		if strings.HasPrefix(ev.Type, "keys.") {
			freezeEvents = append(freezeEvents, ev.Type+":"+decode(t, ev).Details["reason"].(string))
		}
	}
	if got := strings.Join(freezeEvents, ","); got != "keys.frozen:INC-7 opened,keys.unfrozen:INC-7 closed" {
		t.Errorf("freeze events = %s", got)
	}
	if err := w.mgr.Freeze(ctx, "x", ""); err == nil {
		t.Error("Freeze without a reason succeeded")
	}
}

func TestSignerForDetectsSwappedKey(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	kv, err := w.mgr.Create(ctx, "acme", "k", keys.ECDSAP256, soft.Scheme, "alice")
	if err != nil {
		t.Fatal(err)
	}
	otherURI, _, err := w.reg.Generate(ctx, soft.Scheme, keys.ECDSAP256, "other")
	if err != nil {
		t.Fatal(err)
	}
	kv.ProviderURI = otherURI
	if _, err := w.mgr.SignerFor(ctx, kv); !errors.Is(err, keys.ErrMismatch) {
		t.Fatalf("err = %v, want ErrMismatch", err)
	}
}

func TestManagerWithoutCA(t *testing.T) {
	w := newWorld(t)
	mgr, err := keys.NewManager(keys.ManagerConfig{Store: w.st, Registry: w.reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Create(context.Background(), "acme", "k", keys.ECDSAP256, soft.Scheme, "alice"); !errors.Is(err, keys.ErrNoCA) {
		t.Fatalf("err = %v, want ErrNoCA", err)
	}
	if _, err := keys.NewManager(keys.ManagerConfig{Store: w.st, Registry: w.reg,
		CA: &keys.CA{Cert: w.ca.Cert, Signer: mustKey(t)}}); !errors.Is(err, keys.ErrMismatch) {
		t.Fatalf("NewManager with a foreign CA signer: err = %v", err)
	}
}

func mustKey(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
