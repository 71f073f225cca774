package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"
)

// Job states. A job is accepted once, then ends in exactly one of signed or
// failed; neither final state ever changes.
const (
	JobAccepted = "accepted"
	JobSigned   = "signed"
	JobFailed   = "failed"
)

// ErrIdempotencyTaken is returned (wrapped) when an idempotency key is
// already held by the other kind of request: CreateJob for a key that has a
// synchronous signature, CommitSignatures for a key held by an async job
// that has no signature yet. Sync and async requests share one key space
// per tenant (docs/design/store-key-space.md).
var ErrIdempotencyTaken = errors.New("store: idempotency key is held by another request")

// ErrJobState is returned for a job transition its state does not allow
// (failing a signed job, completing a failed one) or an unknown state.
var ErrJobState = errors.New("store: invalid job state")

// Job is an accepted asynchronous signing request and its outcome.
type Job struct {
	ID             string
	TenantID       string
	IdempotencyKey string // unique per tenant, across jobs and signatures
	RequestHash    []byte // sha256 of the canonical request; replays must match
	Request        []byte // canonical JSON of the sign request
	State          string // JobAccepted | JobSigned | JobFailed
	SignatureID    string // set when signed
	Error          string // RFC 9457 problem JSON when failed
	CallbackURL    string
	Release        string // release that accepted it
	Instance       string // instance that accepted it
	AcceptedAt     time.Time
	FinishedAt     time.Time // zero until signed or failed
	Attempts       int
	// CallbackDeliveredAt is when the callback was acknowledged by the
	// client (zero until then, and always for a job without CallbackURL).
	CallbackDeliveredAt time.Time
	// CallbackAttempts counts callback deliveries tried; CallbackLastAt is
	// the latest one (zero before the first).
	CallbackAttempts int
	CallbackLastAt   time.Time
}

// JobCreate is one new job and its job.accepted audit event.
type JobCreate struct {
	Job   Job
	Event AuditEvent
}

// JobCreateResult is the outcome of one JobCreate: Existing when the
// tenant already had a job under the key (nothing written), Err for this
// item alone (ErrIdempotencyTaken, ErrJobState, a malformed job).
type JobCreateResult struct {
	Existing *Job
	Err      error
}

// JobCompletion is the signature that completes job JobID. Linked, when
// it has an Entry, is the audit event ("job.completed_from_existing")
// recorded if the job's key already holds a signature of the same request:
// the store then links that signature to the job instead of writing Write.
type JobCompletion struct {
	JobID  string
	Write  SignatureWrite
	Linked AuditEvent
}

// JobCompleteResult is the outcome of one JobCompletion. Existing is the
// signature already recorded for the job (a redelivery) or, with Linked,
// the existing signature just linked to it. Err is for this item alone.
type JobCompleteResult struct {
	WriteResult
	Linked bool
	Err    error
}

// ExistingSignatureError is a completion's error when the job's key already
// holds a signature of the same request and the completion carried no
// Linked event: retry with one to link it. It wraps ErrIdempotencyTaken.
type ExistingSignatureError struct {
	JobID     string
	Signature Signature
}

func (e *ExistingSignatureError) Error() string {
	return fmt.Sprintf("store: job %s: key %q already has signature %s of the same request; complete it with a link event",
		e.JobID, e.Signature.IdempotencyKey, e.Signature.ID)
}

// Unwrap makes the error match ErrIdempotencyTaken.
func (e *ExistingSignatureError) Unwrap() error { return ErrIdempotencyTaken }

