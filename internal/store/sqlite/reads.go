package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/store"
)

const selectSignatureSQL = `SELECT ` + sigColumns + ` FROM signatures`

type rowScanner interface{ Scan(dest ...any) error }

func scanSignature(r rowScanner) (store.Signature, error) {
	var sg store.Signature
	var signedAt int64
	err := r.Scan(&sg.ID, &sg.TenantID, &sg.IdempotencyKey, &sg.RequestHash, &sg.KeyName, &sg.KeyVersion,
		&sg.Format, &sg.Algorithm, &sg.AlgorithmOID, &sg.DigestAlgorithm, &sg.DigestOID, &sg.DocumentDigest,
		&sg.DocumentID, &sg.Signature, &sg.Release, &sg.Instance, &sg.AuditIndex, &signedAt)
	if err != nil {
		return store.Signature{}, err
	}
	sg.SignedAt = fromMicros(signedAt)
	return sg, nil
}

// notFound maps sql.ErrNoRows to store.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite: %s: %w", what, store.ErrNotFound)
	}
	return fmt.Errorf("sqlite: read %s: %w", what, err)
}

// Tenant returns one tenant.
func (s *Store) Tenant(ctx context.Context, id string) (store.Tenant, error) {
	t := store.Tenant{ID: id}
	var created int64
	err := s.queryRow(ctx, `SELECT name, created_at FROM tenants WHERE id = ?`, id).Scan(&t.Name, &created)
	if err != nil {
		return store.Tenant{}, notFound(err, "tenant "+id)
	}
	t.CreatedAt = fromMicros(created)
	return t, nil
}

// Token returns one API token (revoked ones too: the caller checks).
func (s *Store) Token(ctx context.Context, id string) (store.Token, error) {
	t := store.Token{ID: id}
	var created int64
	err := s.queryRow(ctx, `SELECT tenant_id, secret_hash, created_at, revoked FROM tokens WHERE id = ?`, id).
		Scan(&t.TenantID, &t.SecretHash, &created, &t.Revoked)
	if err != nil {
		return store.Token{}, notFound(err, "token "+id)
	}
	t.CreatedAt = fromMicros(created)
	return t, nil
}

const selectKeySQL = `SELECT tenant_id, name, version, algorithm, provider_uri, public_key_pem, cert_chain_pem, state, created_at
	FROM key_versions`

func (s *Store) keys(ctx context.Context, where string, args ...any) ([]store.KeyVersion, error) {
	rows, err := s.query(ctx, selectKeySQL+" "+where+" ORDER BY name, version", args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list keys: %w", err)
	}
	defer rows.Close()
	var out []store.KeyVersion
	for rows.Next() {
		var kv store.KeyVersion
		var created int64
		if err := rows.Scan(&kv.TenantID, &kv.Name, &kv.Version, &kv.Algorithm, &kv.ProviderURI,
			&kv.PublicKeyPEM, &kv.CertChainPEM, &kv.State, &created); err != nil {
			return nil, fmt.Errorf("sqlite: list keys: %w", err)
		}
		kv.CreatedAt = fromMicros(created)
		out = append(out, kv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list keys: %w", err)
	}
	return out, nil
}

// KeyVersions returns every version of one key, ascending.
func (s *Store) KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error) {
	kvs, err := s.keys(ctx, "WHERE tenant_id = ? AND name = ?", tenantID, name)
	if err != nil {
		return nil, err
	}
	if len(kvs) == 0 {
		return nil, fmt.Errorf("sqlite: key %s: %w", name, store.ErrNotFound)
	}
	return kvs, nil
}

// ListKeys returns every version of every key of a tenant.
func (s *Store) ListKeys(ctx context.Context, tenantID string) ([]store.KeyVersion, error) {
	return s.keys(ctx, "WHERE tenant_id = ?", tenantID)
}

// Setting returns a setting's value, "" when unset.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := s.queryRow(ctx, `SELECT value FROM settings WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("sqlite: read setting %s: %w", name, err)
	}
	return v, nil
}

