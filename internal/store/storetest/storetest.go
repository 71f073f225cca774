// Package storetest is the conformance suite every store backend runs:
// sqlite and postgres call Run (behaviour through store.Store) and RunDB
// (behaviour that needs raw SQL or reopening: append-only rows, the schema
// gate).
//
// Invariant: a backend that passes this suite keeps the store contract —
// tenant isolation, idempotent signature commits (sync and async sharing a
// tenant's idempotency keys), forward-only job and incident states, a
// playbook journal the engine can resume from, and an audit table whose
// indexes are gap-free, in commit order, and never rewritten.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// Run runs the behavioural suite. open must return a new, empty, migrated
// store for each call and close it when the test ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"TenantsAndTokens", testTenantsAndTokens},
		{"KeyVersions", testKeyVersions},
		{"TenantIsolation", testTenantIsolation},
		{"Settings", testSettings},
		{"CommitSignatures", testCommitSignatures},
		{"IdempotencyConflict", testIdempotencyConflict},
		{"SignaturesRange", testSignaturesRange},
		{"AuditRoundTrip", testAuditRoundTrip},
		{"ConcurrentCommitter", testConcurrentCommitter},
		{"TreeHashes", testTreeHashes},
		{"Checkpoints", testCheckpoints},
		{"TreeHashRange", testTreeHashRange},
		{"Tenants", testTenantsList},
		{"SignatureByID", testSignatureByID},
		{"SignaturesByRelease", testSignaturesByRelease},
		{"Jobs", testJobs},
		{"JobKeySpace", testJobKeySpace},
		{"JobsByState", testJobsByState},
		{"JobBatches", testJobBatches},
		{"JobCallbacks", testJobCallbacks},
		{"JobCommitter", testJobCommitter},
		{"Journal", testJournal},
		{"PlaybookEngine", testPlaybookEngine},
		{"Incidents", testIncidents},
		{"LargeBatch", testLargeBatch},
		{"MixedRuns", testMixedRuns},
		{"AuditEntries", testAuditEntries},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// clock hands out distinct microsecond-precision UTC times.
var base = time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC)

func at(i int) time.Time { return base.Add(time.Duration(i) * 1001 * time.Microsecond) }

// event builds an audit row the way package auditlog does: canonical JSON
// entry, UTC time truncated to microseconds.
func event(typ, tenant, subject string, i int) store.AuditEvent {
	tm := at(i)
	entry, err := json.Marshal(struct {
		V       int    `json:"v"`
		Type    string `json:"type"`
		Time    string `json:"time"`
		Actor   string `json:"actor"`
		Tenant  string `json:"tenant,omitempty"`
		Subject string `json:"subject,omitempty"`
	}{1, typ, tm.Format(time.RFC3339Nano), "storetest", tenant, subject})
	if err != nil {
		panic(err)
	}
	return store.AuditEvent{Time: tm, Type: typ, Actor: "storetest", TenantID: tenant,
		Release: "v1.2.3", Instance: "node-1", Subject: subject, Entry: entry}
}

func sig(tenant, idem string, i int) store.Signature {
	return store.Signature{
		ID: fmt.Sprintf("sig-%s-%s", tenant, idem), TenantID: tenant, IdempotencyKey: idem,
		RequestHash: []byte("req-" + idem), KeyName: "default", KeyVersion: 1, Format: "cms",
		Algorithm: "ecdsa-p256", AlgorithmOID: "1.2.840.10045.4.3.2", DigestAlgorithm: "sha256",
		DigestOID: "2.16.840.1.101.3.4.2.1", DocumentDigest: []byte{0, 1, 2, 0xff, byte(i)},
		DocumentID: "doc-" + idem, Signature: []byte{0x30, 0x82, 0, byte(i), 0},
		Release: "v1.2.3", Instance: "node-1", SignedAt: at(i),
	}
}

func write(tenant, idem string, i int) store.SignatureWrite {
	s := sig(tenant, idem, i)
	return store.SignatureWrite{Signature: s, Event: event("signature.created", tenant, s.ID, i)}
}

func ctxT(t *testing.T) context.Context { return t.Context() }

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func auditSize(t *testing.T, s store.Store) int64 {
	t.Helper()
	n, err := s.AuditSize(ctxT(t))
	must(t, "AuditSize", err)
	return n
}

