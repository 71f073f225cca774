package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

const sigColumns = `id, tenant_id, idempotency_key, request_hash, key_name, key_version, format, algorithm,
	algorithm_oid, digest_algorithm, digest_oid, document_digest, document_id, signature, release, instance,
	audit_index, signed_at`

// insertEventsSQL appends events from parallel arrays in one statement.
const insertEventsSQL = `INSERT INTO audit_events (idx, time, type, actor, tenant_id, release, instance, subject, entry)
	SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[])`

const insertSignaturesSQL = `INSERT INTO signatures (` + sigColumns + `)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::int4[], $7::text[], $8::text[],
		$9::text[], $10::text[], $11::text[], $12::bytea[], $13::text[], $14::bytea[], $15::text[], $16::text[],
		$17::int8[], $18::timestamptz[])
	ON CONFLICT (tenant_id, idempotency_key) DO NOTHING`

// eventArgs is the column-wise form of a run of events for insertEventsSQL.
type eventArgs struct {
	idx                                            []int64
	times                                          []time.Time
	typ, actor, tenant, release, instance, subject []string
	entry                                          [][]byte
}

func (a *eventArgs) add(idx int64, ev store.AuditEvent) error {
	if len(ev.Entry) == 0 {
		return fmt.Errorf("postgres: audit event %q has no entry", ev.Type)
	}
	a.idx = append(a.idx, idx)
	a.times = append(a.times, micros(ev.Time))
	a.typ = append(a.typ, ev.Type)
	a.actor = append(a.actor, ev.Actor)
	a.tenant = append(a.tenant, ev.TenantID)
	a.release = append(a.release, ev.Release)
	a.instance = append(a.instance, ev.Instance)
	a.subject = append(a.subject, ev.Subject)
	a.entry = append(a.entry, ev.Entry)
	return nil
}

func (a *eventArgs) args() []any {
	return []any{a.idx, a.times, a.typ, a.actor, a.tenant, a.release, a.instance, a.subject, a.entry}
}

func insertEvents(ctx context.Context, tx pgx.Tx, a *eventArgs) error {
	if len(a.idx) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, insertEventsSQL, a.args()...); err != nil {
		return fmt.Errorf("postgres: insert audit events: %w", err)
	}
	return nil
}

// writeWithEvent runs fn with the index ev will get and appends ev at it,
// in the same transaction.
func (s *Store) writeWithEvent(ctx context.Context, ev store.AuditEvent, fn func(tx pgx.Tx, idx int64) error) error {
	return s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		if err := fn(tx, next); err != nil {
			return 0, err
		}
		var a eventArgs
		if err := a.add(next, ev); err != nil {
			return 0, err
		}
		return 1, insertEvents(ctx, tx, &a)
	})
}

// insertNew runs an INSERT ... ON CONFLICT DO NOTHING and maps "nothing
// inserted" to store.ErrExists.
func insertNew(ctx context.Context, tx pgx.Tx, what, query string, args ...any) error {
	tag, err := tx.Exec(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("postgres: insert %s: %w", what, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: %s: %w", what, store.ErrExists)
	}
	return nil
}

func nz(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// CreateTenant inserts a tenant and its audit event.
func (s *Store) CreateTenant(ctx context.Context, t store.Tenant, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		return insertNew(ctx, tx, "tenant "+t.ID, `INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			t.ID, t.Name, micros(t.CreatedAt))
	})
}

// CreateToken inserts an API token and its audit event.
func (s *Store) CreateToken(ctx context.Context, t store.Token, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		return insertNew(ctx, tx, "token "+t.ID,
			`INSERT INTO tokens (id, tenant_id, secret_hash, created_at, revoked) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			t.ID, t.TenantID, nz(t.SecretHash), micros(t.CreatedAt), t.Revoked)
	})
}