// SignatureByIdempotencyKey returns a tenant's signature by idempotency key.
//
// A signature it returns is durable: it may have been committed by the
// group commit and not yet fsynced (deferred.go), so it fsyncs the WAL
// before it answers.
func (s *Store) SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Signature, error) {
	sg, err := scanSignature(s.queryRow(ctx, selectSignatureSQL+` WHERE tenant_id = ? AND idempotency_key = ?`, tenantID, key))
	if err != nil {
		return store.Signature{}, notFound(err, "signature for idempotency key "+key)
	}
	if err := s.SyncCommitted(ctx); err != nil {
		return store.Signature{}, err
	}
	return sg, nil
}

// Signature returns a tenant's signature by ID.
func (s *Store) Signature(ctx context.Context, tenantID, id string) (store.Signature, error) {
	sg, err := scanSignature(s.queryRow(ctx, selectSignatureSQL+` WHERE tenant_id = ? AND id = ?`, tenantID, id))
	if err != nil {
		return store.Signature{}, notFound(err, "signature "+id)
	}
	return sg, nil
}

// Signatures lists signatures with AuditIndex in [fromIndex, toIndex), all
// tenants, ascending; limit <= 0 means no limit.
func (s *Store) Signatures(ctx context.Context, fromIndex, toIndex int64, limit int) ([]store.Signature, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.query(ctx, selectSignatureSQL+` WHERE audit_index >= ? AND audit_index < ? ORDER BY audit_index LIMIT ?`,
		fromIndex, toIndex, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list signatures: %w", err)
	}
	defer rows.Close()
	var out []store.Signature
	for rows.Next() {
		sg, err := scanSignature(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list signatures: %w", err)
		}
		out = append(out, sg)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list signatures: %w", err)
	}
	return out, nil
}

// AuditSize is the number of committed audit events.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.queryRow(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: audit size: %w", err)
	}
	return n, nil
}

// AuditEvents returns events with Index in [from, from+n), ascending.
func (s *Store) AuditEvents(ctx context.Context, from, n int64) ([]store.AuditEvent, error) {
	rows, err := s.query(ctx, `SELECT idx, time, type, actor, tenant_id, release, instance, subject, entry
		FROM audit_events WHERE idx >= ? AND idx < ? ORDER BY idx`, from, from+n)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit events: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var ev store.AuditEvent
		var t int64
		if err := rows.Scan(&ev.Index, &t, &ev.Type, &ev.Actor, &ev.TenantID, &ev.Release, &ev.Instance,
			&ev.Subject, &ev.Entry); err != nil {
			return nil, fmt.Errorf("sqlite: read audit events: %w", err)
		}
		ev.Time = fromMicros(t)
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read audit events: %w", err)
	}
	return out, nil
}

// AuditEntries returns the entries of events [from, from+n); see
// store.AuditEntryReader.
func (s *Store) AuditEntries(ctx context.Context, from, n int64) ([][]byte, error) {
	rows, err := s.query(ctx, `SELECT idx, entry FROM audit_events WHERE idx >= ? AND idx < ? ORDER BY idx`, from, from+n)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read audit entries: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, min(n, 4096))
	for rows.Next() {
		var idx int64
		var entry []byte
		if err := rows.Scan(&idx, &entry); err != nil {
			return nil, fmt.Errorf("sqlite: read audit entries: %w", err)
		}
		if idx != from+int64(len(out)) {
			break // a gap: the caller sees a short read
		}
		out = append(out, entry)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read audit entries: %w", err)
	}
	return out, nil
}

// TreeHashes returns the hashes at indexes, in the order asked.
func (s *Store) TreeHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	found := make(map[int64][32]byte, len(indexes))
	const chunk = 500 // well under SQLite's bound-parameter limit
	for start := 0; start < len(indexes); start += chunk {
		part := indexes[start:min(start+chunk, len(indexes))]
		if err := s.readHashes(ctx, part, found); err != nil {
			return nil, err
		}
	}
	return store.OrderHashes(indexes, found)
}

