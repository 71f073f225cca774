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

// Multi-row insert heads and the most rows per statement (powers of two,
// keeping rows × columns far below SQLite's 32766-parameter limit).
const (
	insertSignaturesHead = `INSERT INTO signatures (` + sigColumns + `)`
	sigCols              = 18
	maxSigRows           = 256 // 4608 parameters
	insertEventsHead     = `INSERT INTO audit_events (idx, time, type, actor, tenant_id, release, instance, subject, entry)`
	eventCols            = 9
	maxEventRows         = 256 // 2304 parameters
	insertHashesHead     = `INSERT INTO tree_hashes (idx, hash)`
	maxHashRows          = 1024 // 2048 parameters
	nextIndexSQL         = `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_events`
)

func (s *Store) nextIndex(ctx context.Context, tx *sql.Tx) (int64, error) {
	var n int64
	if err := s.txQueryRow(ctx, tx, nextIndexSQL).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: next audit index: %w", err)
	}
	return n, nil
}

func eventRow(idx int64, ev store.AuditEvent) ([]any, error) {
	if len(ev.Entry) == 0 {
		return nil, fmt.Errorf("sqlite: audit event %q has no entry", ev.Type)
	}
	return []any{idx, micros(ev.Time), ev.Type, ev.Actor, ev.TenantID, ev.Release, ev.Instance, ev.Subject, ev.Entry}, nil
}

func sigRow(sg store.Signature, idx int64) []any {
	return []any{sg.ID, sg.TenantID, sg.IdempotencyKey, nz(sg.RequestHash), sg.KeyName,
		sg.KeyVersion, sg.Format, sg.Algorithm, sg.AlgorithmOID, sg.DigestAlgorithm, sg.DigestOID,
		nz(sg.DocumentDigest), sg.DocumentID, nz(sg.Signature), sg.Release, sg.Instance, idx, micros(sg.SignedAt)}
}

// insertEvent appends ev at idx.
func (s *Store) insertEvent(ctx context.Context, tx *sql.Tx, idx int64, ev store.AuditEvent) error {
	row, err := eventRow(idx, ev)
	if err != nil {
		return err
	}
	return s.execRows(ctx, tx, fmt.Sprintf("audit event %d", idx), insertEventsHead, eventCols, maxEventRows, "", [][]any{row})
}

