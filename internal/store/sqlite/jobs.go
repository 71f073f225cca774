package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/store"
)

const jobColumns = `id, tenant_id, idempotency_key, request_hash, request, state, signature_id, error, callback_url,
	release, instance, accepted_at, finished_at, attempts`

const selectJobSQL = `SELECT ` + jobColumns + ` FROM jobs`

func scanJob(r rowScanner) (store.Job, error) {
	var j store.Job
	var accepted int64
	var finished sql.NullInt64
	err := r.Scan(&j.ID, &j.TenantID, &j.IdempotencyKey, &j.RequestHash, &j.Request, &j.State, &j.SignatureID,
		&j.Error, &j.CallbackURL, &j.Release, &j.Instance, &accepted, &finished, &j.Attempts)
	if err != nil {
		return store.Job{}, err
	}
	j.AcceptedAt, j.FinishedAt = fromMicros(accepted), fromNullMicros(finished)
	return j, nil
}

// CreateJob inserts an accepted job and its audit event; see store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j store.Job, ev store.AuditEvent) (*store.Job, error) {
	j, err := store.CheckNewJob(j)
	if err != nil {
		return nil, err
	}
	var existing *store.Job
	err = s.write(ctx, func(tx *sql.Tx) error {
		ex, err := scanJob(s.txQueryRow(ctx, tx, selectJobSQL+` WHERE tenant_id = ? AND idempotency_key = ?`, j.TenantID, j.IdempotencyKey))
		switch {
		case err == nil:
			existing = &ex
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: look up job key %q: %w", j.IdempotencyKey, err)
		}
		var sigID string
		err = s.txQueryRow(ctx, tx, `SELECT id FROM signatures WHERE tenant_id = ? AND idempotency_key = ?`,
			j.TenantID, j.IdempotencyKey).Scan(&sigID)
		switch {
		case err == nil:
			return fmt.Errorf("%w: tenant %s key %q already has synchronous signature %s", store.ErrIdempotencyTaken, j.TenantID, j.IdempotencyKey, sigID)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: look up signature key %q: %w", j.IdempotencyKey, err)
		}
		if err := insertNew(ctx, tx, "job "+j.ID, `INSERT INTO jobs (`+jobColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			j.ID, j.TenantID, j.IdempotencyKey, nz(j.RequestHash), nz(j.Request), j.State, j.SignatureID, j.Error,
			j.CallbackURL, j.Release, j.Instance, micros(j.AcceptedAt), nullMicros(j.FinishedAt), j.Attempts); err != nil {
			return err
		}
		idx, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, idx, ev)
	})
	if err != nil {
		return nil, err
	}
	return existing, nil
}

func (s *Store) jobTx(ctx context.Context, tx *sql.Tx, jobID string) (store.Job, error) {
	j, err := scanJob(s.txQueryRow(ctx, tx, selectJobSQL+` WHERE id = ?`, jobID))
	if err != nil {
		return store.Job{}, notFound(err, "job "+jobID)
	}
	return j, nil
}

