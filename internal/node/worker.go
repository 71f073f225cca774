package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/store"
)

// The worker signs queued jobs.
//
// Every step is idempotent, because delivery is at-least-once and the
// process may die between any two of them (see the crash points):
//
//	load job ─ signed or failed already? ─────────────────────► ack
//	    │ accepted
//	signature for the key exists? ── yes: complete the job with it ─► ack
//	    │ no                          (never signed again)
//	sign ─[after-sign]─ commit signature+event+job ─[after-persist]─ ack ─[after-ack]─ callback
//
// A crash before the commit loses only an artifact nobody saw; a crash after
// it leaves a signed job whose redelivered message is acknowledged without
// signing. The sweeper re-publishes jobs still accepted after SweepAfter, so
// a message the broker lost (or never got) is sent again, and re-sends the
// callbacks of finished jobs that record no delivery (a crash after the ack,
// or retries run out), with backoff between attempts.

// Defaults for WorkerConfig.
const (
	DefaultConsumer          = "signer"
	DefaultWorkerConcurrency = 4
	DefaultSweepEvery        = 10 * time.Second
	DefaultSweepAfter        = 30 * time.Second
	DefaultSweepBatch        = 500
	DefaultMaxAttempts       = 20
	DefaultCallbackAttempts  = 8
	DefaultCallbackBackoff   = time.Second
	// CallbackSignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>".
	CallbackSignatureHeader = "Countersign-Signature"
)

// Consumer is the queue as the worker uses it (queue.Queue).
type Consumer interface {
	Publisher
	Consume(ctx context.Context, consumer string, h queue.Handler) (queue.Subscription, error)
}

// CallbackSecret is the HMAC key for callback signatures. It never prints.
type CallbackSecret []byte

