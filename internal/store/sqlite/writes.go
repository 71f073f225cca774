package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/countersign/countersign/internal/store"
)

const sigColumns = `id, tenant_id, idempotency_key, request_hash, key_name, key_version, format, algorithm,
	algorithm_oid, digest_algorithm, digest_oid, document_digest, document_id, signature, release, instance,
	audit_index, signed_at`

const (
	insertSignatureSQL = `INSERT INTO signatures (` + sigColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, idempotency_key) DO NOTHING`
	insertEventSQL = `INSERT INTO audit_events (idx, time, type, actor, tenant_id, release, instance, subject, entry)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	nextIndexSQL = `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events`
)

func nextIndex(ctx context.Context, tx *sql.Tx) (int64, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, nextIndexSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: next audit index: %w", err)
	}
	return n, nil
}

// eventInserter runs insertEventSQL: a prepared statement's ExecContext or
// txEvents' closure.
type eventInserter func(ctx context.Context, args ...any) (sql.Result, error)

func txEvents(tx *sql.Tx) eventInserter {
	return func(ctx context.Context, args ...any) (sql.Result, error) {
		return tx.ExecContext(ctx, insertEventSQL, args...)
	}
}

func insertEvent(ctx context.Context, exec eventInserter, idx int64, ev store.AuditEvent) error {
	if len(ev.Entry) == 0 {
		return fmt.Errorf("sqlite: audit event %q has no entry", ev.Type)
	}
	_, err := exec(ctx, idx, micros(ev.Time), ev.Type, ev.Actor, ev.TenantID,
		ev.Release, ev.Instance, ev.Subject, ev.Entry)
	if err != nil {
		return fmt.Errorf("sqlite: insert audit event %d: %w", idx, err)
	}
	return nil
}

// writeWithEvent runs fn and appends ev at the next index in one transaction.
func (s *Store) writeWithEvent(ctx context.Context, ev store.AuditEvent, fn func(tx *sql.Tx) error) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		idx, err := nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		return insertEvent(ctx, txEvents(tx), idx, ev)
	})
}

// insertNew runs an INSERT ... ON CONFLICT DO NOTHING and maps "nothing
// inserted" to store.ErrExists.
func insertNew(ctx context.Context, tx *sql.Tx, what, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("sqlite: insert %s: %w", what, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: insert %s: %w", what, err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: %s: %w", what, store.ErrExists)
	}
	return nil
}

// nz stores a nil byte slice as an empty BLOB rather than NULL.
func nz(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// CreateTenant inserts a tenant and its audit event.
func (s *Store) CreateTenant(ctx context.Context, t store.Tenant, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx) error {
		return insertNew(ctx, tx, "tenant "+t.ID,
			`INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			t.ID, t.Name, micros(t.CreatedAt))
	})
}

// CreateToken inserts an API token and its audit event.
func (s *Store) CreateToken(ctx context.Context, t store.Token, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx) error {
		return insertNew(ctx, tx, "token "+t.ID,
			`INSERT INTO tokens (id, tenant_id, secret_hash, created_at, revoked) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			t.ID, t.TenantID, nz(t.SecretHash), micros(t.CreatedAt), t.Revoked)
	})
}

// PutKeyVersion inserts the next version of a key and its audit event.
func (s *Store) PutKeyVersion(ctx context.Context, kv store.KeyVersion, ev store.AuditEvent) error {
	if err := store.CheckKeyState(kv.State); err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx) error {
		var last int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_versions WHERE tenant_id = ? AND name = ?`,
			kv.TenantID, kv.Name).Scan(&last); err != nil {
			return fmt.Errorf("sqlite: read key %s: %w", kv.Name, err)
		}
		if err := store.CheckNextVersion(kv.Name, kv.Version, last); err != nil {
			return err
		}
		return insertNew(ctx, tx, fmt.Sprintf("key %s version %d", kv.Name, kv.Version),
			`INSERT INTO key_versions (tenant_id, name, version, algorithm, provider_uri, public_key_pem, cert_chain_pem, state, created_at)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			kv.TenantID, kv.Name, kv.Version, kv.Algorithm, kv.ProviderURI, kv.PublicKeyPEM, kv.CertChainPEM, kv.State, micros(kv.CreatedAt))
	})
}