// writeWithEvent runs fn with the index ev will get and appends ev at it,
// in one transaction.
func (s *Store) writeWithEvent(ctx context.Context, ev store.AuditEvent, fn func(tx *sql.Tx, idx int64) error) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		idx, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		if err := fn(tx, idx); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, idx, ev)
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
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
		return insertNew(ctx, tx, "tenant "+t.ID,
			`INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			t.ID, t.Name, micros(t.CreatedAt))
	})
}

// CreateToken inserts an API token and its audit event.
func (s *Store) CreateToken(ctx context.Context, t store.Token, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
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
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
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
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
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
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
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
//
// Under the write lock it loads the signatures and jobs that already hold
// the batch's idempotency keys (nobody can add one until it commits),
// settles in-batch duplicates in Go, then inserts the new signatures and
// their events with multi-row statements that bind the columns a run of
// rows shares once (sigrows.go). A key held by an unsigned async
// job fails the batch with store.ErrIdempotencyTaken (the Committer then
// retries the other writes one by one).
func (s *Store) CommitSignatures(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, error) {
	return s.commitSignatures(ctx, ws, s.db.BeginTx)
}

// commitSignatures is CommitSignatures in a transaction begun by begin (on
// the pool, or on the deferred-sync connection: deferred.go).
func (s *Store) commitSignatures(ctx context.Context, ws []store.SignatureWrite,
	begin func(context.Context, *sql.TxOptions) (*sql.Tx, error)) ([]store.WriteResult, error) {
	res := make([]store.WriteResult, len(ws))
	if len(ws) == 0 {
		return res, nil
	}
	ctx, err := txContext(ctx)
	if err != nil {
		return nil, err
	}
	err = s.writeOn(ctx, begin, func(tx *sql.Tx) error {
		next, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		keys := make([]idemKey, len(ws))
		for i, w := range ws {
			keys[i] = idemKey{w.Signature.TenantID, w.Signature.IdempotencyKey}
		}
		existing, err := s.existingSignatures(ctx, tx, keys)
		if err != nil {
			return err
		}
		jobs, err := s.jobKeys(ctx, tx, keys)
		if err != nil {
			return err
		}
		r, fresh, err := store.SettleBatch(ws, next,
			func(i int) (store.Signature, bool) { ex, ok := existing[keys[i]]; return ex, ok },
			func(i int) (string, bool) { id, ok := jobs[keys[i]]; return id, ok })
		if err != nil {
			return err
		}
		copy(res, r)
		rows := make([]newRow, len(fresh))
		for n, i := range fresh {
			rows[n] = newRow{&ws[i], r[i].AuditIndex}
		}
		return s.insertNewRows(ctx, tx, rows) // sigrows.go
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

type idemKey struct{ tenant, key string }

// keyLookupRows is the most (tenant, key) pairs per lookup statement.
const keyLookupRows = 256

// lookupKeys selects cols from table's rows holding any of keys, in cached
// chunks, and calls scan for every row. The keys are a VALUES list joined
// to table's (tenant_id, idempotency_key) unique index, CROSS JOIN fixing
// the list as the outer loop: one index search per key. (The plainer
// "WHERE (tenant_id, idempotency_key) IN (VALUES ...)" is planned as a
// scan of the whole table: every group commit then reads every signature
// ever made, and throughput falls as the table grows.)
func (s *Store) lookupKeys(ctx context.Context, tx *sql.Tx, cols, table string, keys []idemKey, scan func(rowScanner) error) error {
	head, tail := lookupSQL(cols, table)
	at := 0
	for _, n := range rowChunks(len(keys), keyLookupRows) {
		args := make([]any, 0, 2*n)
		for _, k := range keys[at : at+n] {
			args = append(args, k.tenant, k.key)
		}
		at += n
		q := s.stmts.multiRow(head, 2, n, tail)
		st, err := s.txStmt(ctx, tx, q)
		if err != nil {
			return err
		}
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// lookupSQL returns the multiRow head and tail of lookupKeys' statement.
func lookupSQL(cols, table string) (head, tail string) {
	return "SELECT " + cols + " FROM (",
		") AS v CROSS JOIN " + table + " ON " + table + ".tenant_id = v.column1 AND " + table + ".idempotency_key = v.column2"
}

func (s *Store) existingSignatures(ctx context.Context, tx *sql.Tx, keys []idemKey) (map[idemKey]store.Signature, error) {
	out := make(map[idemKey]store.Signature)
	err := s.lookupKeys(ctx, tx, sigColumns, "signatures", keys, func(r rowScanner) error {
		sg, err := scanSignature(r)
		if err == nil {
			out[idemKey{sg.TenantID, sg.IdempotencyKey}] = sg
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: look up idempotency keys: %w", err)
	}
	return out, nil
}

// jobKeys returns the jobs holding any of keys, by key.
func (s *Store) jobKeys(ctx context.Context, tx *sql.Tx, keys []idemKey) (map[idemKey]string, error) {
	out := make(map[idemKey]string)
	err := s.lookupKeys(ctx, tx, "jobs.tenant_id, jobs.idempotency_key, jobs.id", "jobs", keys, func(r rowScanner) error {
		var k idemKey
		var id string
		err := r.Scan(&k.tenant, &k.key, &id)
		out[k] = id
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: look up job idempotency keys: %w", err)
	}
	return out, nil
}

// AppendEvents appends events in slice order and returns their indexes.
func (s *Store) AppendEvents(ctx context.Context, evs []store.AuditEvent) ([]int64, error) {
	idxs := make([]int64, len(evs))
	rows := make([][]any, len(evs))
	ctx, err := txContext(ctx)
	if err != nil {
		return nil, err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		next, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		for i, ev := range evs {
			idxs[i] = next + int64(i)
			if rows[i], err = eventRow(idxs[i], ev); err != nil {
				return err
			}
		}
		return s.execRows(ctx, tx, "audit events", insertEventsHead, eventCols, maxEventRows, "", rows)
	})
	if err != nil {
		return nil, err
	}
	return idxs, nil
}

// PutTreeHashes records Merkle hashes and the new integrated size together.
func (s *Store) PutTreeHashes(ctx context.Context, treeSize int64, hashes []store.IndexedHash) error {
	ctx, err := txContext(ctx)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var cur int64
		if err := s.txQueryRow(ctx, tx, `SELECT size FROM tree_state WHERE id = 1`).Scan(&cur); err != nil {
			return fmt.Errorf("sqlite: read tree size: %w", err)
		}
		if treeSize < cur {
			return fmt.Errorf("sqlite: tree size %d below integrated size %d: %w", treeSize, cur, store.ErrTreeShrink)
		}
		rows := make([][]any, len(hashes))
		for i, h := range hashes {
			rows[i] = []any{h.Index, h.Hash[:]}
		}
		if err := s.execRows(ctx, tx, "tree hashes", insertHashesHead, 2, maxHashRows, "ON CONFLICT (idx) DO NOTHING", rows); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `UPDATE tree_state SET size = ? WHERE id = 1`, treeSize); err != nil {
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
