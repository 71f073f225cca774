package auditlog

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

const testOrigin = "countersign.dev/test-install"

// testKey returns a deterministic log key, its note signer and verifier key.
func testKey(t testing.TB) (note.Signer, string) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	s, err := NewNoteSigner(testOrigin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := VerifierKey(testOrigin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// openSQLite opens a migrated SQLite store in dir (synchronous=NORMAL:
// durability is not what these tests measure).
func openSQLite(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path, store.Options{Migrate: true, Synchronous: store.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type testLog struct {
	dir     string
	db      string
	st      *sqlite.Store
	in      *Integrator
	vkey    string
	history string
}

func newTestLog(t testing.TB) *testLog {
	t.Helper()
	dir := t.TempDir()
	l := &testLog{dir: dir, db: filepath.Join(dir, "countersign.db"), history: filepath.Join(dir, HistoryFile)}
	l.st = openSQLite(t, l.db)
	var s note.Signer
	s, l.vkey = testKey(t)
	in, err := NewIntegrator(l.st, Config{Signer: s, HistoryPath: l.history, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	l.in = in
	return l
}

func fixedNow() time.Time { return time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC) }

// testEvent is the i-th synthetic audit event.
func testEvent(t testing.TB, i int) store.AuditEvent {
	t.Helper()
	ev, err := Event{Type: "signature.created", Time: fixedNow().Add(time.Duration(i) * time.Millisecond), Actor: "tenant:acme",
		TenantID: "acme", Release: "v1.2.3", Instance: "node-1", Subject: fmt.Sprintf("sig-%06d", i),
		Details: map[string]any{"key": "default", "version": 1, "n": i}}.Record()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// appendEvents appends n events starting at synthetic number first.
func appendEvents(t testing.TB, st *sqlite.Store, first, n int) {
	t.Helper()
	for done := 0; done < n; {
		k := min(500, n-done)
		evs := make([]store.AuditEvent, k)
		for i := range evs {
			evs[i] = testEvent(t, first+done+i)
		}
		if _, err := st.AppendEvents(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
		done += k
	}
}

func (l *testLog) integrate(t testing.TB) Checkpoint {
	t.Helper()
	cp, err := l.in.IntegrateOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

var (
	entryMu    sync.Mutex
	entryCache [][]byte
)

// testEntries returns the entries of the first n test events.
func testEntries(t testing.TB, n int) [][]byte {
	entryMu.Lock()
	defer entryMu.Unlock()
	for len(entryCache) < n {
		entryCache = append(entryCache, testEvent(t, len(entryCache)).Entry)
	}
	return entryCache[:n]
}

func otherTestKey(t testing.TB) (note.Signer, string) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 1
	priv := ed25519.NewKeyFromSeed(seed)
	s, err := NewNoteSigner(testOrigin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := VerifierKey(testOrigin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// fakeRSASigner is a crypto.Signer whose public key is not Ed25519.
type fakeRSASigner struct{}

func (fakeRSASigner) Public() crypto.PublicKey { return &rsa.PublicKey{} }
func (fakeRSASigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("not used")
}
