package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/countersign/countersign/internal/store"
)

// A group commit's rows mostly agree on half their columns (one node, one
// tenant, one key). Consecutive rows that agree on them (a run) are
// inserted with statements that send the shared values once, as scalar
// parameters, and only the varying ones as arrays: encoding arrays is the
// driver's main cost per row (8 arrays instead of 18 per signature
// statement, 4 instead of 9 per event statement).

// runShared are the signature and event columns a run shares.
type runShared struct {
	tenant, keyName                     string
	keyVersion                          int
	format, alg, algOID, digAlg, digOID string
	release, instance                   string
	evType, evActor, evTenant           string
	evRelease, evInstance               string
}

func sharedOf(w *store.SignatureWrite) runShared {
	s, e := &w.Signature, &w.Event
	return runShared{s.TenantID, s.KeyName, s.KeyVersion, s.Format, s.Algorithm, s.AlgorithmOID, s.DigestAlgorithm,
		s.DigestOID, s.Release, s.Instance, e.Type, e.Actor, e.TenantID, e.Release, e.Instance}
}

const insertSigRunSQL = `INSERT INTO signatures (` + sigColumns + `)
	SELECT u.id, $1::text, u.idem, u.rh, $2::text, $3::int4, $4::text, $5::text, $6::text, $7::text, $8::text,
		u.dd, u.docid, u.sig, $9::text, $10::text, u.ai, u.sa
	FROM unnest($11::text[], $12::text[], $13::bytea[], $14::bytea[], $15::text[], $16::bytea[], $17::int8[], $18::timestamptz[])
		AS u(id, idem, rh, dd, docid, sig, ai, sa)`

// A plain INSERT, not ON CONFLICT DO NOTHING: the keys were looked up under
// the audit head lock, so a conflict means a writer bypassed that lock, and
// the error that aborts the transaction says so. Speculative insertion cost
// an index probe and a WAL record per row (about 3 µs of PostgreSQL CPU per
// signature, docs/benchmarks.md) to turn that error into a row count.

const insertEvRunSQL = `INSERT INTO audit_events (idx, time, type, actor, tenant_id, release, instance, subject, entry)
	SELECT u.idx, u.t, $1::text, $2::text, $3::text, $4::text, $5::text, u.subject, u.entry
	FROM unnest($6::int8[], $7::timestamptz[], $8::text[], $9::bytea[]) AS u(idx, t, subject, entry)`

// newRow is a signature to insert at an audit index.
type newRow struct {
	w   *store.SignatureWrite
	idx int64
}

// insertRows inserts rows (in audit index order) run by run, moves the
// audit head to next and commits the transaction conn has begun, in one
// pipeline.
func insertRows(ctx context.Context, conn *pgxpool.Conn, rows []newRow, next int64) error {
	b := &pgx.Batch{}
	var runs []int
	for rest := rows; len(rest) > 0; {
		sh := sharedOf(rest[0].w)
		n := 1
		for n < len(rest) && sharedOf(rest[n].w) == sh {
			n++
		}
		queueRun(b, &sh, rest[:n])
		runs = append(runs, n)
		rest = rest[n:]
	}
	b.Queue(`UPDATE audit_head SET next = $1`, next)
	b.Queue(`COMMIT`)
	br := conn.SendBatch(ctx, b)
	err := func() error {
		for _, n := range runs {
			tag, err := br.Exec()
			if err == nil && tag.RowsAffected() != int64(n) {
				err = fmt.Errorf("inserted %d signatures, expected %d", tag.RowsAffected(), n)
			}
			if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == uniqueViolation &&
				pe.ConstraintName == idempotencyConstraint {
				err = fmt.Errorf("%w (a writer bypassed the audit head lock)", err)
			}
			if err != nil {
				return fmt.Errorf("postgres: insert signatures: %w", err)
			}
			if _, err := br.Exec(); err != nil {
				return fmt.Errorf("postgres: insert audit events: %w", err)
			}
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: advance audit head: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("postgres: commit: %w", err)
		}
		return nil
	}()
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("postgres: commit batch: %w", cerr)
	}
	return err
}

const (
	// uniqueViolation is SQLSTATE unique_violation.
	uniqueViolation = "23505"
	// idempotencyConstraint is UNIQUE (tenant_id, idempotency_key) of
	// signatures, as PostgreSQL names it (migration 1).
	idempotencyConstraint = "signatures_tenant_id_idempotency_key_key"
)

// queueRun queues the two inserts of a run sharing sh.
func queueRun(b *pgx.Batch, sh *runShared, run []newRow) {
	n := len(run)
	ids, idems, docIDs := make([]string, n), make([]string, n), make([]string, n)
	rhs, dds, sigs := make([][]byte, n), make([][]byte, n), make([][]byte, n)
	idxs := make([]int64, n)
	ats, evAts := make([]time.Time, n), make([]time.Time, n)
	subjects := make([]string, n)
	entries := make([][]byte, n)
	for i, r := range run {
		sg, ev := &r.w.Signature, &r.w.Event
		ids[i], idems[i], docIDs[i] = sg.ID, sg.IdempotencyKey, sg.DocumentID
		rhs[i], dds[i], sigs[i] = nz(sg.RequestHash), nz(sg.DocumentDigest), nz(sg.Signature)
		idxs[i], ats[i] = r.idx, micros(sg.SignedAt)
		evAts[i], subjects[i], entries[i] = micros(ev.Time), ev.Subject, ev.Entry
	}
	b.Queue(insertSigRunSQL, sh.tenant, sh.keyName, int32(sh.keyVersion), sh.format, sh.alg, sh.algOID, sh.digAlg, sh.digOID,
		sh.release, sh.instance, ids, idems, rhs, dds, docIDs, sigs, idxs, ats)
	b.Queue(insertEvRunSQL, sh.evType, sh.evActor, sh.evTenant, sh.evRelease, sh.evInstance, idxs, evAts, subjects, entries)
}
