// Package reconciletest seeds a real installation (SQLite data dir, soft
// keys, signed checkpoints) with an incident window holding known numbers
// of each signature class and of in-flight jobs, for the tests of package
// reconcile and package evidence.
package reconciletest

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"

	_ "modernc.org/sqlite" // the attacker's driver
)

// Release names used by the seed.
const (
	Stable     = "v1-stable"
	Regressive = "v2-bad"
	Tenant     = "dev"
	Other      = "acme"
)

// Counts are the seeded numbers of each kind, inside the window.
type Counts struct {
	ValidCMS, ValidRaw    int // valid, P-256, policy digest
	Corrupted             int // cms artifact with a flipped byte: invalid
	WrongDigest           int // raw signature over another digest: invalid
	Drift                 int // P-256 signed and stamped with sha384: metadata-drift (attest)
	JWS                   int // detached JWS: unverifiable (re-sign)
	StableBefore          int // valid, stable release, before the window: not selected
	AcceptedJobs          int // accepted async jobs in the window: replayed
	AmbiguousJobs         int // accepted jobs with an unreadable request: manual review
	KeyCreatedInWindow    bool
	FreezeInWindow        bool
	OtherTenantCorrupted  int // corrupted cms signatures of a second tenant
	RegressiveAfterWindow int // valid, regressive release, after the window: selected
}

// DefaultCounts is a small window with every class.
func DefaultCounts() Counts {
	return Counts{ValidCMS: 4, ValidRaw: 3, Corrupted: 2, WrongDigest: 2, Drift: 2, JWS: 2, StableBefore: 3,
		AcceptedJobs: 3, AmbiguousJobs: 1, KeyCreatedInWindow: true, FreezeInWindow: true, OtherTenantCorrupted: 1, RegressiveAfterWindow: 1}
}

// World is a seeded installation.
type World struct {
	Dir    string
	Inst   *install.Installation
	Window reconcile.Window
	// Deploy is when the regressive release was deployed (window start).
	Deploy time.Time
	// Documents holds the document of every signature made from a
	// document, by signature ID (for openssl recipes).
	Documents map[string][]byte

	mu    sync.Mutex
	clock time.Time
	integ *auditlog.Integrator
	seq   int
}

// Now is the seed's clock.
func (w *World) Now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clock
}

// SetNow moves the seed's clock.
func (w *World) SetNow(t time.Time) {
	w.mu.Lock()
	w.clock = t
	w.mu.Unlock()
}