// JobStore persists async jobs. Every state change is committed with its
// audit event in one transaction.
type JobStore interface {
	// CreateJob inserts j (State must be JobAccepted or empty) with its
	// audit event. When the tenant already has a job under the same
	// idempotency key it writes nothing and returns that job (the caller
	// compares RequestHash); when the key already has a signature it returns
	// an error wrapping ErrIdempotencyTaken.
	CreateJob(ctx context.Context, j Job, ev AuditEvent) (existing *Job, err error)
	// CreateJobs is CreateJob for a batch in one transaction, items in
	// slice order (a later item sees an earlier one's job). Per-item
	// refusals are in the results; an error fails the whole batch.
	CreateJobs(ctx context.Context, cs []JobCreate) ([]JobCreateResult, error)
	// Job returns a tenant's job by ID.
	Job(ctx context.Context, tenantID, id string) (Job, error)
	// JobByIdempotencyKey returns a tenant's job by idempotency key.
	JobByIdempotencyKey(ctx context.Context, tenantID, key string) (Job, error)
	// CompleteJob commits the signature, its audit event and the job's
	// transition to JobSigned in one transaction. w's tenant and idempotency
	// key must be the job's. If the job is already signed it writes nothing
	// and returns the existing signature in WriteResult.Existing (worker
	// redelivery); a failed job is ErrJobState.
	//
	// When the key already holds a signature (a sync sign, or a commit
	// whose job update was lost), a signature of the same request is linked
	// to the job — job signed, SignatureID set, c.Linked recorded — and
	// returned in Existing (without c.Linked: *ExistingSignatureError); one
	// of another request is ErrIdempotencyTaken.
	CompleteJob(ctx context.Context, c JobCompletion) (WriteResult, error)
	// CompleteJobs is CompleteJob for a batch in one transaction, items in
	// slice order. Per-item refusals are in the results; an error fails the
	// whole batch.
	CompleteJobs(ctx context.Context, cs []JobCompletion) ([]JobCompleteResult, error)
	// FailJob moves an accepted job to JobFailed with its problem JSON and
	// audit event; any other state is ErrJobState.
	FailJob(ctx context.Context, jobID string, problem []byte, ev AuditEvent) error
	// JobsByState lists jobs of every tenant in state with AcceptedAt in
	// [acceptedFrom, acceptedTo), oldest first; limit <= 0 means no limit.
	JobsByState(ctx context.Context, state string, acceptedFrom, acceptedTo time.Time, limit int) ([]Job, error)
	// IncrementJobAttempts counts one more delivery of the job and returns
	// the new count. It writes no audit event (it is not a state change).
	IncrementJobAttempts(ctx context.Context, jobID string) (int, error)
	// JobsAwaitingCallback lists finished jobs of every tenant that have a
	// CallbackURL, no CallbackDeliveredAt and fewer than maxAttempts
	// callback attempts, oldest finished first; limit <= 0 means no limit.
	JobsAwaitingCallback(ctx context.Context, maxAttempts, limit int) ([]Job, error)
	// RecordCallbackAttempt counts one callback delivery tried at t and,
	// if delivered, sets CallbackDeliveredAt (once: a later delivery keeps
	// the first time). No audit event: delivery is not a state change.
	RecordCallbackAttempt(ctx context.Context, jobID string, t time.Time, delivered bool) error
}

// CheckJobState validates a job state value.
func CheckJobState(state string) error {
	switch state {
	case JobAccepted, JobSigned, JobFailed:
		return nil
	}
	return fmt.Errorf("%w: %q", ErrJobState, state)
}

// CheckNewJob validates a job before CreateJob and returns it with its
// state defaulted to JobAccepted.
func CheckNewJob(j Job) (Job, error) {
	if j.State == "" {
		j.State = JobAccepted
	}
	if j.State != JobAccepted {
		return Job{}, fmt.Errorf("%w: a new job must be %s, not %q", ErrJobState, JobAccepted, j.State)
	}
	if j.ID == "" || j.TenantID == "" || j.IdempotencyKey == "" {
		return Job{}, fmt.Errorf("store: job needs an ID, a tenant and an idempotency key (got %q, %q, %q)", j.ID, j.TenantID, j.IdempotencyKey)
	}
	return j, nil
}

// CheckCompletion checks that w signs job j: same tenant and idempotency
// key, so the signatures' unique constraint guards the job too.
func CheckCompletion(j Job, w SignatureWrite) error {
	if w.Signature.TenantID != j.TenantID || w.Signature.IdempotencyKey != j.IdempotencyKey {
		return fmt.Errorf("store: signature for tenant %q key %q cannot complete job %s of tenant %q key %q",
			w.Signature.TenantID, w.Signature.IdempotencyKey, j.ID, j.TenantID, j.IdempotencyKey)
	}
	return nil
}

// CheckLinkable reports whether sig, found under job j's key, can complete
// j: it must be the same request. It returns the error for the completion.
func CheckLinkable(j Job, sig Signature, linked AuditEvent) error {
	if !bytes.Equal(sig.RequestHash, j.RequestHash) {
		return fmt.Errorf("%w: job %s: key %q already has signature %s of another request",
			ErrIdempotencyTaken, j.ID, j.IdempotencyKey, sig.ID)
	}
	if len(linked.Entry) == 0 {
		return &ExistingSignatureError{JobID: j.ID, Signature: sig}
	}
	return nil
}

// TakenByJobError builds the CommitSignatures error for a key held by an
// unsigned job.
func TakenByJobError(tenantID, key, jobID string) error {
	return fmt.Errorf("%w: tenant %s key %q belongs to async job %s", ErrIdempotencyTaken, tenantID, key, jobID)
}
