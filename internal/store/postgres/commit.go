package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/countersign/countersign/internal/store"
)

// CommitSignatures writes the batch in one transaction; see store.Store.
// A key held by an unsigned async job fails the batch with
// store.ErrIdempotencyTaken (the Committer retries the others one by one).
//
// It costs two round trips whatever the batch size. The first pipeline
// begins the transaction, takes the audit head lock and then (the
// statements of a pipeline run in order, so under the lock: no other writer
// can add a key until this transaction ends) loads the signatures and jobs
// already holding the batch's idempotency keys; in-batch duplicates are
// settled in Go; the second pipeline holds the inserts (sigruns.go), the
// head's advance and COMMIT. A failure anywhere rolls back (one more round
// trip); a connection left inside a transaction is never reused (pgxpool
// closes it on release).
func (s *Store) CommitSignatures(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, error) {
	res := make([]store.WriteResult, len(ws))
	if len(ws) == 0 {
		return res, nil
	}
	tenants := make([]string, len(ws))
	keys := make([]string, len(ws))
	for i := range ws {
		tenants[i], keys[i] = ws[i].Signature.TenantID, ws[i].Signature.IdempotencyKey
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: acquire connection: %w", err)
	}
	defer conn.Release()
	if err := commitSignatures(ctx, conn, ws, tenants, keys, res); err != nil {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			// Best effort: if ROLLBACK fails too, Release sees the open
			// transaction and closes the connection.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return nil, err
	}
	return res, nil
}

func commitSignatures(ctx context.Context, conn *pgxpool.Conn, ws []store.SignatureWrite, tenants, keys []string, res []store.WriteResult) error {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SELECT next FROM audit_head FOR UPDATE`)
	b.Queue(existingSignaturesSQL, tenants, keys)
	b.Queue(jobKeysSQL, tenants, keys)
	br := conn.SendBatch(ctx, b)
	_, err := br.Exec()
	if err != nil {
		err = fmt.Errorf("postgres: begin: %w", err)
	}
	var (
		next     int64
		existing map[idemKey]store.Signature
		jobs     map[idemKey]string
	)
	if err == nil {
		next, existing, jobs, err = readLookups(br)
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("postgres: look up idempotency keys: %w", cerr)
	}
	if err != nil {
		return err
	}
	r, fresh, err := store.SettleBatch(ws, next,
		func(i int) (store.Signature, bool) { ex, ok := existing[idemKey{tenants[i], keys[i]}]; return ex, ok },
		func(i int) (string, bool) { id, ok := jobs[idemKey{tenants[i], keys[i]}]; return id, ok })
	if err != nil {
		return err
	}
	copy(res, r)
	rows := make([]newRow, len(fresh))
	for n, i := range fresh {
		if len(ws[i].Event.Entry) == 0 {
			return fmt.Errorf("postgres: audit event %q has no entry", ws[i].Event.Type)
		}
		rows[n] = newRow{&ws[i], r[i].AuditIndex}
	}
	if len(rows) == 0 {
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			return fmt.Errorf("postgres: commit: %w", err)
		}
		return nil
	}
	return insertRows(ctx, conn, rows, next+int64(len(rows)))
}

type idemKey struct{ tenant, key string }

// The key lookups probe the unique (tenant_id, idempotency_key) index once
// per key, whatever the planner thinks of the table. Written as
// "(tenant_id, idempotency_key) IN (SELECT * FROM unnest(...))" they were
// planned as a hash join over a sequential scan of the whole table once a
// commit carried a few hundred keys (random_page_cost makes hundreds of
// index probes look dearer than one scan): every batch commit read every
// signature ever made, and its cost grew with the table (at 130,000
// signatures, 47 µs of PostgreSQL CPU per signature; docs/benchmarks.md).
// A LATERAL subquery with a LIMIT is never flattened into a join, so each
// key is one index probe (docs/design/postgres-query-plans.md).
const (
	existingSignaturesSQL = `SELECT s.* FROM unnest($1::text[], $2::text[]) AS k(t, i)
		CROSS JOIN LATERAL (` + selectSignatureSQL + ` WHERE tenant_id = k.t AND idempotency_key = k.i LIMIT 1) AS s`
	jobKeysSQL = `SELECT j.tenant_id, j.idempotency_key, j.id FROM unnest($1::text[], $2::text[]) AS k(t, i)
		CROSS JOIN LATERAL (SELECT tenant_id, idempotency_key, id FROM jobs
			WHERE tenant_id = k.t AND idempotency_key = k.i LIMIT 1) AS j`
)

// readLookups reads the results of CommitSignatures' first pipeline: the
// next audit index, the signatures and the jobs holding the keys.
func readLookups(br pgx.BatchResults) (next int64, existing map[idemKey]store.Signature, jobs map[idemKey]string, err error) {
	if err := br.QueryRow().Scan(&next); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: lock audit head: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
	}
	existing = make(map[idemKey]store.Signature)
	for rows.Next() {
		sg, err := scanSignature(rows)
		if err != nil {
			rows.Close()
			return 0, nil, nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
		}
		existing[idemKey{sg.TenantID, sg.IdempotencyKey}] = sg
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
	}
	if rows, err = br.Query(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
	}
	jobs = make(map[idemKey]string)
	for rows.Next() {
		var k idemKey
		var id string
		if err := rows.Scan(&k.tenant, &k.key, &id); err != nil {
			rows.Close()
			return 0, nil, nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
		}
		jobs[k] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
	}
	return next, existing, jobs, nil
}

// sigArgs is the column-wise form of signatures for insertSignaturesSQL.
type sigArgs struct {
	id, tenant, idem                                    []string
	reqHash, docDigest, sig                             [][]byte
	keyName, format, alg, algOID, digAlg, digOID, docID []string
	release, instance                                   []string
	keyVersion                                          []int32
	auditIndex                                          []int64
	signedAt                                            []time.Time
}

func (a *sigArgs) add(s store.Signature, idx int64) {
	a.id = append(a.id, s.ID)
	a.tenant = append(a.tenant, s.TenantID)
	a.idem = append(a.idem, s.IdempotencyKey)
	a.reqHash = append(a.reqHash, nz(s.RequestHash))
	a.keyName = append(a.keyName, s.KeyName)
	a.keyVersion = append(a.keyVersion, int32(s.KeyVersion))
	a.format = append(a.format, s.Format)
	a.alg = append(a.alg, s.Algorithm)
	a.algOID = append(a.algOID, s.AlgorithmOID)
	a.digAlg = append(a.digAlg, s.DigestAlgorithm)
	a.digOID = append(a.digOID, s.DigestOID)
	a.docDigest = append(a.docDigest, nz(s.DocumentDigest))
	a.docID = append(a.docID, s.DocumentID)
	a.sig = append(a.sig, nz(s.Signature))
	a.release = append(a.release, s.Release)
	a.instance = append(a.instance, s.Instance)
	a.auditIndex = append(a.auditIndex, idx)
	a.signedAt = append(a.signedAt, micros(s.SignedAt))
}

func (a *sigArgs) args() []any {
	return []any{a.id, a.tenant, a.idem, a.reqHash, a.keyName, a.keyVersion, a.format, a.alg, a.algOID,
		a.digAlg, a.digOID, a.docDigest, a.docID, a.sig, a.release, a.instance, a.auditIndex, a.signedAt}
}