// SetKeyState changes one key version's state and records its audit event.
func (s *Store) SetKeyState(ctx context.Context, tenantID, name string, version int, state string, ev store.AuditEvent) error {
	if err := store.CheckKeyState(state); err != nil {
		return err
	}
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT state FROM key_versions WHERE tenant_id = ? AND name = ? AND version = ?`,
			tenantID, name, version).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: key %s version %d: %w", name, version, store.ErrNotFound)
		} else if err != nil {
			return fmt.Errorf("sqlite: read key %s version %d: %w", name, version, err)
		}
		if err := store.CheckKeyTransition(name, version, cur, state); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE key_versions SET state = ? WHERE tenant_id = ? AND name = ? AND version = ?`,
			state, tenantID, name, version)
		if err != nil {
			return fmt.Errorf("sqlite: set key state: %w", err)
		}
		return nil
	})
}

// SetSetting writes an installation-wide setting and its audit event.
func (s *Store) SetSetting(ctx context.Context, name, value string, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			name, value, micros(ev.Time))
		if err != nil {
			return fmt.Errorf("sqlite: set setting %s: %w", name, err)
		}
		return nil
	})
}

// CommitSignatures writes the batch in one transaction; see store.Store.
func (s *Store) CommitSignatures(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, error) {
	res := make([]store.WriteResult, len(ws))
	err := s.write(ctx, func(tx *sql.Tx) error {
		next, err := nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		insSig, err := tx.PrepareContext(ctx, insertSignatureSQL)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		defer insSig.Close()
		insEv, err := tx.PrepareContext(ctx, insertEventSQL)
		if err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		defer insEv.Close()
		for i, w := range ws {
			sg := w.Signature
			r, err := insSig.ExecContext(ctx, sg.ID, sg.TenantID, sg.IdempotencyKey, nz(sg.RequestHash), sg.KeyName,
				sg.KeyVersion, sg.Format, sg.Algorithm, sg.AlgorithmOID, sg.DigestAlgorithm, sg.DigestOID,
				nz(sg.DocumentDigest), sg.DocumentID, nz(sg.Signature), sg.Release, sg.Instance, next, micros(sg.SignedAt))
			if err != nil {
				return fmt.Errorf("sqlite: insert signature %s: %w", sg.ID, err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("sqlite: insert signature %s: %w", sg.ID, err)
			}
			if n == 0 {
				ex, err := scanSignature(tx.QueryRowContext(ctx, selectSignatureSQL+` WHERE tenant_id = ? AND idempotency_key = ?`,
					sg.TenantID, sg.IdempotencyKey))
				if err != nil {
					return fmt.Errorf("sqlite: load existing signature for %q: %w", sg.IdempotencyKey, err)
				}
				res[i] = store.WriteResult{Existing: &ex}
				continue
			}
			if err := insertEvent(ctx, insEv.ExecContext, next, w.Event); err != nil {
				return err
			}
			res[i] = store.WriteResult{AuditIndex: next}
			next++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// AppendEvents appends events in slice order and returns their indexes.
func (s *Store) AppendEvents(ctx context.Context, evs []store.AuditEvent) ([]int64, error) {
	idxs := make([]int64, len(evs))
	err := s.write(ctx, func(tx *sql.Tx) error {
		next, err := nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		for i, ev := range evs {
			if err := insertEvent(ctx, txEvents(tx), next, ev); err != nil {
				return err
			}
			idxs[i] = next
			next++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return idxs, nil
}

// PutTreeHashes records Merkle hashes and the new integrated size together.
func (s *Store) PutTreeHashes(ctx context.Context, treeSize int64, hashes []store.IndexedHash) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var cur int64
		if err := tx.QueryRowContext(ctx, `SELECT size FROM tree_state WHERE id = 1`).Scan(&cur); err != nil {
			return fmt.Errorf("sqlite: read tree size: %w", err)
		}
		if treeSize < cur {
			return fmt.Errorf("sqlite: tree size %d below integrated size %d: %w", treeSize, cur, store.ErrTreeShrink)
		}
		for _, h := range hashes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tree_hashes (idx, hash) VALUES (?, ?) ON CONFLICT (idx) DO NOTHING`,
				h.Index, h.Hash[:]); err != nil {
				return fmt.Errorf("sqlite: insert tree hash %d: %w", h.Index, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tree_state SET size = ? WHERE id = 1`, treeSize); err != nil {
			return fmt.Errorf("sqlite: set tree size: %w", err)
		}
		return nil
	})
}

// PutCheckpoint stores a signed tree head.
func (s *Store) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO checkpoints (size, note, created_at) VALUES (?, ?, ?)`,
			c.Size, c.Note, micros(c.CreatedAt))
		if err != nil {
			return fmt.Errorf("sqlite: insert checkpoint: %w", err)
		}
		return nil
	})
}
