package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Sentinel errors shared by every backend.
var (
	// ErrInvalidMessage is returned by Publish for a message without an ID
	// or tenant, or whose ID does not start with "<tenant>/".
	ErrInvalidMessage = errors.New("queue: invalid message")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("queue: closed")
	// ErrNothingToReplay is returned by Replay when every quarantined
	// message has already been replayed.
	ErrNothingToReplay = errors.New("queue: nothing to replay")
	// ErrUnsupported is returned for a control a backend cannot perform.
	ErrUnsupported = errors.New("queue: unsupported by backend")
)

// Standard header names set on every message by every backend.
const (
	HeaderTenant = "Countersign-Tenant"
	HeaderID     = "Countersign-Msg-Id"
)

// Message is one unit of asynchronous work.
type Message struct {
	// ID is "<tenant>/<idempotency key>" and identifies the work for
	// de-duplication, quarantine and replay.
	ID      string
	Tenant  string
	Body    []byte
	Headers map[string]string
}

// Validate reports whether m can be published.
func (m Message) Validate() error {
	switch {
	case m.Tenant == "":
		return fmt.Errorf("%w: empty tenant", ErrInvalidMessage)
	case m.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidMessage)
	case !strings.HasPrefix(m.ID, m.Tenant+"/") || len(m.ID) == len(m.Tenant)+1:
		return fmt.Errorf("%w: id %q is not %q/<key>", ErrInvalidMessage, m.ID, m.Tenant)
	}
	return nil
}

// PublishResult is what the broker said about an accepted message.
type PublishResult struct {
	// Sequence is the stream sequence (JetStream) or offset+1 within the
	// partition (Kafka); it is never 0 for an accepted message.
	Sequence uint64
	// Duplicate is true when the broker recognised the ID and did not store
	// the message again (JetStream within its de-duplication window only).
	Duplicate bool
}

// DeliveryMeta describes one delivery of a message.
type DeliveryMeta struct {
	// Sequence is the message's position as in PublishResult.Sequence.
	Sequence uint64
	// Partition is the Kafka partition; always 0 on JetStream.
	Partition int32
	// NumDelivered counts deliveries of this message, 1 on the first.
	NumDelivered uint64
	// Published is the broker's timestamp for the message.
	Published time.Time
}

// Delivery is a message handed to a Handler. Exactly one of Ack, Nak or
// Term should be called; a delivery left alone is redelivered after the
// backend's ack wait or when its consumer stops.
type Delivery interface {
	Message() Message
	Meta() DeliveryMeta
	// Ack marks the message done; it will not be delivered again.
	Ack(ctx context.Context) error
	// Nak asks for redelivery after delay.
	Nak(ctx context.Context, delay time.Duration) error
	// Term marks the message as never to be delivered again without
	// processing it (a poison message).
	Term(ctx context.Context) error
}

// Handler processes one delivery. Handlers of one Subscription are called
// one at a time.
type Handler func(ctx context.Context, d Delivery)

// Subscription is a running consumer. Stop ends delivery; messages
// delivered but not acknowledged are redelivered later to another
// subscription of the same consumer.
type Subscription interface {
	Stop()
}

// Stats is a point-in-time view of one consumer.
type Stats struct {
	Consumer string `json:"consumer"`
	// Backlog counts messages not yet delivered to the consumer.
	Backlog uint64 `json:"backlog"`
	// AckPending counts messages delivered but not yet acknowledged.
	AckPending uint64 `json:"ack_pending"`
	// Redelivered counts messages delivered more than once and still
	// unacknowledged.
	Redelivered uint64 `json:"redelivered"`
	// Pending counts every message the consumer has not acknowledged:
	// Backlog + AckPending.
	Pending uint64 `json:"pending"`
	Paused  bool   `json:"paused"`
}

// Selector chooses messages to quarantine: those whose ID is in IDs, plus
// those whose sequence is in [FromSeq, ToSeq] when ToSeq > 0. On Kafka the
// sequence range applies within every partition.
type Selector struct {
	IDs     []string `json:"ids,omitempty"`
	FromSeq uint64   `json:"from_seq,omitempty"`
	ToSeq   uint64   `json:"to_seq,omitempty"`
}

// QuarantineResult lists what Quarantine did, per message ID.
type QuarantineResult struct {
	// Moved are the IDs copied into the replay set by this call.
	Moved []string `json:"moved"`
	// AlreadyQuarantined are selected IDs already in the replay set (and
	// perhaps already replayed); they were not copied again.
	AlreadyQuarantined []string `json:"already_quarantined,omitempty"`
	// NotFound are selected IDs with no message in the work stream.
	NotFound []string `json:"not_found,omitempty"`
}

// ReplayOptions controls Replay.
type ReplayOptions struct {
	// Rate is the maximum number of deliveries per second; it must be > 0.
	Rate float64
	// Max bounds the number of messages delivered; 0 means all.
	Max int
	// DryRun lists the IDs that would be delivered without delivering.
	DryRun bool
	// Handler receives each replayed message. A nil error marks it
	// replayed; an error stops the replay and leaves it (and the rest)
	// to the next one. Not called on DryRun.
	Handler func(ctx context.Context, m Message) error
}

// ReplayResult lists, in order, the IDs Replay delivered (or, on DryRun,
// would deliver).
type ReplayResult struct {
	IDs    []string `json:"ids"`
	DryRun bool     `json:"dry_run"`
}

// SnapshotInfo describes what Snapshot wrote.
type SnapshotInfo struct {
	// Format names the archive layout, e.g. "jetstream-snapshot/v1".
	Format string `json:"format"`
	// SHA256 is the lower-case hex digest of exactly the bytes written.
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Queue is the durable queue every backend implements.
type Queue interface {
	// Publish stores m; on return without error the message is accepted
	// (see the package documentation for what that means per backend).
	Publish(ctx context.Context, m Message) (PublishResult, error)
	// Consume starts delivering to h as the durable consumer named
	// consumer, creating it on first use, until ctx ends or Stop.
	Consume(ctx context.Context, consumer string, h Handler) (Subscription, error)
	// Pause stops delivery to the named consumer, durably, until Resume.
	Pause(ctx context.Context, consumer string) error
	Resume(ctx context.Context, consumer string) error
	Stats(ctx context.Context, consumer string) (Stats, error)
	Positions(ctx context.Context) (Positions, error)
	// Snapshot writes an archive of the queue to w.
	Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error)
	Quarantine(ctx context.Context, sel Selector) (QuarantineResult, error)
	Replay(ctx context.Context, opts ReplayOptions) (ReplayResult, error)
	Close() error
}

// Deduplicator is implemented by backends that recognise a repeated
// Message.ID at publish time, within a window.
type Deduplicator interface {
	DuplicateWindow() time.Duration
}