// LogValue redacts the secret.
func (CallbackSecret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String redacts the secret.
func (CallbackSecret) String() string { return "[redacted]" }

// WorkerConfig configures a Worker. Zero values take the defaults above.
type WorkerConfig struct {
	Queue    Consumer
	Consumer string // durable consumer name; default DefaultConsumer
	// Concurrency is the number of subscriptions, each handling one message
	// at a time (default DefaultWorkerConcurrency).
	Concurrency int
	// SweepEvery is how often accepted jobs are looked for; SweepAfter is
	// how old an accepted job must be to be re-published (default 10s/30s).
	// SweepEvery < 0 turns the sweeper off.
	SweepEvery, SweepAfter time.Duration
	SweepBatch             int
	// MaxAttempts bounds signing attempts of a job before it fails.
	MaxAttempts int
	// CallbackSecret signs callback bodies; callbacks are sent unsigned
	// when empty.
	CallbackSecret CallbackSecret
	// CallbackAttempts and CallbackBackoff bound callback retries: the
	// delay doubles from CallbackBackoff, capped at one minute.
	CallbackAttempts int
	CallbackBackoff  time.Duration
	HTTPClient       *http.Client
	Logger           *slog.Logger
	Now              func() time.Time
}

// Worker consumes the sign queue.
type Worker struct {
	s   *Server
	cfg WorkerConfig
	log *slog.Logger

	callbacks sync.WaitGroup
	mu        sync.Mutex
	sending   map[string]bool // job IDs whose callback is being delivered; guarded by mu
}

// NewWorker returns a worker signing with s. s must have Config.Jobs.
func NewWorker(s *Server, cfg WorkerConfig) (*Worker, error) {
	if s.cfg.Jobs == nil {
		return nil, errors.New("node: the worker needs a Server with Config.Jobs")
	}
	if cfg.Queue == nil {
		return nil, errors.New("node: WorkerConfig.Queue is required")
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultWorkerConcurrency
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = DefaultSweepEvery
	}
	if cfg.SweepAfter <= 0 {
		cfg.SweepAfter = DefaultSweepAfter
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = DefaultSweepBatch
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.CallbackAttempts <= 0 {
		cfg.CallbackAttempts = DefaultCallbackAttempts
	}
	if cfg.CallbackBackoff <= 0 {
		cfg.CallbackBackoff = DefaultCallbackBackoff
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	if cfg.Now == nil {
		cfg.Now = s.now
	}
	return &Worker{s: s, cfg: cfg, log: cfg.Logger.With(slog.String("consumer", cfg.Consumer)), sending: map[string]bool{}}, nil
}

// Run consumes until ctx ends, then stops its subscriptions and waits for
// the handlers and pending callbacks to return. It returns nil when ctx
// ends, also when that happens while the subscriptions are being set up;
// any other failure to subscribe is returned.
func (w *Worker) Run(ctx context.Context) error {
	var subs []queue.Subscription
	defer func() {
		for _, sub := range subs {
			sub.Stop()
		}
		w.callbacks.Wait()
	}()
	for range w.cfg.Concurrency {
		sub, err := w.cfg.Queue.Consume(ctx, w.cfg.Consumer, w.handle)
		if err != nil {
			if ctx.Err() != nil {
				return nil // shut down before every subscription was up
			}
			return fmt.Errorf("node: worker: %w", err)
		}
		subs = append(subs, sub)
	}
	if w.cfg.SweepEvery < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(w.cfg.SweepEvery)
	defer t.Stop()
	for {
		if _, err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "sweep failed", slog.Any("err", err))
		}
		if _, err := w.SweepCallbacks(ctx); err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "callback sweep failed", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep re-publishes jobs accepted more than SweepAfter ago and not yet
// finished, and returns how many it published. Duplicates are harmless: the
// broker may drop them, and the worker acknowledges a finished job's
// message without signing.
func (w *Worker) Sweep(ctx context.Context) (int, error) {
	jobs, err := w.s.cfg.Jobs.JobsByState(ctx, store.JobAccepted, time.Time{}, w.cfg.Now().Add(-w.cfg.SweepAfter), w.cfg.SweepBatch)
	if err != nil {
		return 0, fmt.Errorf("node: sweep: %w", err)
	}
	n := 0
	for i := range jobs {
		if _, err := w.cfg.Queue.Publish(ctx, jobMessageOf(&jobs[i])); err != nil {
			return n, fmt.Errorf("node: sweep: re-publish %s: %w", jobs[i].ID, err)
		}
		n++
	}
	if n > 0 {
		w.log.InfoContext(ctx, "sweeper re-published accepted jobs", slog.Int("jobs", n))
	}
	return n, nil
}

// outcome is what to do with a delivery.
type outcome struct {
	job   *store.Job    // the job, when it is finished
	retry time.Duration // > 0: not done, deliver again after this
	term  bool          // a message that can never be processed
}

func (w *Worker) handle(ctx context.Context, d queue.Delivery) {
	m := d.Message()
	out, err := w.process(ctx, m, d.Meta().NumDelivered <= 1)
	log := w.log.With(slog.String("msg", m.ID), slog.Uint64("seq", d.Meta().Sequence))
	switch {
	case out.term:
		log.ErrorContext(ctx, "dropping a message that names no job", slog.Any("err", err))
		if err := d.Term(ctx); err != nil {
			log.WarnContext(ctx, "term failed", slog.Any("err", err))
		}
	case out.retry > 0:
		log.WarnContext(ctx, "job not done; will retry", slog.Duration("after", out.retry), slog.Any("err", err))
		if err := d.Nak(ctx, out.retry); err != nil {
			log.WarnContext(ctx, "nak failed", slog.Any("err", err))
		}
	default:
		w.s.cfg.CrashPoint.pass(CrashAfterPersist)
		if err := d.Ack(ctx); err != nil {
			// Redelivered later and acknowledged then without signing.
			log.WarnContext(ctx, "ack failed", slog.Any("err", err))
			return
		}
		w.s.cfg.CrashPoint.pass(CrashAfterAck)
		w.callback(ctx, out.job)
	}
}

// Process runs one message to a finished job, as a delivery would, and
// returns nil when the job is finished (signed or failed). Replay uses it.
func (w *Worker) Process(ctx context.Context, m queue.Message) error {
	out, err := w.process(ctx, m, false)
	switch {
	case out.term:
		return fmt.Errorf("node: message %s: %w", m.ID, err)
	case out.retry > 0:
		return fmt.Errorf("node: message %s not done: %w", m.ID, err)
	}
	w.callback(ctx, out.job)
	return nil
}

// process runs one message. first is true on a message's first delivery:
// the store commits a signature and its job's transition together and
// refuses a synchronous signature for a key an accepted job holds, so only
// a redelivery (or a replay) can meet a signature its job does not record;
// only those look for one and count an attempt.
func (w *Worker) process(ctx context.Context, m queue.Message, first bool) (outcome, error) {
	var jm jobMessage
	if err := json.Unmarshal(m.Body, &jm); err != nil || jm.JobID == "" {
		return outcome{term: true}, fmt.Errorf("malformed job message: %v", err)
	}
	jobs := w.s.cfg.Jobs
	j, err := jobs.Job(ctx, m.Tenant, jm.JobID)
	if errors.Is(err, store.ErrNotFound) {
		return outcome{term: true}, fmt.Errorf("job %s of tenant %s: %w", jm.JobID, m.Tenant, err)
	}
	if err != nil {
		return outcome{retry: time.Second}, err
	}
	if j.State != store.JobAccepted {
		return outcome{job: &j}, nil
	}
	if !first {
		if out, err, done := w.recover(ctx, &j); done {
			return out, err
		}
	}
	var req api.SignRequest
	if err := json.Unmarshal(j.Request, &req); err != nil {
		return w.fail(ctx, &j, internalError(fmt.Errorf("stored request: %w", err)))
	}
	_, _, err = w.s.signOnce(withJob(ctx, w.s, &j), j.TenantID, j.IdempotencyKey, j.RequestHash, &req)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) && he.Problem.Status < 500 {
			return w.fail(ctx, &j, he)
		}
		return outcome{retry: retryDelay(j.Attempts + 1)}, err
	}
	if j.CallbackURL == "" {
		return outcome{job: &j}, nil // nothing reads the finished job
	}
	return w.reload(ctx, &j)
}

// recover handles a redelivered accepted job: it completes the job with a
// signature its key already has (never signing again), counts the attempt,
// and fails the job after MaxAttempts. done is false when signing should
// proceed.
func (w *Worker) recover(ctx context.Context, j *store.Job) (out outcome, err error, done bool) {
	jobs := w.s.cfg.Jobs
	sig, err := jobs.SignatureByIdempotencyKey(ctx, j.TenantID, j.IdempotencyKey)
	switch {
	case err == nil:
		if !bytes.Equal(sig.RequestHash, j.RequestHash) {
			out, err := w.fail(ctx, j, problem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
				"this Idempotency-Key was already used for a different request"))
			return out, err, true
		}
		// The signature exists but the job does not record it: complete the
		// job with it (one transaction: job signed, signature linked, a
		// job.completed_from_existing event), never sign again.
		if _, err := w.s.linkJob(ctx, j, &sig); err != nil {
			return outcome{retry: time.Second}, err, true
		}
		out, err := w.reload(ctx, j)
		return out, err, true
	case !errors.Is(err, store.ErrNotFound):
		return outcome{retry: time.Second}, err, true
	}
	attempts, err := jobs.IncrementJobAttempts(ctx, j.ID)
	if err != nil {
		return outcome{retry: time.Second}, err, true
	}
	j.Attempts = attempts
	if attempts > w.cfg.MaxAttempts {
		out, err := w.fail(ctx, j, unavailable(fmt.Sprintf("signing failed %d times; giving up", w.cfg.MaxAttempts), 0, nil))
		return out, err, true
	}
	return outcome{}, nil, false
}

