package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

const selectSignatureSQL = `SELECT ` + sigColumns + ` FROM signatures`

func scanSignature(r pgx.Row) (store.Signature, error) {
	var sg store.Signature
	var signedAt time.Time
	var kv int32
	err := r.Scan(&sg.ID, &sg.TenantID, &sg.IdempotencyKey, &sg.RequestHash, &sg.KeyName, &kv,
		&sg.Format, &sg.Algorithm, &sg.AlgorithmOID, &sg.DigestAlgorithm, &sg.DigestOID, &sg.DocumentDigest,
		&sg.DocumentID, &sg.Signature, &sg.Release, &sg.Instance, &sg.AuditIndex, &signedAt)
	if err != nil {
		return store.Signature{}, err
	}
	sg.KeyVersion = int(kv)
	sg.SignedAt = signedAt.UTC()
	return sg, nil
}

// Tenant returns one tenant.
func (s *Store) Tenant(ctx context.Context, id string) (store.Tenant, error) {
	t := store.Tenant{ID: id}
	if err := s.pool.QueryRow(ctx, `SELECT name, created_at FROM tenants WHERE id = $1`, id).Scan(&t.Name, &t.CreatedAt); err != nil {
		return store.Tenant{}, notFound(err, "tenant "+id)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

// Token returns one API token (revoked ones too: the caller checks).
func (s *Store) Token(ctx context.Context, id string) (store.Token, error) {
	t := store.Token{ID: id}
	err := s.pool.QueryRow(ctx, `SELECT tenant_id, secret_hash, created_at, revoked FROM tokens WHERE id = $1`, id).
		Scan(&t.TenantID, &t.SecretHash, &t.CreatedAt, &t.Revoked)
	if err != nil {
		return store.Token{}, notFound(err, "token "+id)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

const selectKeySQL = `SELECT tenant_id, name, version, algorithm, provider_uri, public_key_pem, cert_chain_pem, state, created_at
	FROM key_versions`

func (s *Store) keys(ctx context.Context, where string, args ...any) ([]store.KeyVersion, error) {
	rows, err := s.pool.Query(ctx, selectKeySQL+" "+where+" ORDER BY name, version", args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list keys: %w", err)
	}
	defer rows.Close()
	var out []store.KeyVersion
	for rows.Next() {
		var kv store.KeyVersion
		var v int32
		if err := rows.Scan(&kv.TenantID, &kv.Name, &v, &kv.Algorithm, &kv.ProviderURI,
			&kv.PublicKeyPEM, &kv.CertChainPEM, &kv.State, &kv.CreatedAt); err != nil {
			return nil, fmt.Errorf("postgres: list keys: %w", err)
		}
		kv.Version = int(v)
		kv.CreatedAt = kv.CreatedAt.UTC()
		out = append(out, kv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list keys: %w", err)
	}
	return out, nil
}

// KeyVersions returns every version of one key, ascending.
func (s *Store) KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error) {
	kvs, err := s.keys(ctx, "WHERE tenant_id = $1 AND name = $2", tenantID, name)
	if err != nil {
		return nil, err
	}
	if len(kvs) == 0 {
		return nil, fmt.Errorf("postgres: key %s: %w", name, store.ErrNotFound)
	}
	return kvs, nil
}

// ListKeys returns every version of every key of a tenant.
func (s *Store) ListKeys(ctx context.Context, tenantID string) ([]store.KeyVersion, error) {
	return s.keys(ctx, "WHERE tenant_id = $1", tenantID)
}

// Setting returns a setting's value, "" when unset.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("postgres: read setting %s: %w", name, err)
	}
	return v, nil
}

// SignatureByIdempotencyKey returns a tenant's signature by idempotency key.
func (s *Store) SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Signature, error) {
	sg, err := scanSignature(s.pool.QueryRow(ctx, selectSignatureSQL+` WHERE tenant_id = $1 AND idempotency_key = $2`, tenantID, key))
	if err != nil {
		return store.Signature{}, notFound(err, "signature for idempotency key "+key)
	}
	return sg, nil
}

// Signature returns a tenant's signature by ID.
func (s *Store) Signature(ctx context.Context, tenantID, id string) (store.Signature, error) {
	sg, err := scanSignature(s.pool.QueryRow(ctx, selectSignatureSQL+` WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if err != nil {
		return store.Signature{}, notFound(err, "signature "+id)
	}
	return sg, nil
}

// Signatures lists signatures with AuditIndex in [fromIndex, toIndex), all
// tenants, ascending; limit <= 0 means no limit.
func (s *Store) Signatures(ctx context.Context, fromIndex, toIndex int64, limit int) ([]store.Signature, error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := s.pool.Query(ctx, selectSignatureSQL+` WHERE audit_index >= $1 AND audit_index < $2 ORDER BY audit_index LIMIT $3`,
		fromIndex, toIndex, lim)
	if err != nil {
		return nil, fmt.Errorf("postgres: list signatures: %w", err)
	}
	defer rows.Close()
	var out []store.Signature
	for rows.Next() {
		sg, err := scanSignature(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: list signatures: %w", err)
		}
		out = append(out, sg)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list signatures: %w", err)
	}
	return out, nil
}

// AuditSize is the number of committed audit events.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: audit size: %w", err)
	}
	return n, nil
}

// AuditEntries returns the entries of events [from, from+n); see
// store.AuditEntryReader.
func (s *Store) AuditEntries(ctx context.Context, from, n int64) ([][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT idx, entry FROM audit_events WHERE idx >= $1 AND idx < $2 ORDER BY idx`, from, from+n)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit entries: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, min(n, 4096))
	for rows.Next() {
		var idx int64
		var entry []byte
		if err := rows.Scan(&idx, &entry); err != nil {
			return nil, fmt.Errorf("postgres: read audit entries: %w", err)
		}
		if idx != from+int64(len(out)) {
			break // a gap: the caller sees a short read
		}
		out = append(out, entry)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read audit entries: %w", err)
	}
	return out, nil
}

// AuditEvents returns events with Index in [from, from+n), ascending.
func (s *Store) AuditEvents(ctx context.Context, from, n int64) ([]store.AuditEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT idx, time, type, actor, tenant_id, release, instance, subject, entry
		FROM audit_events WHERE idx >= $1 AND idx < $2 ORDER BY idx`, from, from+n)
	if err != nil {
		return nil, fmt.Errorf("postgres: read audit events: %w", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var ev store.AuditEvent
		if err := rows.Scan(&ev.Index, &ev.Time, &ev.Type, &ev.Actor, &ev.TenantID, &ev.Release, &ev.Instance,
			&ev.Subject, &ev.Entry); err != nil {
			return nil, fmt.Errorf("postgres: read audit events: %w", err)
		}
		ev.Time = ev.Time.UTC()
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read audit events: %w", err)
	}
	return out, nil
}

// TreeHashes returns the hashes at indexes, in the order asked.
func (s *Store) TreeHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT idx, hash FROM tree_hashes WHERE idx = ANY($1)`, indexes)
	if err != nil {
		return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
	}
	defer rows.Close()
	found := make(map[int64][32]byte, len(indexes))
	for rows.Next() {
		var idx int64
		var h []byte
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("postgres: tree hash %d has %d bytes", idx, len(h))
		}
		found[idx] = [32]byte(h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
	}
	return store.OrderHashes(indexes, found)
}