func testTenantsAndTokens(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ten := store.Tenant{ID: "acme", Name: "Acme Corp", CreatedAt: at(1)}
	must(t, "CreateTenant", s.CreateTenant(ctx, ten, event("tenant.created", "acme", "acme", 1)))
	wantErr(t, "CreateTenant again", s.CreateTenant(ctx, ten, event("tenant.created", "acme", "acme", 2)), store.ErrExists)
	got, err := s.Tenant(ctx, "acme")
	must(t, "Tenant", err)
	if got.ID != ten.ID || got.Name != ten.Name || !got.CreatedAt.Equal(ten.CreatedAt) {
		t.Errorf("Tenant = %+v, want %+v", got, ten)
	}
	_, err = s.Tenant(ctx, "nobody")
	wantErr(t, "Tenant(nobody)", err, store.ErrNotFound)

	tok := store.Token{ID: "tok1", TenantID: "acme", SecretHash: []byte{1, 2, 3, 0, 255}, CreatedAt: at(3)}
	must(t, "CreateToken", s.CreateToken(ctx, tok, event("token.created", "acme", "tok1", 3)))
	wantErr(t, "CreateToken again", s.CreateToken(ctx, tok, event("token.created", "acme", "tok1", 4)), store.ErrExists)
	gt, err := s.Token(ctx, "tok1")
	must(t, "Token", err)
	if gt.TenantID != "acme" || string(gt.SecretHash) != string(tok.SecretHash) || gt.Revoked || !gt.CreatedAt.Equal(tok.CreatedAt) {
		t.Errorf("Token = %+v, want %+v", gt, tok)
	}
	_, err = s.Token(ctx, "nope")
	wantErr(t, "Token(nope)", err, store.ErrNotFound)
	// Two successful writes, two events; the refused ones wrote nothing.
	if n := auditSize(t, s); n != 2 {
		t.Errorf("AuditSize = %d, want 2 (failed writes must not leave events)", n)
	}
}

func keyVersion(tenant, name string, v int, state string) store.KeyVersion {
	return store.KeyVersion{TenantID: tenant, Name: name, Version: v, Algorithm: "ecdsa-p256",
		ProviderURI:  fmt.Sprintf("soft:keys/%s/%s-%d.key", tenant, name, v),
		PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n", State: state, CreatedAt: at(v)}
}

func testKeyVersions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.KeyVersions(ctx, "acme", "default")
	wantErr(t, "KeyVersions before any", err, store.ErrNotFound)
	tests := []struct {
		name    string
		version int
		want    error
	}{
		{"first must be 1", 2, store.ErrKeyVersion},
		{"zero", 0, store.ErrKeyVersion},
		{"v1", 1, nil},
		{"v1 again", 1, store.ErrExists},
		{"gap", 3, store.ErrKeyVersion},
		{"v2", 2, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.PutKeyVersion(ctx, keyVersion("acme", "default", tc.version, store.KeyEnabled), event("key.created", "acme", "default", i))
			if tc.want == nil {
				must(t, "PutKeyVersion", err)
				return
			}
			wantErr(t, "PutKeyVersion", err, tc.want)
		})
	}
	kvs, err := s.KeyVersions(ctx, "acme", "default")
	must(t, "KeyVersions", err)
	if len(kvs) != 2 || kvs[0].Version != 1 || kvs[1].Version != 2 {
		t.Fatalf("KeyVersions = %+v, want versions 1, 2", kvs)
	}
	want := keyVersion("acme", "default", 2, store.KeyEnabled)
	if g := kvs[1]; g.ProviderURI != want.ProviderURI || g.PublicKeyPEM != want.PublicKeyPEM || g.Algorithm != want.Algorithm ||
		g.State != want.State || !g.CreatedAt.Equal(want.CreatedAt) || g.TenantID != "acme" || g.Name != "default" {
		t.Errorf("KeyVersions[1] = %+v, want %+v", g, want)
	}

	must(t, "SetKeyState disabled", s.SetKeyState(ctx, "acme", "default", 1, store.KeyDisabled, event("key.disabled", "acme", "default", 10)))
	must(t, "SetKeyState destroyed", s.SetKeyState(ctx, "acme", "default", 1, store.KeyDestroyed, event("key.destroyed", "acme", "default", 11)))
	wantErr(t, "SetKeyState destroyed->enabled",
		s.SetKeyState(ctx, "acme", "default", 1, store.KeyEnabled, event("key.enabled", "acme", "default", 12)), store.ErrKeyState)
	wantErr(t, "SetKeyState bogus", s.SetKeyState(ctx, "acme", "default", 2, "bogus", event("key.x", "acme", "default", 13)), store.ErrKeyState)
	wantErr(t, "SetKeyState missing",
		s.SetKeyState(ctx, "acme", "default", 9, store.KeyDisabled, event("key.disabled", "acme", "default", 14)), store.ErrNotFound)
	kvs, err = s.KeyVersions(ctx, "acme", "default")
	must(t, "KeyVersions", err)
	if kvs[0].State != store.KeyDestroyed || kvs[1].State != store.KeyEnabled {
		t.Errorf("states = %s, %s; want destroyed, enabled", kvs[0].State, kvs[1].State)
	}
	must(t, "PutKeyVersion other", s.PutKeyVersion(ctx, keyVersion("acme", "invoices", 1, store.KeyEnabled), event("key.created", "acme", "invoices", 20)))
	all, err := s.ListKeys(ctx, "acme")
	must(t, "ListKeys", err)
	if len(all) != 3 {
		t.Errorf("ListKeys = %d versions, want 3", len(all))
	}
	// v1, v2, two state changes, the other key: five events.
	if n := auditSize(t, s); n != 5 {
		t.Errorf("AuditSize = %d, want 5", n)
	}
}