// CompleteJob commits the job's signature, its event and the job's
// transition to signed in one transaction; see store.JobStore.
func (s *Store) CompleteJob(ctx context.Context, jobID string, w store.SignatureWrite) (store.WriteResult, error) {
	var res store.WriteResult
	err := s.write(ctx, func(tx *sql.Tx) error {
		j, err := s.jobTx(ctx, tx, jobID)
		if err != nil {
			return err
		}
		switch j.State {
		case store.JobSigned:
			sg, err := scanSignature(s.txQueryRow(ctx, tx, selectSignatureSQL+` WHERE id = ?`, j.SignatureID))
			if err != nil {
				return notFound(err, "signature "+j.SignatureID+" of job "+jobID)
			}
			res.Existing = &sg
			return nil
		case store.JobFailed:
			return fmt.Errorf("%w: job %s has failed and cannot be signed", store.ErrJobState, jobID)
		}
		if err := store.CheckCompletion(j, w); err != nil {
			return err
		}
		var sigID string
		err = s.txQueryRow(ctx, tx, `SELECT id FROM signatures WHERE tenant_id = ? AND idempotency_key = ?`,
			j.TenantID, j.IdempotencyKey).Scan(&sigID)
		switch {
		case err == nil:
			return fmt.Errorf("%w: job %s: key %q already has signature %s", store.ErrIdempotencyTaken, jobID, j.IdempotencyKey, sigID)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite: look up signature key %q: %w", j.IdempotencyKey, err)
		}
		idx, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		ev, err := eventRow(idx, w.Event)
		if err != nil {
			return err
		}
		if err := s.execRows(ctx, tx, "signature "+w.Signature.ID, insertSignaturesHead, sigCols, maxSigRows, "",
			[][]any{sigRow(w.Signature, idx)}); err != nil {
			return err
		}
		if err := s.execRows(ctx, tx, "audit event", insertEventsHead, eventCols, maxEventRows, "", [][]any{ev}); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `UPDATE jobs SET state = ?, signature_id = ?, finished_at = ? WHERE id = ?`,
			store.JobSigned, w.Signature.ID, micros(w.Signature.SignedAt), jobID); err != nil {
			return fmt.Errorf("sqlite: mark job %s signed: %w", jobID, err)
		}
		res.AuditIndex = idx
		return nil
	})
	if err != nil {
		return store.WriteResult{}, err
	}
	return res, nil
}

// FailJob moves an accepted job to failed with its event.
func (s *Store) FailJob(ctx context.Context, jobID string, problem []byte, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx *sql.Tx, _ int64) error {
		j, err := s.jobTx(ctx, tx, jobID)
		if err != nil {
			return err
		}
		if j.State != store.JobAccepted {
			return fmt.Errorf("%w: job %s is %s; only an accepted job can fail", store.ErrJobState, jobID, j.State)
		}
		if _, err := s.txExec(ctx, tx, `UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?`,
			store.JobFailed, string(problem), micros(ev.Time), jobID); err != nil {
			return fmt.Errorf("sqlite: mark job %s failed: %w", jobID, err)
		}
		return nil
	})
}

// IncrementJobAttempts counts a delivery and returns the new count.
func (s *Store) IncrementJobAttempts(ctx context.Context, jobID string) (int, error) {
	var n int
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := s.txQueryRow(ctx, tx, `UPDATE jobs SET attempts = attempts + 1 WHERE id = ? RETURNING attempts`, jobID).Scan(&n)
		if err != nil {
			return notFound(err, "job "+jobID)
		}
		return nil
	})
	return n, err
}

// Job returns a tenant's job by ID.
func (s *Store) Job(ctx context.Context, tenantID, id string) (store.Job, error) {
	j, err := scanJob(s.queryRow(ctx, selectJobSQL+` WHERE tenant_id = ? AND id = ?`, tenantID, id))
	if err != nil {
		return store.Job{}, notFound(err, "job "+id)
	}
	return j, nil
}

// JobByIdempotencyKey returns a tenant's job by idempotency key.
func (s *Store) JobByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Job, error) {
	j, err := scanJob(s.queryRow(ctx, selectJobSQL+` WHERE tenant_id = ? AND idempotency_key = ?`, tenantID, key))
	if err != nil {
		return store.Job{}, notFound(err, "job for idempotency key "+key)
	}
	return j, nil
}

// JobsByState lists jobs in state accepted in [from, to), oldest first.
func (s *Store) JobsByState(ctx context.Context, state string, from, to time.Time, limit int) ([]store.Job, error) {
	if err := store.CheckJobState(state); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.query(ctx, selectJobSQL+` WHERE state = ? AND accepted_at >= ? AND accepted_at < ? ORDER BY accepted_at, id LIMIT ?`,
		state, micros(from), micros(to), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list jobs: %w", err)
	}
	return collect(rows, "jobs", scanJob)
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, what string, scan func(rowScanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list %s: %w", what, err)
	}
	return out, nil
}