func (w *Worker) reload(ctx context.Context, j *store.Job) (outcome, error) {
	got, err := w.s.cfg.Jobs.Job(ctx, j.TenantID, j.ID)
	if err != nil {
		return outcome{retry: time.Second}, err
	}
	if got.State == store.JobAccepted {
		return outcome{retry: time.Second}, fmt.Errorf("job %s still accepted after its commit", j.ID)
	}
	return outcome{job: &got}, nil
}

// fail records a permanent failure the client will see on the job.
func (w *Worker) fail(ctx context.Context, j *store.Job, he *httpError) (outcome, error) {
	p := *he.Problem
	body, err := json.Marshal(&p)
	if err != nil {
		return outcome{retry: time.Second}, err
	}
	now := w.cfg.Now().UTC().Truncate(time.Microsecond)
	ev, err := w.s.jobEvent("job.failed", j, now, map[string]any{"status": p.Status, "type": p.Type})
	if err != nil {
		return outcome{retry: time.Second}, err
	}
	if err := w.s.cfg.Jobs.FailJob(ctx, j.ID, body, ev); err != nil {
		return outcome{retry: time.Second}, err
	}
	w.log.WarnContext(ctx, "job failed", logJob(j), slog.Int("status", p.Status), slog.Any("err", he))
	return w.reload(ctx, j)
}

func retryDelay(attempts int) time.Duration {
	d := time.Second << min(attempts, 6)
	return min(d, time.Minute)
}

// callback sends the finished job to its callback URL in the background,
// retrying with exponential backoff and recording every attempt in the job
// (store.JobStore.RecordCallbackAttempt). A callback not delivered — the
// process died after the ack, or the retries ran out — is sent again by
// SweepCallbacks; GET /v1/jobs/{id} stays the record either way.
//
// It reports whether it started a delivery (false when none is due or one
// is already under way).
func (w *Worker) callback(ctx context.Context, j *store.Job) bool {
	if j == nil || j.CallbackURL == "" || !j.CallbackDeliveredAt.IsZero() || j.CallbackAttempts >= w.cfg.CallbackAttempts {
		return false
	}
	w.mu.Lock()
	busy := w.sending[j.ID]
	w.sending[j.ID] = true
	w.mu.Unlock()
	if busy {
		return false
	}
	body, err := w.s.renderJob(ctx, j)
	if err != nil {
		w.doneSending(j.ID)
		w.log.WarnContext(ctx, "callback not sent: rendering the job failed", logJob(j), slog.Any("err", err))
		return false
	}
	w.callbacks.Add(1)
	go func() {
		defer w.callbacks.Done()
		defer w.doneSending(j.ID)
		w.deliverCallback(ctx, j, body)
	}()
	return true
}

