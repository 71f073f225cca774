package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

// CommitSignatures writes the batch in one transaction; see store.Store.
// A key held by an unsigned async job fails the batch with
// store.ErrIdempotencyTaken (the Committer retries the others one by one).
//
// Under the audit head lock it loads, in one query, the signatures that
// already hold any of the batch's idempotency keys (no other writer can add
// one until this transaction ends), settles in-batch duplicates in Go, then
// inserts the new signatures and their events with one multi-row statement
// each: a constant number of round trips per batch.
func (s *Store) CommitSignatures(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, error) {
	res := make([]store.WriteResult, len(ws))
	if len(ws) == 0 {
		return res, nil
	}
	err := s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		existing, err := existingSignatures(ctx, tx, ws)
		if err != nil {
			return 0, err
		}
		jobs, err := jobKeys(ctx, tx, ws)
		if err != nil {
			return 0, err
		}
		var sa sigArgs
		var ea eventArgs
		firstInBatch := make(map[idemKey]int, len(ws))
		n := int64(0)
		for i, w := range ws {
			k := idemKey{w.Signature.TenantID, w.Signature.IdempotencyKey}
			if ex, ok := existing[k]; ok {
				res[i] = store.WriteResult{Existing: &ex}
				continue
			}
			if jobID, ok := jobs[k]; ok {
				return 0, store.TakenByJobError(k.tenant, k.key, jobID)
			}
			if j, ok := firstInBatch[k]; ok {
				ex := ws[j].Signature
				ex.AuditIndex = res[j].AuditIndex
				ex.SignedAt = micros(ex.SignedAt)
				res[i] = store.WriteResult{Existing: &ex}
				continue
			}
			firstInBatch[k] = i
			idx := next + n
			sa.add(w.Signature, idx)
			if err := ea.add(idx, w.Event); err != nil {
				return 0, err
			}
			res[i] = store.WriteResult{AuditIndex: idx}
			n++
		}
		if n == 0 {
			return 0, nil
		}
		b := &pgx.Batch{}
		b.Queue(insertSignaturesSQL, sa.args()...)
		b.Queue(insertEventsSQL, ea.args()...)
		br := tx.SendBatch(ctx, b)
		tag, err := br.Exec()
		if err == nil && tag.RowsAffected() != n {
			err = fmt.Errorf("inserted %d signatures, expected %d (a writer bypassed the audit head lock)", tag.RowsAffected(), n)
		}
		if err != nil {
			br.Close()
			return 0, fmt.Errorf("postgres: insert signatures: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			br.Close()
			return 0, fmt.Errorf("postgres: insert audit events: %w", err)
		}
		if err := br.Close(); err != nil {
			return 0, fmt.Errorf("postgres: commit batch: %w", err)
		}
		return n, nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

type idemKey struct{ tenant, key string }

func existingSignatures(ctx context.Context, tx pgx.Tx, ws []store.SignatureWrite) (map[idemKey]store.Signature, error) {
	tenants := make([]string, len(ws))
	keys := make([]string, len(ws))
	for i, w := range ws {
		tenants[i], keys[i] = w.Signature.TenantID, w.Signature.IdempotencyKey
	}
	rows, err := tx.Query(ctx, selectSignatureSQL+` WHERE (tenant_id, idempotency_key) IN
		(SELECT * FROM unnest($1::text[], $2::text[]))`, tenants, keys)
	if err != nil {
		return nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
	}
	defer rows.Close()
	out := make(map[idemKey]store.Signature)
	for rows.Next() {
		sg, err := scanSignature(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
		}
		out[idemKey{sg.TenantID, sg.IdempotencyKey}] = sg
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: look up idempotency keys: %w", err)
	}
	return out, nil
}

// jobKeys returns the jobs holding any of the batch's keys, by key.
func jobKeys(ctx context.Context, tx pgx.Tx, ws []store.SignatureWrite) (map[idemKey]string, error) {
	tenants := make([]string, len(ws))
	keys := make([]string, len(ws))
	for i, w := range ws {
		tenants[i], keys[i] = w.Signature.TenantID, w.Signature.IdempotencyKey
	}
	rows, err := tx.Query(ctx, `SELECT tenant_id, idempotency_key, id FROM jobs WHERE (tenant_id, idempotency_key) IN
		(SELECT * FROM unnest($1::text[], $2::text[]))`, tenants, keys)
	if err != nil {
		return nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
	}
	defer rows.Close()
	out := make(map[idemKey]string)
	for rows.Next() {
		var k idemKey
		var id string
		if err := rows.Scan(&k.tenant, &k.key, &id); err != nil {
			return nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
		}
		out[k] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: look up job idempotency keys: %w", err)
	}
	return out, nil
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