// PutKeyVersion inserts the next version of a key and its audit event.
func (s *Store) PutKeyVersion(ctx context.Context, kv store.KeyVersion, ev store.AuditEvent) error {
	if err := store.CheckKeyState(kv.State); err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		var last int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_versions WHERE tenant_id = $1 AND name = $2`,
			kv.TenantID, kv.Name).Scan(&last); err != nil {
			return fmt.Errorf("postgres: read key %s: %w", kv.Name, err)
		}
		if err := store.CheckNextVersion(kv.Name, kv.Version, last); err != nil {
			return err
		}
		return insertNew(ctx, tx, fmt.Sprintf("key %s version %d", kv.Name, kv.Version),
			`INSERT INTO key_versions (tenant_id, name, version, algorithm, provider_uri, public_key_pem, cert_chain_pem, state, created_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
			kv.TenantID, kv.Name, kv.Version, kv.Algorithm, kv.ProviderURI, kv.PublicKeyPEM, kv.CertChainPEM, kv.State, micros(kv.CreatedAt))
	})
}

// SetKeyState changes one key version's state and records its audit event.
func (s *Store) SetKeyState(ctx context.Context, tenantID, name string, version int, state string, ev store.AuditEvent) error {
	if err := store.CheckKeyState(state); err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		var cur string
		err := tx.QueryRow(ctx, `SELECT state FROM key_versions WHERE tenant_id = $1 AND name = $2 AND version = $3 FOR UPDATE`,
			tenantID, name, version).Scan(&cur)
		if err != nil {
			return notFound(err, fmt.Sprintf("key %s version %d", name, version))
		}
		if err := store.CheckKeyTransition(name, version, cur, state); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE key_versions SET state = $1 WHERE tenant_id = $2 AND name = $3 AND version = $4`,
			state, tenantID, name, version); err != nil {
			return fmt.Errorf("postgres: set key state: %w", err)
		}
		return nil
	})
}

// SetSetting writes an installation-wide setting and its audit event.
func (s *Store) SetSetting(ctx context.Context, name, value string, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		_, err := tx.Exec(ctx, `INSERT INTO settings (name, value, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			name, value, micros(ev.Time))
		if err != nil {
			return fmt.Errorf("postgres: set setting %s: %w", name, err)
		}
		return nil
	})
}

// AppendEvents appends events in slice order and returns their indexes.
func (s *Store) AppendEvents(ctx context.Context, evs []store.AuditEvent) ([]int64, error) {
	idxs := make([]int64, len(evs))
	err := s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		var a eventArgs
		for i, ev := range evs {
			idxs[i] = next + int64(i)
			if err := a.add(idxs[i], ev); err != nil {
				return 0, err
			}
		}
		return int64(len(evs)), insertEvents(ctx, tx, &a)
	})
	if err != nil {
		return nil, err
	}
	return idxs, nil
}

// PutTreeHashes records Merkle hashes and the new integrated size together.
func (s *Store) PutTreeHashes(ctx context.Context, treeSize int64, hashes []store.IndexedHash) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var cur int64
		if err := tx.QueryRow(ctx, `SELECT size FROM tree_state FOR UPDATE`).Scan(&cur); err != nil {
			return fmt.Errorf("postgres: read tree size: %w", err)
		}
		if treeSize < cur {
			return fmt.Errorf("postgres: tree size %d below integrated size %d: %w", treeSize, cur, store.ErrTreeShrink)
		}
		idx := make([]int64, len(hashes))
		hs := make([][]byte, len(hashes))
		for i, h := range hashes {
			idx[i], hs[i] = h.Index, h.Hash[:]
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tree_hashes (idx, hash) SELECT * FROM unnest($1::int8[], $2::bytea[])
			ON CONFLICT (idx) DO NOTHING`, idx, hs); err != nil {
			return fmt.Errorf("postgres: insert tree hashes: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE tree_state SET size = $1`, treeSize); err != nil {
			return fmt.Errorf("postgres: set tree size: %w", err)
		}
		return nil
	})
}

// PutCheckpoint stores a signed tree head.
func (s *Store) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO checkpoints (size, note, created_at) VALUES ($1, $2, $3)`,
		c.Size, nz(c.Note), micros(c.CreatedAt)); err != nil {
		return fmt.Errorf("postgres: insert checkpoint: %w", err)
	}
	return nil
}
