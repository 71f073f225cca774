package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// AuditReader is what the key parts need to read the audit log (store.Store).
type AuditReader interface {
	AuditSize(ctx context.Context) (int64, error)
	AuditEvents(ctx context.Context, from, n int64) ([]store.AuditEvent, error)
}

// KeySource is what the key inventory part needs (store.Store).
type KeySource interface {
	AuditReader
	ListKeys(ctx context.Context, tenantID string) ([]store.KeyVersion, error)
}

// auditPage is how many audit events are read per call.
const auditPage = 1000

// scanAudit calls fn for every event with index below the audit size
// read at the start, in order, and returns that size.
func scanAudit(ctx context.Context, st AuditReader, fn func(store.AuditEvent)) (int64, error) {
	size, err := st.AuditSize(ctx)
	if err != nil {
		return 0, err
	}
	for from := int64(0); from < size; {
		evs, err := st.AuditEvents(ctx, from, min(auditPage, size-from))
		if err != nil {
			return 0, err
		}
		if len(evs) == 0 {
			return 0, fmt.Errorf("audit log: no events from index %d, size is %d", from, size)
		}
		for _, ev := range evs {
			if ev.Index != from {
				return 0, fmt.Errorf("audit log: event %d where %d was expected", ev.Index, from)
			}
			fn(ev)
			from++
		}
	}
	return size, nil
}

// IsKeyEvent reports whether an audit event type belongs to the key-event
// log: "key.*" (per key version) or "keys.*" (installation-wide, e.g. the
// incident freeze).
func IsKeyEvent(typ string) bool {
	return strings.HasPrefix(typ, "key.") || strings.HasPrefix(typ, "keys.")
}

// KeyInventory records every key version's public metadata: tenant, name,
// version, algorithm, provider URI, state, creation time, public key and
// certificate chain. It is built field by field from store.KeyVersion
// (never by copying the struct) and never asks a key provider for
// anything, so no private key material can reach it. A PKCS#11 URI's
// pin-value attribute is removed.
//
// Tenants default to every tenant named by an audit event (tenant creation
// and key events carry the tenant), read up to the audit size at the start.
type KeyInventory struct {
	Store KeySource
	// Tenants, when set, replaces the tenants found in the audit log.
	Tenants []string
	// PartName defaults to "keys.json".
	PartName string
}

// Name implements Part.
func (p KeyInventory) Name() string { return orDefault(p.PartName, "keys.json") }

// Kind implements Part.
func (p KeyInventory) Kind() string { return KindKeyInventory }

type keyRecord struct {
	TenantID        string    `json:"tenant_id"`
	Name            string    `json:"name"`
	Version         int       `json:"version"`
	Algorithm       string    `json:"algorithm"`
	ProviderURI     string    `json:"provider_uri"`
	State           string    `json:"state"`
	CreatedAt       time.Time `json:"created_at"`
	PublicKeyPEM    string    `json:"public_key_pem"`
	PublicKeySHA256 string    `json:"public_key_pem_sha256"`
	CertChainPEM    string    `json:"cert_chain_pem,omitempty"`
}

// Write implements Part.
func (p KeyInventory) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	tenants := slices.Clone(p.Tenants)
	var auditSize int64
	if len(tenants) == 0 {
		seen := map[string]bool{}
		var err error
		auditSize, err = scanAudit(ctx, p.Store, func(ev store.AuditEvent) {
			if ev.TenantID != "" && !seen[ev.TenantID] {
				seen[ev.TenantID] = true
				tenants = append(tenants, ev.TenantID)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(tenants)
	tenants = slices.Compact(tenants)
	recs := []keyRecord{}
	states := map[string]int{}
	for _, t := range tenants {
		kvs, err := p.Store.ListKeys(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("key inventory of tenant %s: %w", t, err)
		}
		for _, kv := range kvs {
			sum := sha256.Sum256([]byte(kv.PublicKeyPEM))
			recs = append(recs, keyRecord{TenantID: kv.TenantID, Name: kv.Name, Version: kv.Version,
				Algorithm: kv.Algorithm, ProviderURI: redactProviderURI(kv.ProviderURI), State: kv.State,
				CreatedAt: kv.CreatedAt.UTC(), PublicKeyPEM: kv.PublicKeyPEM,
				PublicKeySHA256: hex.EncodeToString(sum[:]), CertChainPEM: kv.CertChainPEM})
			states[kv.State]++
		}
	}
	doc := struct {
		AuditSize int64       `json:"audit_size,omitempty"`
		Tenants   []string    `json:"tenants"`
		Keys      []keyRecord `json:"keys"`
	}{auditSize, append([]string{}, tenants...), recs}
	if _, err := writeJSON(w, doc); err != nil {
		return nil, err
	}
	return map[string]any{"tenants": len(tenants), "key_versions": len(recs), "states": states}, nil
}

// redactProviderURI removes a PKCS#11 URI's pin-value query attribute
// (RFC 7512), the one place a provider URI could carry a secret.
func redactProviderURI(uri string) string {
	path, query, ok := strings.Cut(uri, "?")
	if !ok || !strings.HasPrefix(uri, "pkcs11:") {
		return uri
	}
	var kept []string
	for attr := range strings.SplitSeq(query, "&") {
		name, _, _ := strings.Cut(attr, "=")
		if n, err := url.PathUnescape(name); err == nil && strings.EqualFold(n, "pin-value") {
			continue
		}
		kept = append(kept, attr)
	}
	if len(kept) == 0 {
		return path
	}
	return path + "?" + strings.Join(kept, "&")
}

// KeyEvents records the key-event log: every audit event whose type
// IsKeyEvent, as JSON lines in index order, each with its exact leaf entry
// (base64) and leaf hash sha256(0x00 || entry), so each line can be
// checked against the audit log's inclusion proofs.
type KeyEvents struct {
	Store AuditReader
	// PartName defaults to "key-events.jsonl".
	PartName string
}

// Name implements Part.
func (p KeyEvents) Name() string { return orDefault(p.PartName, "key-events.jsonl") }

// Kind implements Part.
func (p KeyEvents) Kind() string { return KindKeyEvents }

type keyEventLine struct {
	Index    int64     `json:"index"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Actor    string    `json:"actor"`
	TenantID string    `json:"tenant_id,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Release  string    `json:"release,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Entry    []byte    `json:"entry"`
	LeafHash string    `json:"leaf_hash"`
}

// Write implements Part.
func (p KeyEvents) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	enc := json.NewEncoder(w)
	var (
		n     int
		first int64 = -1
		last  int64 = -1
		types       = map[string]int{}
		werr  error
	)
	size, err := scanAudit(ctx, p.Store, func(ev store.AuditEvent) {
		if werr != nil || !IsKeyEvent(ev.Type) {
			return
		}
		leaf := sha256.Sum256(append([]byte{0}, ev.Entry...))
		werr = enc.Encode(keyEventLine{Index: ev.Index, Time: ev.Time.UTC(), Type: ev.Type, Actor: ev.Actor,
			TenantID: ev.TenantID, Subject: ev.Subject, Release: ev.Release, Instance: ev.Instance,
			Entry: ev.Entry, LeafHash: hex.EncodeToString(leaf[:])})
		if first < 0 {
			first = ev.Index
		}
		last = ev.Index
		types[ev.Type]++
		n++
	})
	if err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, werr
	}
	meta := map[string]any{"audit_size": size, "events": n, "types": types}
	if n > 0 {
		meta["first_index"], meta["last_index"] = first, last
	}
	return meta, nil
}