// TreeSize returns the integrated Merkle tree size.
func (s *Store) TreeSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT size FROM tree_state`).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: tree size: %w", err)
	}
	return n, nil
}

// LatestCheckpoint returns the checkpoint of the largest tree stored.
func (s *Store) LatestCheckpoint(ctx context.Context) (store.Checkpoint, error) {
	var c store.Checkpoint
	err := s.pool.QueryRow(ctx, `SELECT size, note, created_at FROM checkpoints ORDER BY size DESC, id DESC LIMIT 1`).
		Scan(&c.Size, &c.Note, &c.CreatedAt)
	if err != nil {
		return store.Checkpoint{}, notFound(err, "checkpoint")
	}
	c.CreatedAt = c.CreatedAt.UTC()
	return c, nil
}

// Tenants lists every tenant in creation order.
func (s *Store) Tenants(ctx context.Context) ([]store.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, created_at FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list tenants: %w", err)
	}
	return collect(rows, "tenants", func(r pgx.Row) (store.Tenant, error) {
		var t store.Tenant
		err := r.Scan(&t.ID, &t.Name, &t.CreatedAt)
		t.CreatedAt = t.CreatedAt.UTC()
		return t, err
	})
}

// SignatureByID returns a signature by ID, whatever its tenant.
func (s *Store) SignatureByID(ctx context.Context, id string) (store.Signature, error) {
	sg, err := scanSignature(s.pool.QueryRow(ctx, selectSignatureSQL+` WHERE id = $1`, id))
	if err != nil {
		return store.Signature{}, notFound(err, "signature "+id)
	}
	return sg, nil
}

// SignaturesByRelease lists a release's signatures signed in [from, to),
// ascending by ID after the ID after. IDs compare bytewise (COLLATE "C",
// as in SQLite) so pages do not depend on the database's locale.
func (s *Store) SignaturesByRelease(ctx context.Context, release string, from, to time.Time, limit int, after string) ([]store.Signature, error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := s.pool.Query(ctx, selectSignatureSQL+` WHERE release = $1 AND id COLLATE "C" > $2 AND signed_at >= $3 AND signed_at < $4
		ORDER BY id COLLATE "C" LIMIT $5`, release, after, micros(from), micros(to), lim)
	if err != nil {
		return nil, fmt.Errorf("postgres: list signatures of release %s: %w", release, err)
	}
	return collect(rows, "signatures", scanSignature)
}

// TreeHashRange returns the hashes at storage indexes [from, to).
func (s *Store) TreeHashRange(ctx context.Context, from, to int64) ([][32]byte, error) {
	if to <= from {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT idx, hash FROM tree_hashes WHERE idx >= $1 AND idx < $2 ORDER BY idx`, from, to)
	if err != nil {
		return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
	}
	defer rows.Close()
	out := make([][32]byte, 0, min(to-from, 1<<16))
	for rows.Next() {
		var idx int64
		var h []byte
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
		}
		if want := from + int64(len(out)); idx != want {
			return nil, fmt.Errorf("postgres: tree hash at storage index %d: %w", want, store.ErrNotFound)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("postgres: tree hash %d has %d bytes", idx, len(h))
		}
		out = append(out, [32]byte(h))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read tree hashes: %w", err)
	}
	if int64(len(out)) != to-from {
		return nil, fmt.Errorf("postgres: tree hash at storage index %d: %w", from+int64(len(out)), store.ErrNotFound)
	}
	return out, nil
}
