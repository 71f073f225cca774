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
	release, instance, accepted_at, finished_at, attempts, callback_delivered_at, callback_attempts, callback_last_at`

const selectJobSQL = `SELECT ` + jobColumns + ` FROM jobs`

func scanJob(r pgx.Row) (store.Job, error) {
	var j store.Job
	var finished, delivered, lastCB *time.Time
	var attempts, cbAttempts int32
	err := r.Scan(&j.ID, &j.TenantID, &j.IdempotencyKey, &j.RequestHash, &j.Request, &j.State, &j.SignatureID,
		&j.Error, &j.CallbackURL, &j.Release, &j.Instance, &j.AcceptedAt, &finished, &attempts,
		&delivered, &cbAttempts, &lastCB)
	if err != nil {
		return store.Job{}, err
	}
	j.AcceptedAt, j.FinishedAt, j.Attempts = j.AcceptedAt.UTC(), fromNullTime(finished), int(attempts)
	j.CallbackDeliveredAt, j.CallbackAttempts, j.CallbackLastAt = fromNullTime(delivered), int(cbAttempts), fromNullTime(lastCB)
	return j, nil
}

// CreateJob inserts an accepted job and its audit event; see store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j store.Job, ev store.AuditEvent) (*store.Job, error) {
	return store.CreateJob(ctx, s, j, ev)
}

// CreateJobs inserts a batch of accepted jobs and their audit events in one
// transaction; see store.JobStore.
func (s *Store) CreateJobs(ctx context.Context, cs []store.JobCreate) ([]store.JobCreateResult, error) {
	rs, _, err := s.WriteJobs(ctx, cs, nil)
	return rs, err
}

// WriteJobs runs CreateJobs' creations, then CompleteJobs' completions, in
// one transaction; see store.JobBatchStore. It runs under the audit head
// lock, as CommitSignatures does, so the two see each other's idempotency
// keys.
func (s *Store) WriteJobs(ctx context.Context, cs []store.JobCreate, ps []store.JobCompletion) ([]store.JobCreateResult, []store.JobCompleteResult, error) {
	cres := make([]store.JobCreateResult, len(cs))
	pres := make([]store.JobCompleteResult, len(ps))
	err := s.write(ctx, func(tx pgx.Tx, next int64) (int64, error) {
		clear(cres)
		clear(pres)
		used := int64(0)
		for i, c := range cs {
			ok, err := createJobTx(ctx, tx, c, next+used, &cres[i])
			if err != nil {
				return 0, err
			}
			if ok {
				used++
			}
		}
		for i, c := range ps {
			ok, err := completeJobTx(ctx, tx, c, next+used, &pres[i])
			if err != nil {
				return 0, err
			}
			if ok {
				used++
			}
		}
		return used, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return cres, pres, nil
}

// createJobTx creates one job at audit index idx. It reports whether it
// used idx; a refusal of this item alone goes to r.Err.
func createJobTx(ctx context.Context, tx pgx.Tx, c store.JobCreate, idx int64, r *store.JobCreateResult) (bool, error) {
	j, err := store.CheckNewJob(c.Job)
	if err != nil {
		r.Err = err
		return false, nil
	}
	ex, err := scanJob(tx.QueryRow(ctx, selectJobSQL+` WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey))
	switch {
	case err == nil:
		r.Existing = &ex
		return false, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("postgres: look up job key %q: %w", j.IdempotencyKey, err)
	}
	var sigID string
	err = tx.QueryRow(ctx, `SELECT id FROM signatures WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey).Scan(&sigID)
	switch {
	case err == nil:
		r.Err = fmt.Errorf("%w: tenant %s key %q already has synchronous signature %s", store.ErrIdempotencyTaken, j.TenantID, j.IdempotencyKey, sigID)
		return false, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("postgres: look up signature key %q: %w", j.IdempotencyKey, err)
	}
	if err := insertNew(ctx, tx, "job "+j.ID, `INSERT INTO jobs (`+jobColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, 0, NULL) ON CONFLICT DO NOTHING`,
		j.ID, j.TenantID, j.IdempotencyKey, nz(j.RequestHash), nz(j.Request), j.State, j.SignatureID, j.Error,
		j.CallbackURL, j.Release, j.Instance, micros(j.AcceptedAt), nullTime(j.FinishedAt), j.Attempts); err != nil {
		if errors.Is(err, store.ErrExists) {
			r.Err = err // the job ID is taken
			return false, nil
		}
		return false, err
	}
	var a eventArgs
	if err := a.add(idx, c.Event); err != nil {
		return false, err
	}
	return true, insertEvents(ctx, tx, &a)
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
func (s *Store) CompleteJob(ctx context.Context, c store.JobCompletion) (store.WriteResult, error) {
	return store.CompleteJob(ctx, s, c)
}

// CompleteJobs completes a batch of jobs in one transaction; see
// store.JobStore.
func (s *Store) CompleteJobs(ctx context.Context, cs []store.JobCompletion) ([]store.JobCompleteResult, error) {
	_, rs, err := s.WriteJobs(ctx, nil, cs)
	return rs, err
}

// completeJobTx completes one job at audit index idx. It reports whether
// it used idx; a refusal of this item alone goes to r.Err.
func completeJobTx(ctx context.Context, tx pgx.Tx, c store.JobCompletion, idx int64, r *store.JobCompleteResult) (bool, error) {
	j, err := jobForUpdate(ctx, tx, c.JobID)
	if errors.Is(err, store.ErrNotFound) {
		r.Err = err
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch j.State {
	case store.JobSigned:
		sg, err := scanSignature(tx.QueryRow(ctx, selectSignatureSQL+` WHERE id = $1`, j.SignatureID))
		if err != nil {
			return false, notFound(err, "signature "+j.SignatureID+" of job "+j.ID)
		}
		r.Existing = &sg
		return false, nil
	case store.JobFailed:
		r.Err = fmt.Errorf("%w: job %s has failed and cannot be signed", store.ErrJobState, j.ID)
		return false, nil
	}
	if err := store.CheckCompletion(j, c.Write); err != nil {
		r.Err = err
		return false, nil
	}
	sg, err := scanSignature(tx.QueryRow(ctx, selectSignatureSQL+` WHERE tenant_id = $1 AND idempotency_key = $2`, j.TenantID, j.IdempotencyKey))
	switch {
	case err == nil:
		if r.Err = store.CheckLinkable(j, sg, c.Linked); r.Err != nil {
			return false, nil
		}
		var ea eventArgs
		if err := ea.add(idx, c.Linked); err != nil {
			return false, err
		}
		if err := insertEvents(ctx, tx, &ea); err != nil {
			return false, err
		}
		if err := markSigned(ctx, tx, j.ID, sg.ID, c.Linked.Time); err != nil {
			return false, err
		}
		r.Existing, r.Linked = &sg, true
		return true, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("postgres: look up signature key %q: %w", j.IdempotencyKey, err)
	}
	var sa sigArgs
	var ea eventArgs
	sa.add(c.Write.Signature, idx)
	if err := ea.add(idx, c.Write.Event); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, insertSignaturesSQL, sa.args()...); err != nil {
		return false, fmt.Errorf("postgres: insert signature %s: %w", c.Write.Signature.ID, err)
	}
	if err := insertEvents(ctx, tx, &ea); err != nil {
		return false, err
	}
	if err := markSigned(ctx, tx, j.ID, c.Write.Signature.ID, c.Write.Signature.SignedAt); err != nil {
		return false, err
	}
	r.AuditIndex = idx
	return true, nil
}

func markSigned(ctx context.Context, tx pgx.Tx, jobID, sigID string, at time.Time) error {
	if _, err := tx.Exec(ctx, `UPDATE jobs SET state = $1, signature_id = $2, finished_at = $3 WHERE id = $4`,
		store.JobSigned, sigID, micros(at), jobID); err != nil {
		return fmt.Errorf("postgres: mark job %s signed: %w", jobID, err)
	}
	return nil
}

// JobsAwaitingCallback lists finished jobs whose callback is undelivered.
func (s *Store) JobsAwaitingCallback(ctx context.Context, maxAttempts, limit int) ([]store.Job, error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	rows, err := s.pool.Query(ctx, selectJobSQL+` WHERE callback_url <> '' AND callback_delivered_at IS NULL AND state <> 'accepted'
		AND callback_attempts < $1 ORDER BY finished_at, id LIMIT $2`, maxAttempts, lim)
	if err != nil {
		return nil, fmt.Errorf("postgres: list jobs awaiting callback: %w", err)
	}
	return collect(rows, "jobs awaiting callback", scanJob)
}

// RecordCallbackAttempt counts a callback delivery attempt.
func (s *Store) RecordCallbackAttempt(ctx context.Context, jobID string, t time.Time, delivered bool) error {
	var delivAt any
	if delivered {
		delivAt = micros(t)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE jobs SET callback_attempts = callback_attempts + 1, callback_last_at = $1,
		callback_delivered_at = COALESCE(callback_delivered_at, $2::timestamptz) WHERE id = $3`, micros(t), delivAt, jobID)
	if err != nil {
		return fmt.Errorf("postgres: record callback of job %s: %w", jobID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: job %s: %w", jobID, store.ErrNotFound)
	}
	return nil
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
