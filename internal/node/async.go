package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/store"
)

// Asynchronous signing.
//
// POST /v1/sign:async takes the same body and Idempotency-Key as POST
// /v1/sign and answers 202 with a job; GET /v1/jobs/{id} reports the job and,
// once signed, carries the exact body a synchronous sign returns.
//
// What "accepted" (202) means: the job row, holding the whole request, is
// committed in the store (as durably as the store is configured: with SQLite
// synchronous=FULL or PostgreSQL it survives a machine crash) AND the queue
// returned its PubAck for the job's message. If the publish fails after the
// row committed, the client gets 503 and the job stays accepted; a retry with
// the same key re-publishes it, and the worker's sweeper re-publishes every
// job still accepted after WorkerConfig.SweepAfter. The job row, not the
// broker, is therefore the record of acceptance: JetStream's file store
// fsyncs only every two minutes by default, so a machine crash may lose a
// queued message, but never a job, and the sweeper sends it again.
//
// Idempotency is the synchronous path's: a tenant's key names one request;
// the same key with the same request returns the same job (202 again, its
// current state in the body), with another request 422. The key space is
// shared with POST /v1/sign: a job whose key already has a signature is
// completed with that signature, never signed twice.

// CallbackHeader carries the optional callback URL of an asynchronous sign.
const CallbackHeader = "Countersign-Callback-Url"

// Job states as the API reports them.
const (
	JobStateAccepted = "accepted"
	JobStateSigned   = "signed"
	JobStateFailed   = "failed"
)

// JobStore is what asynchronous signing needs of the store. Job writes
// are batched through Config.Committer when it is a store.Committer.
type JobStore interface {
	store.JobStore
	Signature(ctx context.Context, tenantID, id string) (store.Signature, error)
	SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Signature, error)
}

// Publisher puts work on the queue (queue.Queue).
type Publisher interface {
	Publish(ctx context.Context, m queue.Message) (queue.PublishResult, error)
}

