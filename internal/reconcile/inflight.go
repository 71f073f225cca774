package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/store"
)

// In-flight item kinds.
const (
	// KindAcceptedUnsigned: an accepted async job with no signature under
	// its idempotency key (signed-but-unpersisted work looks the same: the
	// commit never landed).
	KindAcceptedUnsigned = "accepted-unsigned"
	// KindSignedIncomplete: an accepted job whose idempotency key already
	// holds its signature; the replay links it without signing again.
	KindSignedIncomplete = "signed-incomplete"
	// KindAmbiguous: cannot be decided from the store; manual review.
	KindAmbiguous = "ambiguous"
)

// Item is one piece of in-flight work.
type Item struct {
	Kind           string    `json:"kind"`
	JobID          string    `json:"job_id"`
	TenantID       string    `json:"tenant"`
	IdempotencyKey string    `json:"idempotency_key"`
	MessageID      string    `json:"message_id"`
	Release        string    `json:"release"`
	Instance       string    `json:"instance"`
	AcceptedAt     time.Time `json:"accepted_at"`
	Attempts       int       `json:"attempts"`
	SignatureID    string    `json:"signature_id,omitempty"`
	Reason         string    `json:"reason,omitempty"`
}

// InFlight is the replay set and the items left for manual review.
type InFlight struct {
	Replay       []Item `json:"replay"`
	ManualReview []Item `json:"manual_review"`
}

// JobStore is what finding and replaying in-flight work reads (store.Store).
type JobStore interface {
	JobsByState(ctx context.Context, state string, acceptedFrom, acceptedTo time.Time, limit int) ([]store.Job, error)
	JobByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Job, error)
	SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Signature, error)
}

// FindInFlight lists the jobs accepted in [w.From, w.To) (and, since an
// accepted job is unfinished whenever it was accepted, before From too when
// includeOlder is set) that are still accepted, classified.
func FindInFlight(ctx context.Context, st JobStore, w Window, includeOlder bool) (InFlight, error) {
	from := w.From
	if includeOlder {
		from = time.Time{}
	}
	jobs, err := st.JobsByState(ctx, store.JobAccepted, from, w.To, 0)
	if err != nil {
		return InFlight{}, fmt.Errorf("reconcile: accepted jobs: %w", err)
	}
	out := InFlight{Replay: []Item{}, ManualReview: []Item{}}
	for _, j := range jobs {
		it := Item{JobID: j.ID, TenantID: j.TenantID, IdempotencyKey: j.IdempotencyKey, MessageID: MessageID(j.TenantID, j.IdempotencyKey),
			Release: j.Release, Instance: j.Instance, AcceptedAt: j.AcceptedAt, Attempts: j.Attempts}
		if !json.Valid(j.Request) || len(j.RequestHash) == 0 {
			it.Kind, it.Reason = KindAmbiguous, "the stored request is unreadable or has no hash; it cannot be replayed as the client sent it"
			out.ManualReview = append(out.ManualReview, it)
			continue
		}
		sig, err := st.SignatureByIdempotencyKey(ctx, j.TenantID, j.IdempotencyKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
			it.Kind = KindAcceptedUnsigned
			out.Replay = append(out.Replay, it)
		case err != nil:
			return InFlight{}, fmt.Errorf("reconcile: signature of job %s: %w", j.ID, err)
		case !bytes.Equal(sig.RequestHash, j.RequestHash):
			it.Kind, it.SignatureID = KindAmbiguous, sig.ID
			it.Reason = "the idempotency key holds signature " + sig.ID + " made for a different request; signing would create a second artifact for one key"
			out.ManualReview = append(out.ManualReview, it)
		default:
			it.Kind, it.SignatureID = KindSignedIncomplete, sig.ID
			out.Replay = append(out.Replay, it)
		}
	}
	return out, nil
}

// Processor runs one job message to completion through a stable node's
// idempotent worker path (node.Worker.Process).
type Processor interface {
	Process(ctx context.Context, m queue.Message) error
}

// ReplayQueue is the queue's quarantine-and-replay control (queue.Queue).
type ReplayQueue interface {
	Quarantine(ctx context.Context, sel queue.Selector) (queue.QuarantineResult, error)
	Replay(ctx context.Context, opts queue.ReplayOptions) (queue.ReplayResult, error)
}

// DefaultReplayRate is the default replay rate, in jobs per second.
const DefaultReplayRate = 20

// ReplayConfig configures Replay.
type ReplayConfig struct {
	Jobs JobStore
	// Processor is the stable release's worker. Required unless DryRun.
	Processor Processor
	// Queue, if set, receives the replay set's message IDs (and Extra) in
	// its quarantine, and the replay runs from there; items the queue does
	// not hold are replayed from their job rows.
	Queue ReplayQueue
	// Extra selects further queued messages (e.g. a stream sequence range
	// from the snapshot's queue positions).
	Extra        queue.Selector
	Window       Window
	IncludeOlder bool
	// Rate bounds replays per second (default DefaultReplayRate).
	Rate   float64
	DryRun bool
	Logger *slog.Logger
}