func testTenantIsolation(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	must(t, "PutKeyVersion A", s.PutKeyVersion(ctx, keyVersion("A", "default", 1, store.KeyEnabled), event("key.created", "A", "default", 1)))
	if kvs, err := s.ListKeys(ctx, "B"); err != nil || len(kvs) != 0 {
		t.Errorf("ListKeys(B) = %v, %v; want none", kvs, err)
	}
	_, err := s.KeyVersions(ctx, "B", "default")
	wantErr(t, "KeyVersions(B)", err, store.ErrNotFound)
	// B's own key named like A's starts at version 1.
	must(t, "PutKeyVersion B", s.PutKeyVersion(ctx, keyVersion("B", "default", 1, store.KeyEnabled), event("key.created", "B", "default", 2)))
	wantErr(t, "SetKeyState across tenants",
		s.SetKeyState(ctx, "B", "default", 2, store.KeyDisabled, event("key.disabled", "B", "default", 3)), store.ErrNotFound)

	rs, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("A", "same-key", 1), write("B", "same-key", 2)})
	must(t, "CommitSignatures", err)
	for i, r := range rs {
		if r.Existing != nil {
			t.Errorf("result %d: Existing set, but idempotency keys are per tenant", i)
		}
	}
	a := sig("A", "same-key", 1)
	_, err = s.Signature(ctx, "B", a.ID)
	wantErr(t, "Signature(B, A's id)", err, store.ErrNotFound)
	gb, err := s.SignatureByIdempotencyKey(ctx, "B", "same-key")
	must(t, "SignatureByIdempotencyKey(B)", err)
	if gb.TenantID != "B" || gb.ID != sig("B", "same-key", 2).ID {
		t.Errorf("B's signature = %s of %s, want B's own", gb.ID, gb.TenantID)
	}
}

func testSettings(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	v, err := s.Setting(ctx, "keys.frozen")
	if err != nil || v != "" {
		t.Fatalf("Setting unset = %q, %v; want \"\", nil", v, err)
	}
	must(t, "SetSetting", s.SetSetting(ctx, "keys.frozen", "true", event("settings.changed", "", "keys.frozen", 1)))
	must(t, "SetSetting again", s.SetSetting(ctx, "keys.frozen", "false", event("settings.changed", "", "keys.frozen", 2)))
	v, err = s.Setting(ctx, "keys.frozen")
	if err != nil || v != "false" {
		t.Errorf("Setting = %q, %v; want \"false\"", v, err)
	}
	if n := auditSize(t, s); n != 2 {
		t.Errorf("AuditSize = %d, want 2", n)
	}
}