// JobView is the wire form of a job (GET /v1/jobs/{id}, the 202 of POST
// /v1/sign:async, and the body of a callback).
type JobView struct {
	ID             string     `json:"id"`
	State          string     `json:"state"`
	IdempotencyKey string     `json:"idempotency_key"`
	AcceptedAt     time.Time  `json:"accepted_at"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
	Attempts       int        `json:"attempts"`
	// Signature is, once the job is signed, byte for byte the body that
	// POST /v1/sign returns for the same request.
	Signature json.RawMessage `json:"signature,omitempty"`
	// Problem says why a failed job failed.
	Problem *api.Problem `json:"problem,omitempty"`
}

// jobMessage is the body of a queue message: the job's ID only. The request
// itself lives in the job row, so the broker never holds a document.
type jobMessage struct {
	JobID string `json:"job_id"`
}

// MessageID is the queue message ID of a tenant's idempotency key.
func MessageID(tenant, idem string) string { return tenant + "/" + idem }

func jobMessageOf(j *store.Job) queue.Message {
	body, _ := json.Marshal(jobMessage{JobID: j.ID})
	return queue.Message{ID: MessageID(j.TenantID, j.IdempotencyKey), Tenant: j.TenantID, Body: body}
}

var errAsyncDisabled = problem(http.StatusNotFound, api.TypeNotFound, "asynchronous signing is not enabled on this node")

func (s *Server) handleSignAsync(w http.ResponseWriter, r *http.Request, tenant string) error {
	if s.cfg.Jobs == nil || s.cfg.Queue == nil {
		return errAsyncDisabled
	}
	idem, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	callback, err := callbackURL(r.Header.Get(CallbackHeader))
	if err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var req api.SignRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	// Refuse what can never be signed before accepting it.
	if _, err := signInput(&req); err != nil {
		return err
	}
	if _, err := s.keys.current(r.Context(), tenant, req.Key); err != nil {
		return err
	}
	j, err := s.acceptJob(r.Context(), tenant, idem, callback, &req)
	if err != nil {
		return err
	}
	b, err := s.renderJob(r.Context(), j)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, b)
	return nil
}

// acceptJob records the job (or finds the key's existing one) and makes
// sure its message is on the queue.
func (s *Server) acceptJob(ctx context.Context, tenant, idem, callback string, req *api.SignRequest) (*store.Job, error) {
	reqHash := requestHash(req)
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, internalError(err)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	j := store.Job{
		ID:             newID("job_", now),
		TenantID:       tenant,
		IdempotencyKey: idem,
		RequestHash:    reqHash,
		Request:        raw,
		State:          store.JobAccepted,
		CallbackURL:    callback,
		Release:        s.cfg.Release,
		Instance:       s.cfg.Instance,
		AcceptedAt:     now,
	}
	ev, err := s.jobEvent("job.accepted", &j, now, map[string]any{
		"key":                    req.Key,
		"format":                 string(req.Format),
		"document_id":            req.DocumentID,
		"request_sha256":         hex.EncodeToString(reqHash),
		"idempotency_key_sha256": sha256Hex(idem),
		"callback":               callback != "",
	})
	if err != nil {
		return nil, internalError(err)
	}
	existing, err := s.jobWrites().createJob(ctx, j, ev)
	if errors.Is(err, store.ErrIdempotencyTaken) {
		return nil, problem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
			"this Idempotency-Key was already used for a synchronous sign; fetch it with POST /v1/sign and the same key")
	}
	if err != nil {
		return nil, unavailable("the job could not be recorded; retry with the same Idempotency-Key", 1, err)
	}
	if existing != nil {
		if !bytes.Equal(existing.RequestHash, reqHash) {
			return nil, problem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
				"this Idempotency-Key was already used for a different request")
		}
		s.metrics.replays.Inc()
		j = *existing
	}
	if j.State == store.JobAccepted {
		if _, err := s.cfg.Queue.Publish(ctx, jobMessageOf(&j)); err != nil {
			// The job is recorded and the sweeper will queue it; the
			// client is told it was not accepted, and a retry with the same
			// key finds this job.
			return nil, unavailable("the job is recorded but could not be queued; retry with the same Idempotency-Key", 1, err)
		}
	}
	return &j, nil
}

func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request, tenant string) error {
	if s.cfg.Jobs == nil {
		return errAsyncDisabled
	}
	id := r.PathValue("id")
	j, err := s.cfg.Jobs.Job(r.Context(), tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return problem(http.StatusNotFound, api.TypeNotFound, fmt.Sprintf("no job %q", id))
	}
	if err != nil {
		return unavailable("job store unavailable", 1, err)
	}
	b, err := s.renderJob(r.Context(), &j)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// renderJob renders a job from the store, with the signature's stored
// response when it is signed.
func (s *Server) renderJob(ctx context.Context, j *store.Job) ([]byte, error) {
	v := JobView{ID: j.ID, IdempotencyKey: j.IdempotencyKey, AcceptedAt: j.AcceptedAt.UTC(), Attempts: j.Attempts}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt.UTC()
		v.FinishedAt = &t
	}
	switch j.State {
	case store.JobSigned:
		v.State = JobStateSigned
		sig, err := s.cfg.Jobs.Signature(ctx, j.TenantID, j.SignatureID)
		if err != nil {
			return nil, unavailable("signature store unavailable", 1, err)
		}
		v.Signature = renderSignature(&sig)
	case store.JobFailed:
		v.State = JobStateFailed
		var p api.Problem
		if err := json.Unmarshal([]byte(j.Error), &p); err != nil || p.Status == 0 {
			p = *api.NewProblem(http.StatusInternalServerError, api.TypeInternal, "the job failed")
		}
		v.Problem = &p
	default:
		v.State = JobStateAccepted
	}
	b, err := json.Marshal(&v)
	if err != nil {
		return nil, internalError(err)
	}
	return b, nil
}

// jobEvent builds an audit event about a job.
func (s *Server) jobEvent(typ string, j *store.Job, now time.Time, details map[string]any) (store.AuditEvent, error) {
	details["job"] = j.ID
	return auditlog.Event{
		Type:     typ,
		Time:     now,
		Actor:    "tenant:" + j.TenantID,
		TenantID: j.TenantID,
		Release:  s.cfg.Release,
		Instance: s.cfg.Instance,
		Subject:  "job:" + j.ID,
		Details:  details,
	}.Record()
}

// callbackURL validates the optional callback: an absolute http(s) URL
// without credentials.
func callbackURL(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", problem(http.StatusBadRequest, api.TypeMalformed, CallbackHeader+" is not a URL: "+err.Error())
	case u.Scheme != "https" && u.Scheme != "http":
		return "", problem(http.StatusBadRequest, api.TypeMalformed, CallbackHeader+" must be an http or https URL")
	case u.Host == "":
		return "", problem(http.StatusBadRequest, api.TypeMalformed, CallbackHeader+" must be an absolute URL")
	case u.User != nil:
		return "", problem(http.StatusBadRequest, api.TypeMalformed, CallbackHeader+" must not carry credentials")
	case len(raw) > 2048:
		return "", problem(http.StatusBadRequest, api.TypeMalformed, CallbackHeader+" is longer than 2048 bytes")
	}
	return u.String(), nil
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// jobCommitter routes the commit of a worker's signature to the job
// store's CompleteJob (signature, audit event and job transition in one
// transaction) and every other commit to the group committer. The job
// travels in the context, so the synchronous sign path (signOnce) is the
// one code that makes a signature for both. Job writes go through the
// group committer's job batching when it has it (store.Committer over a
// store.JobBatchStore: one transaction per batch of concurrent jobs), else
// straight to the store.
type jobCommitter struct {
	inner Committer
	jobs  JobStore
	crash *CrashPoint
}

// jobWriter is the job writes a jobCommitter needs: store.Committer's
// group-committed ones, or the store's own.
type jobWriter interface {
	CreateJob(ctx context.Context, j store.Job, ev store.AuditEvent) (*store.Job, error)
	CompleteJob(ctx context.Context, c store.JobCompletion) (store.WriteResult, error)
}

func (c *jobCommitter) createJob(ctx context.Context, j store.Job, ev store.AuditEvent) (*store.Job, error) {
	if w, ok := c.inner.(jobWriter); ok {
		ex, err := w.CreateJob(ctx, j, ev)
		if !errors.Is(err, store.ErrNoJobBatching) {
			return ex, err
		}
	}
	return c.jobs.CreateJob(ctx, j, ev)
}

func (c *jobCommitter) completeJob(ctx context.Context, jc store.JobCompletion) (store.WriteResult, error) {
	if w, ok := c.inner.(jobWriter); ok {
		r, err := w.CompleteJob(ctx, jc)
		if !errors.Is(err, store.ErrNoJobBatching) {
			return r, err
		}
	}
	return c.jobs.CompleteJob(ctx, jc)
}

// jobRef is the job a worker's sign is for, carried in its context.
type jobRef struct {
	s   *Server
	job *store.Job
}

type jobCtxKey struct{}

func withJob(ctx context.Context, s *Server, j *store.Job) context.Context {
	return context.WithValue(ctx, jobCtxKey{}, jobRef{s: s, job: j})
}

// CommitAll forwards a batch request's writes to the group committer when
// it takes them at once, else makes one Commit per write, concurrently.
func (c *jobCommitter) CommitAll(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, []error) {
	if ac, ok := c.inner.(allCommitter); ok {
		if _, job := ctx.Value(jobCtxKey{}).(jobRef); !job {
			return ac.CommitAll(ctx, ws)
		}
	}
	rs, errs := make([]store.WriteResult, len(ws)), make([]error, len(ws))
	var wg sync.WaitGroup
	for i := range ws {
		wg.Go(func() { rs[i], errs[i] = c.Commit(ctx, ws[i]) })
	}
	wg.Wait()
	return rs, errs
}

func (c *jobCommitter) Commit(ctx context.Context, w store.SignatureWrite) (store.WriteResult, error) {
	ref, ok := ctx.Value(jobCtxKey{}).(jobRef)
	if !ok {
		return c.inner.Commit(ctx, w)
	}
	c.crash.pass(CrashAfterSign)
	r, err := c.completeJob(ctx, store.JobCompletion{JobID: ref.job.ID, Write: w})
	var ese *store.ExistingSignatureError
	if errors.As(err, &ese) {
		// The key already has this request's signature (its job update was
		// lost, or an older release signed it synchronously): link it, and
		// the fresh artifact, never persisted, is dropped.
		return ref.s.linkJob(ctx, ref.job, &ese.Signature)
	}
	return r, err
}

// linkJob completes job j with sig, an existing signature of the same
// request under its key, recording a job.completed_from_existing event.
func (s *Server) linkJob(ctx context.Context, j *store.Job, sig *store.Signature) (store.WriteResult, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	ev, err := s.jobEvent("job.completed_from_existing", j, now, map[string]any{
		"signature":              sig.ID,
		"signature_audit_index":  sig.AuditIndex,
		"request_sha256":         hex.EncodeToString(j.RequestHash),
		"idempotency_key_sha256": sha256Hex(j.IdempotencyKey),
	})
	if err != nil {
		return store.WriteResult{}, err
	}
	r, err := s.jobWrites().completeJob(ctx, store.JobCompletion{JobID: j.ID,
		Write: store.SignatureWrite{Signature: *sig}, Linked: ev})
	if err == nil && r.Existing != nil {
		s.log.InfoContext(ctx, "job completed with the existing signature of its key", logJob(j), slog.String("signature", r.Existing.ID))
	}
	return r, err
}

// jobWrites is the job write path; New installs it whenever Config.Jobs is
// set, and only then are the async routes and the worker in use.
func (s *Server) jobWrites() *jobCommitter {
	if jc, ok := s.cfg.Committer.(*jobCommitter); ok {
		return jc
	}
	return &jobCommitter{inner: s.cfg.Committer, jobs: s.cfg.Jobs, crash: s.cfg.CrashPoint}
}

// keyHeldByJob is the answer to a synchronous sign whose idempotency key
// an async job holds (the store refused the commit with cause, wrapping
// store.ErrIdempotencyTaken): 409 while the job may still be signed, 422
// once it has failed. A signed job's signature is found by the commit
// itself, so it never gets here.
func (s *Server) keyHeldByJob(ctx context.Context, tenant, idem string, cause error) error {
	state := store.JobAccepted
	if s.cfg.Jobs != nil {
		if j, err := s.cfg.Jobs.JobByIdempotencyKey(ctx, tenant, idem); err == nil {
			state = j.State
		}
	}
	if state == store.JobFailed {
		return &httpError{Problem: api.NewProblem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
			"this Idempotency-Key was used for an asynchronous sign that failed; use a new key"), Err: cause}
	}
	return &httpError{Problem: api.NewProblem(http.StatusConflict, api.TypeIdempotencyInFlight,
		"this Idempotency-Key is held by an asynchronous sign still in progress; poll GET /v1/jobs/{id} or retry later with the same key"), Err: cause}
}

// logJob is the structured form of a job in logs (no request content).
func logJob(j *store.Job) slog.Attr {
	return slog.Group("job", slog.String("id", j.ID), slog.String("tenant", j.TenantID), slog.String("state", j.State), slog.Int("attempts", j.Attempts))
}