func (w *Worker) doneSending(jobID string) {
	w.mu.Lock()
	delete(w.sending, jobID)
	w.mu.Unlock()
}

// callbackDelay is the wait after the n-th failed attempt (n >= 1).
func (w *Worker) callbackDelay(n int) time.Duration {
	return min(w.cfg.CallbackBackoff<<min(max(n-1, 0), 16), time.Minute)
}

func (w *Worker) deliverCallback(ctx context.Context, j *store.Job, body []byte) {
	for attempt := j.CallbackAttempts + 1; ; attempt++ {
		err := w.postCallback(ctx, j, body, attempt)
		if ctx.Err() != nil {
			return // stopping: not an attempt the client could have seen answered
		}
		if rerr := w.s.cfg.Jobs.RecordCallbackAttempt(ctx, j.ID, w.cfg.Now().UTC().Truncate(time.Microsecond), err == nil); rerr != nil {
			w.log.WarnContext(ctx, "callback attempt not recorded", logJob(j), slog.Any("err", rerr))
		}
		if err == nil {
			return
		}
		var perm permanentError
		if errors.As(err, &perm) || attempt >= w.cfg.CallbackAttempts {
			w.log.WarnContext(ctx, "callback not delivered; the sweeper retries it until the attempts run out",
				logJob(j), slog.Int("attempts", attempt), slog.Any("err", err))
			return
		}
		t := time.NewTimer(w.callbackDelay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// SweepCallbacks starts delivery of the callbacks of finished jobs that
// were not delivered, and returns how many it started. A job is due
// SweepAfter after it finished (its own worker delivers before that) and,
// after a failed attempt, once the backoff since that attempt has passed.
// Callbacks are at least once: a receiver deduplicates by
// Countersign-Job-Id.
func (w *Worker) SweepCallbacks(ctx context.Context) (int, error) {
	jobs, err := w.s.cfg.Jobs.JobsAwaitingCallback(ctx, w.cfg.CallbackAttempts, w.cfg.SweepBatch)
	if err != nil {
		return 0, fmt.Errorf("node: callback sweep: %w", err)
	}
	now := w.cfg.Now()
	n := 0
	for i := range jobs {
		j := &jobs[i]
		due := j.FinishedAt.Add(w.cfg.SweepAfter)
		if j.CallbackAttempts > 0 {
			due = later(due, j.CallbackLastAt.Add(w.callbackDelay(j.CallbackAttempts)))
		}
		if now.Before(due) {
			continue
		}
		if w.callback(ctx, j) {
			n++
		}
	}
	if n > 0 {
		w.log.InfoContext(ctx, "sweeper re-sending undelivered callbacks", slog.Int("jobs", n))
	}
	return n, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type permanentError struct{ error }

func (w *Worker) postCallback(ctx context.Context, j *store.Job, body []byte, attempt int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "countersign/"+w.s.cfg.Release)
	req.Header.Set("Countersign-Job-Id", j.ID)
	req.Header.Set("Countersign-Delivery-Attempt", strconv.Itoa(attempt))
	if len(w.cfg.CallbackSecret) > 0 {
		req.Header.Set(CallbackSignatureHeader, SignCallback(w.cfg.CallbackSecret, w.cfg.Now(), body))
	}
	resp, err := w.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return permanentError{fmt.Errorf("callback answered %s", resp.Status)}
}

// SignCallback returns the Countersign-Signature header value for body sent
// at t: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>".
func SignCallback(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(callbackMAC(secret, ts, body))
}

func callbackMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// ErrCallbackSignature is returned by VerifyCallback for a callback that is
// not authentic or too old.
var ErrCallbackSignature = errors.New("node: callback signature invalid")

// VerifyCallback checks a received callback: header is the
// Countersign-Signature value, body the raw request body. It accepts any v1
// that matches (several are sent while a secret is rotated) and refuses a
// timestamp further than tolerance from now, which bounds replays.
func VerifyCallback(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: malformed header", ErrCallbackSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %s outside tolerance %s", ErrCallbackSignature, time.Unix(sec, 0).UTC().Format(time.RFC3339), tolerance)
	}
	want := callbackMAC(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: no matching v1 signature", ErrCallbackSignature)
}