func (s *Store) readHashes(ctx context.Context, indexes []int64, found map[int64][32]byte) error {
	args := make([]any, len(indexes))
	for i, x := range indexes {
		args[i] = x
	}
	q := `SELECT idx, hash FROM tree_hashes WHERE idx IN (?` + strings.Repeat(", ?", len(indexes)-1) + `)`
	rows, err := s.db.QueryContext(ctx, q, args...) // IN lists of varying length: not cached
	if err != nil {
		return fmt.Errorf("sqlite: read tree hashes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var idx int64
		var h []byte
		if err := rows.Scan(&idx, &h); err != nil {
			return fmt.Errorf("sqlite: read tree hashes: %w", err)
		}
		if len(h) != 32 {
			return fmt.Errorf("sqlite: tree hash %d has %d bytes", idx, len(h))
		}
		found[idx] = [32]byte(h)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: read tree hashes: %w", err)
	}
	return nil
}

// TreeSize returns the integrated Merkle tree size.
func (s *Store) TreeSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.queryRow(ctx, `SELECT size FROM tree_state WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: tree size: %w", err)
	}
	return n, nil
}

// LatestCheckpoint returns the checkpoint of the largest tree stored.
func (s *Store) LatestCheckpoint(ctx context.Context) (store.Checkpoint, error) {
	var c store.Checkpoint
	var created int64
	err := s.queryRow(ctx, `SELECT size, note, created_at FROM checkpoints ORDER BY size DESC, id DESC LIMIT 1`).
		Scan(&c.Size, &c.Note, &created)
	if err != nil {
		return store.Checkpoint{}, notFound(err, "checkpoint")
	}
	c.CreatedAt = fromMicros(created)
	return c, nil
}

// Tenants lists every tenant in creation order.
func (s *Store) Tenants(ctx context.Context) ([]store.Tenant, error) {
	rows, err := s.query(ctx, `SELECT id, name, created_at FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list tenants: %w", err)
	}
	return collect(rows, "tenants", func(r rowScanner) (store.Tenant, error) {
		var t store.Tenant
		var created int64
		err := r.Scan(&t.ID, &t.Name, &created)
		t.CreatedAt = fromMicros(created)
		return t, err
	})
}

// SignatureByID returns a signature by ID, whatever its tenant.
func (s *Store) SignatureByID(ctx context.Context, id string) (store.Signature, error) {
	sg, err := scanSignature(s.queryRow(ctx, selectSignatureSQL+` WHERE id = ?`, id))
	if err != nil {
		return store.Signature{}, notFound(err, "signature "+id)
	}
	return sg, nil
}

// SignaturesByRelease lists a release's signatures signed in [from, to),
// ascending by ID after the ID after.
func (s *Store) SignaturesByRelease(ctx context.Context, release string, from, to time.Time, limit int, after string) ([]store.Signature, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.query(ctx, selectSignatureSQL+` WHERE release = ? AND id > ? AND signed_at >= ? AND signed_at < ? ORDER BY id LIMIT ?`,
		release, after, micros(from), micros(to), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list signatures of release %s: %w", release, err)
	}
	return collect(rows, "signatures", scanSignature)
}

// TreeHashRange returns the hashes at storage indexes [from, to).
func (s *Store) TreeHashRange(ctx context.Context, from, to int64) ([][32]byte, error) {
	if to <= from {
		return nil, nil
	}
	rows, err := s.query(ctx, `SELECT idx, hash FROM tree_hashes WHERE idx >= ? AND idx < ? ORDER BY idx`, from, to)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read tree hashes: %w", err)
	}
	defer rows.Close()
	out := make([][32]byte, 0, min(to-from, 1<<16))
	for rows.Next() {
		var idx int64
		var h []byte
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("sqlite: read tree hashes: %w", err)
		}
		if want := from + int64(len(out)); idx != want {
			return nil, fmt.Errorf("sqlite: tree hash at storage index %d: %w", want, store.ErrNotFound)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("sqlite: tree hash %d has %d bytes", idx, len(h))
		}
		out = append(out, [32]byte(h))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read tree hashes: %w", err)
	}
	if int64(len(out)) != to-from {
		return nil, fmt.Errorf("sqlite: tree hash at storage index %d: %w", from+int64(len(out)), store.ErrNotFound)
	}
	return out, nil
}