// ReplayFailure is one replay that did not finish.
type ReplayFailure struct {
	MessageID string `json:"message_id"`
	Error     string `json:"error"`
}

// ReplayReport is what Replay found and did.
type ReplayReport struct {
	DryRun      bool            `json:"dry_run"`
	Found       InFlight        `json:"found"`
	Quarantined []string        `json:"quarantined,omitempty"`
	Replayed    []string        `json:"replayed"`
	Failed      []ReplayFailure `json:"failed"`
	// Outcome is each replayed job's state afterwards, by message ID.
	Outcome map[string]string `json:"outcome"`
}

// Replay finds the in-flight set and, unless DryRun, replays it through
// the stable worker at cfg.Rate. Idempotency is the worker's: a job that is
// already signed is acknowledged without signing, and a job whose key holds
// its signature is linked to it, so running Replay again creates nothing.
// Ambiguous items are never replayed.
func Replay(ctx context.Context, cfg ReplayConfig) (*ReplayReport, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	found, err := FindInFlight(ctx, cfg.Jobs, cfg.Window, cfg.IncludeOlder)
	if err != nil {
		return nil, err
	}
	rep := &ReplayReport{DryRun: cfg.DryRun, Found: found, Replayed: []string{}, Failed: []ReplayFailure{}, Outcome: map[string]string{}}
	if cfg.DryRun {
		return rep, nil
	}
	if cfg.Processor == nil {
		return nil, errors.New("reconcile: Replay needs a Processor (the stable release's worker)")
	}
	r := cfg.Rate
	if r <= 0 {
		r = DefaultReplayRate
	}
	items := map[string]Item{}
	for _, it := range found.Replay {
		items[it.MessageID] = it
	}
	manual := map[string]bool{}
	for _, it := range found.ManualReview {
		manual[it.MessageID] = true
	}
	done := map[string]bool{}
	process := func(ctx context.Context, m queue.Message) error {
		if manual[m.ID] {
			// Ambiguous: never replayed. Marking the queue copy replayed is
			// right; the job row keeps it on the manual-review list.
			return nil
		}
		if err := cfg.Processor.Process(ctx, m); err != nil {
			rep.Failed = append(rep.Failed, ReplayFailure{MessageID: m.ID, Error: err.Error()})
			log.WarnContext(ctx, "replay failed; the job stays accepted for the next run", "msg", m.ID, "err", err)
		} else {
			rep.Replayed = append(rep.Replayed, m.ID)
		}
		done[m.ID] = true
		return nil
	}
	if cfg.Queue != nil {
		sel := cfg.Extra
		for id := range items {
			sel.IDs = append(sel.IDs, id)
		}
		if len(sel.IDs) > 0 || sel.ToSeq > 0 {
			q, err := cfg.Queue.Quarantine(ctx, sel)
			if err != nil {
				return nil, fmt.Errorf("reconcile: quarantine: %w", err)
			}
			rep.Quarantined = q.Moved
			_, err = cfg.Queue.Replay(ctx, queue.ReplayOptions{Rate: r, Handler: process})
			if err != nil && !errors.Is(err, queue.ErrNothingToReplay) {
				return rep, fmt.Errorf("reconcile: queue replay: %w", err)
			}
		}
	}
	lim := rate.NewLimiter(rate.Limit(r), 1)
	for _, it := range found.Replay {
		if done[it.MessageID] {
			continue
		}
		if err := lim.Wait(ctx); err != nil {
			return rep, fmt.Errorf("reconcile: replay: %w", err)
		}
		if err := process(ctx, JobMessage(it.TenantID, it.IdempotencyKey, it.JobID)); err != nil {
			return rep, err
		}
	}
	for _, it := range found.Replay {
		j, err := cfg.Jobs.JobByIdempotencyKey(ctx, it.TenantID, it.IdempotencyKey)
		if err != nil {
			return rep, fmt.Errorf("reconcile: job %s after replay: %w", it.JobID, err)
		}
		rep.Outcome[it.MessageID] = j.State
	}
	return rep, nil
}

// MessageID is the queue message ID of a tenant's idempotency key,
// "<tenant>/<idempotency key>" (queue.Message, node.MessageID).
func MessageID(tenant, idempotencyKey string) string { return tenant + "/" + idempotencyKey }

// JobMessage is the queue message of a job as the node publishes it: its
// ID is MessageID and its body names the job (the request itself stays in
// the job row).
func JobMessage(tenant, idempotencyKey, jobID string) queue.Message {
	body, _ := json.Marshal(struct {
		JobID string `json:"job_id"`
	}{jobID})
	return queue.Message{ID: MessageID(tenant, idempotencyKey), Tenant: tenant, Body: body}
}