// QuietLogger discards logs.
func QuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Seed creates and seeds an installation in t.TempDir().
func Seed(t testing.TB, c Counts) *World {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	deploy := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	w := &World{Dir: dir, Deploy: deploy, Documents: map[string][]byte{}, clock: deploy.Add(-2 * time.Hour)}
	if _, err := install.Init(ctx, dir, install.Options{Dev: true, ScryptN: 1 << 10, Now: w.Now, Logger: QuietLogger()}); err != nil {
		t.Fatalf("install.Init: %v", err)
	}
	inst, err := install.Open(ctx, dir, install.OpenOptions{ScryptN: 1 << 10, Release: Stable, Instance: "stable-1", Now: w.Now, Logger: QuietLogger()})
	if err != nil {
		t.Fatalf("install.Open: %v", err)
	}
	t.Cleanup(func() { inst.Close() })
	w.Inst = inst
	ns, err := inst.NoteSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.integ, err = auditlog.NewIntegrator(inst.Store, auditlog.Config{Signer: ns, HistoryPath: inst.HistoryPath(), Now: w.Now, Logger: QuietLogger()}); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.CreateTenant(ctx, Other, "seed"); err != nil {
		t.Fatal(err)
	}
	p256 := w.key(t, Tenant, "p256")
	other := w.key(t, Other, "p256")

	// Before the deploy: the stable release signs; a checkpoint is signed.
	w.SetNow(deploy.Add(-time.Hour))
	for range c.StableBefore {
		w.signDoc(t, p256, api.FormatCMS, 0, Stable, nil)
	}
	w.Integrate(t)

	// The window.
	w.Window = reconcile.Window{From: deploy, To: deploy.Add(time.Hour), Releases: []string{Regressive}}
	w.SetNow(deploy.Add(10 * time.Minute))
	if c.FreezeInWindow {
		if err := inst.Keys.Freeze(ctx, "incident-lead", "incident open"); err != nil {
			t.Fatal(err)
		}
	}
	for range c.ValidCMS {
		w.signDoc(t, p256, api.FormatCMS, 0, Regressive, nil)
	}
	for range c.ValidRaw {
		w.signDoc(t, p256, api.FormatRaw, 0, Regressive, nil)
	}
	flip := func(r *sign.Result) { r.Artifact[len(r.Artifact)-3] ^= 0x40 }
	for range c.Corrupted {
		w.signDoc(t, p256, api.FormatCMS, 0, Regressive, flip)
	}
	for range c.OtherTenantCorrupted {
		w.signDoc(t, other, api.FormatCMS, 0, Regressive, flip)
	}
	for range c.WrongDigest {
		w.signDoc(t, p256, api.FormatRaw, 0, Regressive, func(r *sign.Result) {
			d := sha256.Sum256(append([]byte("another document "), r.Digest...))
			r.Digest = d[:]
		})
	}
	for range c.Drift {
		w.signDoc(t, p256, api.FormatCMS, crypto.SHA384, Regressive, nil)
	}
	for range c.JWS {
		w.signDoc(t, p256, api.FormatJWS, 0, Regressive, nil)
	}
	for i := range c.AcceptedJobs {
		doc := fmt.Appendf(nil, "async document %d", i)
		req, _ := json.Marshal(api.SignRequest{Key: "p256", Format: api.FormatRaw, Document: doc, DocumentID: fmt.Sprintf("async-%d", i)})
		w.job(t, fmt.Sprintf("job-%d", i), req)
	}
	for i := range c.AmbiguousJobs {
		w.job(t, fmt.Sprintf("ambiguous-%d", i), []byte("{not json"))
	}
	if c.KeyCreatedInWindow {
		if c.FreezeInWindow {
			if err := inst.Keys.Unfreeze(ctx, "incident-lead", "mistake"); err != nil {
				t.Fatal(err)
			}
		}
		w.key(t, Tenant, "late")
		if c.FreezeInWindow {
			if err := inst.Keys.Freeze(ctx, "incident-lead", "refrozen"); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.SetNow(deploy.Add(2 * time.Hour))
	for range c.RegressiveAfterWindow {
		w.signDoc(t, p256, api.FormatRaw, 0, Regressive, nil)
	}
	w.Integrate(t)
	return w
}

// Integrate integrates the log and signs a checkpoint at the seed's clock.
func (w *World) Integrate(t testing.TB) auditlog.Checkpoint {
	t.Helper()
	cp, err := w.integ.IntegrateOnce(context.Background())
	if err != nil {
		t.Fatalf("IntegrateOnce: %v", err)
	}
	return cp
}

// signingKey is a created key version and its signer.
type signingKey struct {
	kv  store.KeyVersion
	key sign.Key
}

func (w *World) key(t testing.TB, tenant, name string) signingKey {
	t.Helper()
	ctx := context.Background()
	kv, err := w.Inst.Keys.Create(ctx, tenant, name, keys.ECDSAP256, soft.Scheme, "seed")
	if err != nil {
		t.Fatalf("create key %s/%s: %v", tenant, name, err)
	}
	s, err := w.Inst.Keys.SignerFor(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	_, chain, err := keys.VerifyMaterial(kv)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kv: kv, key: sign.Key{Signer: s, Algorithm: keys.ECDSAP256, Chain: chain, KeyID: name}}
}

// signDoc signs a fresh document and commits it through CommitSignatures
// with its signature.created event; mutate, if set, alters the result first.
func (w *World) signDoc(t testing.TB, k signingKey, f api.Format, h crypto.Hash, release string, mutate func(*sign.Result)) {
	t.Helper()
	w.seq++
	doc := fmt.Appendf(nil, "document %d for %s", w.seq, k.kv.TenantID)
	now := w.Now().Add(time.Duration(w.seq) * time.Second)
	res, err := sign.Sign(f, k.key, sign.Input{Document: doc, Hash: h}, now)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if mutate != nil {
		mutate(&res)
	}
	id := fmt.Sprintf("sig_%04d", w.seq)
	rh := sha512.Sum512_256(doc)
	sig := store.Signature{ID: id, TenantID: k.kv.TenantID, IdempotencyKey: fmt.Sprintf("idem-%d", w.seq), RequestHash: rh[:],
		KeyName: k.kv.Name, KeyVersion: k.kv.Version, Format: string(f), Algorithm: string(k.key.Algorithm),
		AlgorithmOID: res.AlgorithmOID, DigestAlgorithm: sign.HashName(res.Hash), DigestOID: res.DigestOID,
		DocumentDigest: res.Digest, DocumentID: fmt.Sprintf("doc-%d", w.seq), Signature: res.Artifact,
		Release: release, Instance: release + "-1", SignedAt: now.UTC().Truncate(time.Microsecond)}
	ev, err := SignatureEvent(&sig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Inst.Store.CommitSignatures(context.Background(), []store.SignatureWrite{{Signature: sig, Event: ev}}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	w.Documents[id] = doc
}

func (w *World) job(t testing.TB, idem string, req []byte) {
	t.Helper()
	w.seq++
	now := w.Now().Add(time.Duration(w.seq) * time.Second).UTC().Truncate(time.Microsecond)
	rh := sha256.Sum256(req)
	j := store.Job{ID: fmt.Sprintf("job_%04d", w.seq), TenantID: Tenant, IdempotencyKey: idem, RequestHash: rh[:], Request: req,
		Release: Regressive, Instance: Regressive + "-1", AcceptedAt: now}
	ev, err := auditlog.Event{Type: "job.accepted", Time: now, Actor: "tenant:" + Tenant, TenantID: Tenant, Release: Regressive,
		Instance: Regressive + "-1", Subject: "job:" + j.ID}.Record()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Inst.Store.CreateJob(context.Background(), j, ev); err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
}

// SignatureEvent is the signature.created event as the node writes it
// (node.signatureEvent), binding the artifact's SHA-256.
func SignatureEvent(sig *store.Signature) (store.AuditEvent, error) {
	art := sha256.Sum256(sig.Signature)
	return auditlog.Event{Type: "signature.created", Time: sig.SignedAt, Actor: "tenant:" + sig.TenantID, TenantID: sig.TenantID,
		Release: sig.Release, Instance: sig.Instance, Subject: "signature:" + sig.ID,
		Details: map[string]any{"key": sig.KeyName, "key_version": sig.KeyVersion, "format": sig.Format,
			"artifact_sha256": fmt.Sprintf("%x", art[:]), "document_id": sig.DocumentID}}.Record()
}

// Attacker opens the data dir's SQLite database directly, as someone with
// file access would, and drops every append-only trigger.
func Attacker(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "countersign.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'trigger'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	rows.Close()
	for _, n := range names {
		Exec(t, db, `DROP TRIGGER "`+n+`"`)
	}
	return db
}

// Exec runs q on db or fails the test.
func Exec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// Raw returns n valid raw ECDSA P-256 signatures of the regressive release
// by the tenant's "p256" key, in memory (not committed), for benchmarks.
// They are signed on GOMAXPROCS goroutines; SignedAt steps by a millisecond
// from 20 minutes into the window, so up to 2.4 million stay inside it.
func (w *World) Raw(t testing.TB, n int) []store.Signature {
	t.Helper()
	ctx := context.Background()
	kvs, err := w.Inst.Store.KeyVersions(ctx, Tenant, "p256")
	if err != nil {
		t.Fatal(err)
	}
	s, err := w.Inst.Keys.SignerFor(ctx, kvs[0])
	if err != nil {
		t.Fatal(err)
	}
	k := sign.Key{Signer: s, Algorithm: keys.ECDSAP256}
	base := w.Window.From.Add(20 * time.Minute)
	now := w.Now()
	out := make([]store.Signature, n)
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += workers {
				d := sha256.Sum256(fmt.Appendf(nil, "bench %d", i))
				res, err := sign.Sign(api.FormatRaw, k, sign.Input{Digest: d[:]}, now)
				if err != nil {
					errs[g] = err
					return
				}
				out[i] = store.Signature{ID: fmt.Sprintf("sig_b%07d", i), TenantID: Tenant, IdempotencyKey: fmt.Sprintf("bench-%d", i),
					RequestHash: d[:], KeyName: "p256", KeyVersion: kvs[0].Version, Format: string(api.FormatRaw),
					Algorithm: string(keys.ECDSAP256), AlgorithmOID: res.AlgorithmOID, DigestAlgorithm: "sha256", DigestOID: res.DigestOID,
					DocumentDigest: d[:], DocumentID: fmt.Sprintf("bench-doc-%d", i), Signature: res.Artifact, Release: Regressive,
					Instance: Regressive + "-1", AuditIndex: int64(i), SignedAt: base.Add(time.Duration(i) * time.Millisecond)}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("sign: %v", err)
	}
	return out
}

// CommitRaw signs n raw signatures as Raw does and commits them, each with
// its signature.created event, in batches: a window of n regressive
// signatures for benchmarks of VerifyWindow from the store. It returns
// them with the audit indexes the store assigned.
func (w *World) CommitRaw(t testing.TB, n int) []store.Signature {
	t.Helper()
	sigs := w.Raw(t, n)
	const batch = 1000
	ws := make([]store.SignatureWrite, 0, batch)
	for start := 0; start < n; start += batch {
		ws = ws[:0]
		for i := start; i < min(start+batch, n); i++ {
			ev, err := SignatureEvent(&sigs[i])
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, store.SignatureWrite{Signature: sigs[i], Event: ev})
		}
		res, err := w.Inst.Store.CommitSignatures(context.Background(), ws)
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
		for j, r := range res {
			if r.Existing != nil {
				t.Fatalf("commit: %s already exists", sigs[start+j].ID)
			}
			sigs[start+j].AuditIndex = r.AuditIndex
		}
	}
	return sigs
}
