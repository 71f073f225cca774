package snapshot

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

const testPassphrase = "correct horse battery staple snapshot"

type keyWorld struct {
	st     *sqlite.Store
	mgr    *keys.Manager
	keyDir string
}

func newKeyWorld(t *testing.T) *keyWorld {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cs.db"), store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyDir := filepath.Join(dir, "keys")
	sp, err := soft.New(keyDir, soft.NewPassphrase([]byte(testPassphrase)), soft.WithScrypt(1<<10, 8, 1))
	if err != nil {
		t.Fatal(err)
	}
	reg := keys.NewRegistry()
	if err := reg.Register(soft.Scheme, sp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	_, ca, err := keys.CreateCA(ctx, reg, soft.Scheme, keys.ECDSAP256, "Snapshot Test CA", t0, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := keys.NewManager(keys.ManagerConfig{Store: st, Registry: reg, CA: ca, Release: "v1", Instance: "t1",
		Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	return &keyWorld{st: st, mgr: mgr, keyDir: keyDir}
}

// openSoftKey decrypts a soft key file (scrypt + AES-256-GCM envelope) to
// its PKCS#8 DER, independently of the soft package.
func openSoftKey(t *testing.T, file []byte) []byte {
	t.Helper()
	var env struct {
		Version    int    `json:"version"`
		Algorithm  string `json:"alg"`
		PublicKey  []byte `json:"public_key"`
		Nonce      []byte `json:"nonce"`
		Ciphertext []byte `json:"ciphertext"`
		KDF        struct {
			N, R, P int
			Salt    []byte
		} `json:"kdf"`
	}
	if err := json.Unmarshal(file, &env); err != nil {
		t.Fatal(err)
	}
	key, err := scrypt.Key([]byte(testPassphrase), env.KDF.Salt, env.KDF.N, env.KDF.R, env.KDF.P, 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	aad := fmt.Appendf(nil, "countersign-soft-key v%d alg=%s spki=%x", env.Version, env.Algorithm, env.PublicKey)
	pkcs8, err := aead.Open(nil, env.Nonce, env.Ciphertext, aad)
	if err != nil {
		t.Fatalf("decrypt soft key: %v", err)
	}
	if _, err := x509.ParsePKCS8PrivateKey(pkcs8); err != nil {
		t.Fatal(err)
	}
	return pkcs8
}

// fixedFleet is an in-memory FleetSource: fleet/local would need node
// processes, and the part only reads Status and History.
type fixedFleet struct{ revs []fleet.Revision }

func (f fixedFleet) Status(context.Context) ([]fleet.PoolStatus, error) {
	last := f.revs[len(f.revs)-1]
	return []fleet.PoolStatus{{Pool: "stable", Revision: last.Number, Release: last.Release, Desired: 2, Ready: 2}}, nil
}

func (f fixedFleet) History(_ context.Context, pool string) ([]fleet.Revision, error) {
	out := make([]fleet.Revision, len(f.revs))
	for i, r := range f.revs {
		r.Release = r.Release.Clone()
		out[i] = r
	}
	return out, nil
}

// TestSnapshotHoldsNoPrivateKeyMaterial takes a full snapshot of a store
// with soft keys and greps every stored byte (and every key event's
// decoded entry) for the key files, their ciphertexts, the decrypted
// PKCS#8 DER in raw, base64 and hex form, the private scalars and the
// passphrase.
func TestSnapshotHoldsNoPrivateKeyMaterial(t *testing.T) {
	ctx := context.Background()
	w := newKeyWorld(t)
	if _, err := w.mgr.Create(ctx, "acme", "contracts", keys.ECDSAP256, soft.Scheme, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.Rotate(ctx, "acme", "contracts", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.Create(ctx, "beta", "invoices", keys.Ed25519, soft.Scheme, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.SetState(ctx, "acme", "contracts", 1, store.KeyDisabled, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := w.mgr.Freeze(ctx, "ic", "incident inc-1"); err != nil {
		t.Fatal(err)
	}
	signer, err := auditlog.NewNoteSigner("countersign.test/log", ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	integ, err := auditlog.NewIntegrator(w.st, auditlog.Config{Signer: signer, HistoryPath: filepath.Join(t.TempDir(), "checkpoints.log")})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := integ.IntegrateOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	flags := filepath.Join(t.TempDir(), "flags.json")
	flagsJSON := []byte(`{"flags":{"new-cms-path":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}` + "\n")
	if err := os.WriteFile(flags, flagsJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	rel := fleet.Release{ID: "v1", Artifact: "/opt/cs/v1", SHA256: strings.Repeat("a", 64), Env: []string{"COUNTERSIGN_KEY_PASSPHRASE=" + testPassphrase, "GOMAXPROCS=2"}}
	fl := fixedFleet{revs: []fleet.Revision{{Pool: "stable", Number: 1, Release: rel, CreatedAt: t0, Status: fleet.StatusCurrent, Good: true}}}

	d := newDir(t)
	m, sum, err := Take(ctx, Config{Store: d, IncidentID: "inc-1", Release: "v1", Instance: "ctl", Now: func() time.Time { return t0 },
		Parts: []Part{SQLite{Store: w.st, TempDir: t.TempDir()}, Audit{Store: w.st}, KeyInventory{Store: w.st},
			KeyEvents{Store: w.st}, File{Path: flags}, Fleet{Fleet: fl}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, d, m.ObjectName()); err != nil {
		t.Fatal(err)
	}
	t.Logf("manifest %s sha256 %s", m.ObjectName(), sum)

	// Part contents.
	auditRef, _ := m.Part("audit-checkpoint.json")
	if auditRef.Meta["checkpoint_size"] != cp.Size || auditRef.Meta["checkpoint_root"] != base64.StdEncoding.EncodeToString(cp.Hash[:]) {
		t.Errorf("audit meta %v, checkpoint size %d", auditRef.Meta, cp.Size)
	}
	invRef, _ := m.Part("keys.json")
	var inv struct {
		Tenants []string    `json:"tenants"`
		Keys    []keyRecord `json:"keys"`
	}
	if err := json.Unmarshal(readObject(t, d, invRef.Object), &inv); err != nil {
		t.Fatal(err)
	}
	if strings.Join(inv.Tenants, ",") != "acme,beta" || len(inv.Keys) != 3 {
		t.Fatalf("inventory tenants %v, %d keys; want acme,beta and 3", inv.Tenants, len(inv.Keys))
	}
	for _, k := range inv.Keys {
		if k.PublicKeyPEM == "" || k.CertChainPEM == "" || !strings.HasPrefix(k.ProviderURI, "soft:") {
			t.Errorf("key record %+v lacks public metadata", k)
		}
		if k.Name == "contracts" && k.Version == 1 && k.State != store.KeyDisabled {
			t.Errorf("contracts v1 state %s, want disabled", k.State)
		}
	}
	evRef, _ := m.Part("key-events.jsonl")
	var entries [][]byte
	var types []string
	for line := range strings.Lines(string(readObject(t, d, evRef.Object))) {
		var ev keyEventLine
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, ev.Entry)
		types = append(types, ev.Type)
	}
	want := []string{keys.EventKeyCreated, keys.EventKeyRotated, keys.EventKeyCreated, keys.EventKeyStateChanged, keys.EventKeysFrozen}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Errorf("key events %v, want %v", types, want)
	}
	fleetRef, _ := m.Part("fleet.json")
	fleetJSON := readObject(t, d, fleetRef.Object)
	if !bytes.Contains(fleetJSON, []byte("COUNTERSIGN_KEY_PASSPHRASE=[REDACTED]")) {
		t.Errorf("fleet part does not show the redacted env: %s", fleetJSON)
	}
	flagsRef, _ := m.Part("flags.json")
	if !bytes.Equal(readObject(t, d, flagsRef.Object), flagsJSON) {
		t.Error("flags part is not the file verbatim")
	}

	// The grep.
	var haystacks [][]byte
	names, err := d.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		haystacks = append(haystacks, readObject(t, d, n))
	}
	haystacks = append(haystacks, entries...)
	needles := map[string][]byte{"passphrase": []byte(testPassphrase)}
	files, _ := filepath.Glob(filepath.Join(w.keyDir, "*"))
	if len(files) < 4 { // CA + three key versions
		t.Fatalf("found %d key files in %s", len(files), w.keyDir)
	}
	for _, f := range files {
		file, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(f)
		pkcs8 := openSoftKey(t, file)
		needles[base+" file"] = file
		needles[base+" pkcs8 DER"] = pkcs8
		needles[base+" pkcs8 base64"] = []byte(base64.StdEncoding.EncodeToString(pkcs8))
		needles[base+" pkcs8 hex"] = fmt.Appendf(nil, "%x", pkcs8)
		switch k, _ := x509.ParsePKCS8PrivateKey(pkcs8); k := k.(type) {
		case *ecdsa.PrivateKey:
			b, _ := k.Bytes()
			needles[base+" scalar"] = b
		case ed25519.PrivateKey:
			needles[base+" seed"] = k.Seed()
		}
	}
	for name, n := range needles {
		for i, h := range haystacks {
			if bytes.Contains(h, n) {
				t.Errorf("snapshot bytes (haystack %d) contain the %s", i, name)
			}
		}
	}
	t.Logf("checked %d needles against %d objects and %d key-event entries", len(needles), len(names), len(entries))
}

func TestRedactProviderURI(t *testing.T) {
	for in, want := range map[string]string{
		"soft:keys/acme-contracts-1.key":                          "soft:keys/acme-contracts-1.key",
		"pkcs11:token=cs;id=%01?pin-value=1234":                   "pkcs11:token=cs;id=%01",
		"pkcs11:token=cs;id=%01?module-name=softhsm2&pin-value=1": "pkcs11:token=cs;id=%01?module-name=softhsm2",
		"pkcs11:token=cs?PIN%2dVALUE=9&pin-source=file:/run/pin":  "pkcs11:token=cs?pin-source=file:/run/pin",
	} {
		if got := redactProviderURI(in); got != want {
			t.Errorf("redactProviderURI(%q) = %q, want %q", in, got, want)
		}
	}
}
