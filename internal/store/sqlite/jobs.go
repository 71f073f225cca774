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
	release, instance, accepted_at, finished_at, attempts, callback_delivered_at, callback_attempts, callback_last_at`

const selectJobSQL = `SELECT ` + jobColumns + ` FROM jobs`

func scanJob(r rowScanner) (store.Job, error) {
	var j store.Job
	var accepted int64
	var finished, delivered, lastCB sql.NullInt64
	err := r.Scan(&j.ID, &j.TenantID, &j.IdempotencyKey, &j.RequestHash, &j.Request, &j.State, &j.SignatureID,
		&j.Error, &j.CallbackURL, &j.Release, &j.Instance, &accepted, &finished, &j.Attempts,
		&delivered, &j.CallbackAttempts, &lastCB)
	if err != nil {
		return store.Job{}, err
	}
	j.AcceptedAt, j.FinishedAt = fromMicros(accepted), fromNullMicros(finished)
	j.CallbackDeliveredAt, j.CallbackLastAt = fromNullMicros(delivered), fromNullMicros(lastCB)
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
// one transaction; see store.JobBatchStore.
func (s *Store) WriteJobs(ctx context.Context, cs []store.JobCreate, ps []store.JobCompletion) ([]store.JobCreateResult, []store.JobCompleteResult, error) {
	cres := make([]store.JobCreateResult, len(cs))
	pres := make([]store.JobCompleteResult, len(ps))
	ctx, err := txContext(ctx)
	if err != nil {
		return nil, nil, err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		clear(cres)
		clear(pres)
		next, err := s.nextIndex(ctx, tx)
		if err != nil {
			return err
		}
		for i, c := range cs {
			ok, err := s.createJobTx(ctx, tx, c, next, &cres[i])
			if err != nil {
				return err
			}
			if ok {
				next++
			}
		}
		for i, c := range ps {
			ok, err := s.completeJobTx(ctx, tx, c, next, &pres[i])
			if err != nil {
				return err
			}
			if ok {
				next++
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return cres, pres, nil
}

// createJobTx creates one job at audit index idx. It reports whether it
// used idx; a refusal of this item alone goes to r.Err.
func (s *Store) createJobTx(ctx context.Context, tx *sql.Tx, c store.JobCreate, idx int64, r *store.JobCreateResult) (bool, error) {
	j, err := store.CheckNewJob(c.Job)
	if err != nil {
		r.Err = err
		return false, nil
	}
	ex, err := scanJob(s.txQueryRow(ctx, tx, selectJobSQL+` WHERE tenant_id = ? AND idempotency_key = ?`, j.TenantID, j.IdempotencyKey))
	switch {
	case err == nil:
		r.Existing = &ex
		return false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("sqlite: look up job key %q: %w", j.IdempotencyKey, err)
	}
	var sigID string
	err = s.txQueryRow(ctx, tx, `SELECT id FROM signatures WHERE tenant_id = ? AND idempotency_key = ?`,
		j.TenantID, j.IdempotencyKey).Scan(&sigID)
	switch {
	case err == nil:
		r.Err = fmt.Errorf("%w: tenant %s key %q already has synchronous signature %s", store.ErrIdempotencyTaken, j.TenantID, j.IdempotencyKey, sigID)
		return false, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("sqlite: look up signature key %q: %w", j.IdempotencyKey, err)
	}
	if err := insertNew(ctx, tx, "job "+j.ID, `INSERT INTO jobs (`+jobColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, NULL) ON CONFLICT DO NOTHING`,
		j.ID, j.TenantID, j.IdempotencyKey, nz(j.RequestHash), nz(j.Request), j.State, j.SignatureID, j.Error,
		j.CallbackURL, j.Release, j.Instance, micros(j.AcceptedAt), nullMicros(j.FinishedAt), j.Attempts); err != nil {
		if errors.Is(err, store.ErrExists) {
			r.Err = err // the job ID is taken
			return false, nil
		}
		return false, err
	}
	return true, s.insertEvent(ctx, tx, idx, c.Event)
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
func (s *Store) completeJobTx(ctx context.Context, tx *sql.Tx, c store.JobCompletion, idx int64, r *store.JobCompleteResult) (bool, error) {
	j, err := s.jobTx(ctx, tx, c.JobID)
	if errors.Is(err, store.ErrNotFound) {
		r.Err = err
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch j.State {
	case store.JobSigned:
		sg, err := scanSignature(s.txQueryRow(ctx, tx, selectSignatureSQL+` WHERE id = ?`, j.SignatureID))
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
	sg, err := scanSignature(s.txQueryRow(ctx, tx, selectSignatureSQL+` WHERE tenant_id = ? AND idempotency_key = ?`,
		j.TenantID, j.IdempotencyKey))
	switch {
	case err == nil:
		if r.Err = store.CheckLinkable(j, sg, c.Linked); r.Err != nil {
			return false, nil
		}
		if err := s.insertEvent(ctx, tx, idx, c.Linked); err != nil {
			return false, err
		}
		if err := s.markSigned(ctx, tx, j.ID, sg.ID, c.Linked.Time); err != nil {
			return false, err
		}
		r.Existing, r.Linked = &sg, true
		return true, nil
	case !errors.Is(err, sql.ErrNoRows):
		return false, fmt.Errorf("sqlite: look up signature key %q: %w", j.IdempotencyKey, err)
	}
	ev, err := eventRow(idx, c.Write.Event)
	if err != nil {
		return false, err
	}
	if err := s.execRows(ctx, tx, "signature "+c.Write.Signature.ID, insertSignaturesHead, sigCols, maxSigRows, "",
		[][]any{sigRow(c.Write.Signature, idx)}); err != nil {
		return false, err
	}
	if err := s.execRows(ctx, tx, "audit event", insertEventsHead, eventCols, maxEventRows, "", [][]any{ev}); err != nil {
		return false, err
	}
	if err := s.markSigned(ctx, tx, j.ID, c.Write.Signature.ID, c.Write.Signature.SignedAt); err != nil {
		return false, err
	}
	r.AuditIndex = idx
	return true, nil
}

func (s *Store) markSigned(ctx context.Context, tx *sql.Tx, jobID, sigID string, at time.Time) error {
	if _, err := s.txExec(ctx, tx, `UPDATE jobs SET state = ?, signature_id = ?, finished_at = ? WHERE id = ?`,
		store.JobSigned, sigID, micros(at), jobID); err != nil {
		return fmt.Errorf("sqlite: mark job %s signed: %w", jobID, err)
	}
	return nil
}

// JobsAwaitingCallback lists finished jobs whose callback is undelivered.
func (s *Store) JobsAwaitingCallback(ctx context.Context, maxAttempts, limit int) ([]store.Job, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.query(ctx, selectJobSQL+` WHERE callback_url <> '' AND callback_delivered_at IS NULL AND state <> 'accepted'
		AND callback_attempts < ? ORDER BY finished_at, id LIMIT ?`, maxAttempts, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list jobs awaiting callback: %w", err)
	}
	return collect(rows, "jobs awaiting callback", scanJob)
}

// RecordCallbackAttempt counts a callback delivery attempt.
func (s *Store) RecordCallbackAttempt(ctx context.Context, jobID string, t time.Time, delivered bool) error {
	var delivAt any
	if delivered {
		delivAt = micros(t)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := s.txExec(ctx, tx, `UPDATE jobs SET callback_attempts = callback_attempts + 1, callback_last_at = ?,
			callback_delivered_at = COALESCE(callback_delivered_at, ?) WHERE id = ?`, micros(t), delivAt, jobID)
		if err != nil {
			return fmt.Errorf("sqlite: record callback of job %s: %w", jobID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("sqlite: record callback of job %s: %w", jobID, err)
		} else if n == 0 {
			return fmt.Errorf("sqlite: job %s: %w", jobID, store.ErrNotFound)
		}
		return nil
	})
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
