package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store"
)

const jobColumns = `id, tenant_id, idempotency_key, request_hash, request, state, signature_id, error, callback_url,
	release, instance, accepted_at, finished_at, attempts`

const selectJobSQL = `SELECT ` + jobColumns + ` FROM jobs`

func scanJob(r pgx.Row) (store.Job, error) {
	var j store.Job
	var finished *time.Time
	var attempts int32
	err := r.Scan(&j.ID, &j.TenantID, &j.IdempotencyKey, &j.RequestHash, &j.Request, &j.State, &j.SignatureID,
		&j.Error, &j.CallbackURL, &j.Release, &j.Instance, &j.AcceptedAt, &finished, &attempts)
	if err != nil {
		return store.Job{}, err
	}
	j.AcceptedAt, j.FinishedAt, j.Attempts = j.AcceptedAt.UTC(), fromNullTime(finished), int(attempts)
	return j, nil
}

// CreateJob inserts an accepted job and its audit event; see store.JobStore.
// It runs under the audit head lock, as CommitSignatures does, so the two
// see each other's idempotency keys.
func (s *Store) CreateJob(ctx context.Context, j store.Job, ev store.AuditEvent) (*store.Job, error) {
	j, err := store.CheckNewJob(j)
	if err != nil {
		return nil, err
	}
	var existing *store.Job
	err = s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		ex, err := scanJob(tx.QueryRow(ctx, selectJobSQL+` WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey))
		switch {
		case err == nil:
			existing = &ex
			return 0, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("postgres: look up job key %q: %w", j.IdempotencyKey, err)
		}
		var sigID string
		err = tx.QueryRow(ctx, `SELECT id FROM signatures WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey).Scan(&sigID)
		switch {
		case err == nil:
			return 0, fmt.Errorf("%w: tenant %s key %q already has synchronous signature %s", store.ErrIdempotencyTaken, j.TenantID, j.IdempotencyKey, sigID)
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("postgres: look up signature key %q: %w", j.IdempotencyKey, err)
		}
		if err := insertNew(ctx, tx, "job "+j.ID, `INSERT INTO jobs (`+jobColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING`,
			j.ID, j.TenantID, j.IdempotencyKey, nz(j.RequestHash), nz(j.Request), j.State, j.SignatureID, j.Error,
			j.CallbackURL, j.Release, j.Instance, micros(j.AcceptedAt), nullTime(j.FinishedAt), j.Attempts); err != nil {
			return 0, err
		}
		var a eventArgs
		if err := a.add(next, ev); err != nil {
			return 0, err
		}
		return 1, insertEvents(ctx, tx, &a)
	})
	if err != nil {
		return nil, err
	}
	return existing, nil
}

func jobForUpdate(ctx context.Context, tx pgx.Tx, jobID string) (store.Job, error) {
	j, err := scanJob(tx.QueryRow(ctx, selectJobSQL+` WHERE id = $1 FOR UPDATE`, jobID))
	if err != nil {
		return store.Job{}, notFound(err, "job "+jobID)
	}
	return j, nil
}

// CompleteJob commits the job's signature, its event and the job's
// transition to signed in one transaction; see store.JobStore.
func (s *Store) CompleteJob(ctx context.Context, jobID string, w store.SignatureWrite) (store.WriteResult, error) {
	var res store.WriteResult
	err := s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		j, err := jobForUpdate(ctx, tx, jobID)
		if err != nil {
			return 0, err
		}
		switch j.State {
		case store.JobSigned:
			sg, err := scanSignature(tx.QueryRow(ctx, selectSignatureSQL+` WHERE id = $1`, j.SignatureID))
			if err != nil {
				return 0, notFound(err, "signature "+j.SignatureID+" of job "+jobID)
			}
			res.Existing = &sg
			return 0, nil
		case store.JobFailed:
			return 0, fmt.Errorf("%w: job %s has failed and cannot be signed", store.ErrJobState, jobID)
		}
		if err := store.CheckCompletion(j, w); err != nil {
			return 0, err
		}
		var sigID string
		err = tx.QueryRow(ctx, `SELECT id FROM signatures WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey).Scan(&sigID)
		switch {
		case err == nil:
			return 0, fmt.Errorf("%w: job %s: key %q already has signature %s", store.ErrIdempotencyTaken, jobID, j.IdempotencyKey, sigID)
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("postgres: look up signature key %q: %w", j.IdempotencyKey, err)
		}
		var sa sigArgs
		var ea eventArgs
		sa.add(w.Signature, next)
		if err := ea.add(next, w.Event); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, insertSignaturesSQL, sa.args()...); err != nil {
			return 0, fmt.Errorf("postgres: insert signature %s: %w", w.Signature.ID, err)
		}
		if err := insertEvents(ctx, tx, &ea); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET state = $1, signature_id = $2, finished_at = $3 WHERE id = $4`,
			store.JobSigned, w.Signature.ID, micros(w.Signature.SignedAt), jobID); err != nil {
			return 0, fmt.Errorf("postgres: mark job %s signed: %w", jobID, err)
		}
		res.AuditIndex = next
		return 1, nil
	})
	if err != nil {
		return store.WriteResult{}, err
	}
	return res, nil
}

// FailJob moves an accepted job to failed with its event.
func (s *Store) FailJob(ctx context.Context, jobID string, problem []byte, ev store.AuditEvent) error {
	return s.writeWithEvent(ctx, ev, func(tx pgx.Tx, _ int64) error {
		j, err := jobForUpdate(ctx, tx, jobID)
		if err != nil {
			return err
		}
		if j.State != store.JobAccepted {
			return fmt.Errorf("%w: job %s is %s; only an accepted job can fail", store.ErrJobState, jobID, j.State)
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET state = $1, error = $2, finished_at = $3 WHERE id = $4`,
			store.JobFailed, string(problem), micros(ev.Time), jobID); err != nil {
			return fmt.Errorf("postgres: mark job %s failed: %w", jobID, err)
		}
		return nil
	})
}

// IncrementJobAttempts counts a delivery and returns the new count.
func (s *Store) IncrementJobAttempts(ctx context.Context, jobID string) (int, error) {
	var n int32
	if err := s.pool.QueryRow(ctx, `UPDATE jobs SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts`, jobID).Scan(&n); err != nil {
		return 0, notFound(err, "job "+jobID)
	}
	return int(n), nil
}

// Job returns a tenant's job by ID.
func (s *Store) Job(ctx context.Context, tenantID, id string) (store.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, selectJobSQL+` WHERE tenant_id = $1 AND id = $2`, tenantID, id))
	if err != nil {
		return store.Job{}, notFound(err, "job "+id)
	}
	return j, nil
}

// JobByIdempotencyKey returns a tenant's job by idempotency key.
func (s *Store) JobByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, selectJobSQL+` WHERE tenant_id = $1 AND idempotency_key = $2`, tenantID, key))
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
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := s.pool.Query(ctx, selectJobSQL+` WHERE state = $1 AND accepted_at >= $2 AND accepted_at < $3
		ORDER BY accepted_at, id LIMIT $4`, state, micros(from), micros(to), lim)
	if err != nil {
		return nil, fmt.Errorf("postgres: list jobs: %w", err)
	}
	return collect(rows, "jobs", scanJob)
}
