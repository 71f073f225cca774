// Package jetstream implements queue.Queue on NATS JetStream, either on an
// embedded in-process server (the default for one machine) or on an
// external server or cluster reached by URL.
//
// Layout: the work stream Config.Stream holds subjects
// "<Subject>.work.<h>" and the replay stream Config.Stream+"_REPLAY" holds
// "<Subject>.replay.<h>", where h is the hex SHA-256 of the message ID, so
// a message is found by ID with one last-message-for-subject lookup. The ID
// also travels as Nats-Msg-Id for the server's de-duplication window.
// Streams use limits retention, so acknowledged messages stay available to
// quarantine, snapshot and audit until the stream's limits remove them.
//
// Durability: Publish returns after the PubAck, i.e. once the stream leader
// (and, with Replicas > 1, a quorum) has stored the message. Whether
// "stored" means fsynced depends on the server: with SyncAlways every write
// is fsynced before the PubAck (measured here at ~2k publishes/s); without
// it the file store fsyncs periodically, so a power loss can lose the
// last accepted messages while a process crash cannot (~15k/s). For an
// external server this is the server's own sync_interval setting.
package jetstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/countersign/countersign/internal/queue"
)

// Defaults for Config.
const (
	DefaultStream          = "COUNTERSIGN_SIGN"
	DefaultSubject         = "countersign.sign"
	DefaultAckWait         = 30 * time.Second
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultPrefetch        = 32
	replayConsumer         = "replay"
	hdrQuarantinedFrom     = "Countersign-Quarantined-From-Seq"
)

// Config names the streams and sets consumer behaviour.
type Config struct {
	Stream          string        // work stream name; default DefaultStream
	Subject         string        // subject prefix; default DefaultSubject
	AckWait         time.Duration // redelivery delay for unacknowledged messages; default 30s
	DuplicateWindow time.Duration // Nats-Msg-Id de-duplication window; default 2m
	// Replicas of the streams on a cluster. 0 keeps an existing stream's
	// replication and creates a new one with 1, so a process that does
	// not say (an operator's `countersign queue stats`) never changes it.
	Replicas int
	Prefetch int          // messages a subscription buffers; default 32
	Logger   *slog.Logger // default slog.Default()
}

func (c Config) withDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Queue is a queue.Queue on JetStream. It is safe for concurrent use.
type Queue struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	work    jetstream.Stream
	replay  jetstream.Stream
	onClose []func()

	mu     sync.Mutex
	closed bool
}

var (
	_ queue.Queue        = (*Queue)(nil)
	_ queue.Deduplicator = (*Queue)(nil)
)

// New creates or updates the streams on nc's server and returns a Queue
// using them. The caller keeps ownership of nc.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Queue, error) {
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	q := &Queue{cfg: cfg, nc: nc, js: js}
	q.work, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Stream,
		Subjects:   []string{cfg.Subject + ".work.>"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: cfg.DuplicateWindow,
		Replicas:   q.replicas(ctx, cfg.Stream),
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: stream %s: %w", cfg.Stream, err)
	}
	q.replay, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      q.replayStream(),
		Subjects:  []string{cfg.Subject + ".replay.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  q.replicas(ctx, q.replayStream()),
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: stream %s: %w", q.replayStream(), err)
	}
	return q, nil
}

// replicas is the replication to create or update stream name with: the
// configured one, else the stream's current one, else 1.
func (q *Queue) replicas(ctx context.Context, name string) int {
	if q.cfg.Replicas > 0 {
		return q.cfg.Replicas
	}
	if s, err := q.js.Stream(ctx, name); err == nil {
		if r := s.CachedInfo().Config.Replicas; r > 0 {
			return r
		}
	}
	return 1
}

// Dial connects to an external server or cluster (comma-separated URLs)
// and returns a Queue that closes the connection on Close.
func Dial(ctx context.Context, url string, cfg Config, opts ...nats.Option) (*Queue, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("countersign")}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect: %w", err)
	}
	q, err := New(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	q.onClose = append(q.onClose, nc.Close)
	return q, nil
}

// OpenEmbedded starts an embedded server and returns a Queue on it that
// shuts the server down on Close.
func OpenEmbedded(ctx context.Context, scfg ServerConfig, cfg Config) (*Queue, error) {
	srv, err := StartServer(scfg)
	if err != nil {
		return nil, err
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	q, err := New(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	q.onClose = append(q.onClose, nc.Close, srv.Shutdown)
	return q, nil
}

// Streams returns the work and replay stream names.
func (q *Queue) Streams() (work, replay string) { return q.cfg.Stream, q.replayStream() }

// DuplicateWindow implements queue.Deduplicator.
func (q *Queue) DuplicateWindow() time.Duration { return q.cfg.DuplicateWindow }

// Close releases what the Queue owns. Running subscriptions must be
// stopped first.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	for _, f := range q.onClose {
		f()
	}
	return nil
}

func (q *Queue) replayStream() string { return q.cfg.Stream + "_REPLAY" }

func idToken(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (q *Queue) workSubject(id string) string   { return q.cfg.Subject + ".work." + idToken(id) }
func (q *Queue) replaySubject(id string) string { return q.cfg.Subject + ".replay." + idToken(id) }

func (q *Queue) checkOpen() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return queue.ErrClosed
	}
	return nil
}

// Publish implements queue.Queue.
func (q *Queue) Publish(ctx context.Context, m queue.Message) (queue.PublishResult, error) {
	if err := m.Validate(); err != nil {
		return queue.PublishResult{}, err
	}
	if err := q.checkOpen(); err != nil {
		return queue.PublishResult{}, err
	}
	msg := toNATS(q.workSubject(m.ID), m)
	ack, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.ID))
	if err != nil {
		return queue.PublishResult{}, fmt.Errorf("jetstream: publish %s: %w", m.ID, err)
	}
	return queue.PublishResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

func toNATS(subject string, m queue.Message) *nats.Msg {
	msg := nats.NewMsg(subject)
	for k, v := range m.Headers {
		msg.Header.Set(k, v)
	}
	msg.Header.Set(queue.HeaderTenant, m.Tenant)
	msg.Header.Set(queue.HeaderID, m.ID)
	msg.Data = m.Body
	return msg
}

func fromNATS(h nats.Header, data []byte) queue.Message {
	m := queue.Message{ID: h.Get(queue.HeaderID), Tenant: h.Get(queue.HeaderTenant), Body: data}
	for k := range h {
		if k == queue.HeaderID || k == queue.HeaderTenant || k == hdrQuarantinedFrom || strings.HasPrefix(k, "Nats-") {
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string)
		}
		m.Headers[k] = h.Get(k)
	}
	return m
}

// consumer returns the named durable consumer on the work stream,
// creating it when missing. An existing consumer is never updated, so a
// pause set on it survives.
func (q *Queue) consumer(ctx context.Context, stream jetstream.Stream, name, filter string) (jetstream.Consumer, error) {
	c, err := stream.Consumer(ctx, name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("jetstream: consumer %s: %w", name, err)
	}
	c, err = stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.cfg.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: create consumer %s: %w", name, err)
	}
	return c, nil
}

func (q *Queue) workConsumer(ctx context.Context, name string) (jetstream.Consumer, error) {
	return q.consumer(ctx, q.work, name, q.cfg.Subject+".work.>")
}

// Consume implements queue.Queue.
// pullExpiry bounds how long a worker's pull request waits on the server:
// the delay between Resume and the first delivery after it.
const pullExpiry = 2 * time.Second

func (q *Queue) Consume(ctx context.Context, name string, h queue.Handler) (queue.Subscription, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	c, err := q.workConsumer(ctx, name)
	if err != nil {
		return nil, err
	}
	log := q.cfg.Logger.With(slog.String("stream", q.cfg.Stream), slog.String("consumer", name))
	cc, err := c.Consume(func(msg jetstream.Msg) {
		h(ctx, delivery{msg: msg})
	},
		jetstream.PullMaxMessages(q.cfg.Prefetch),
		// A pull request outstanding while the consumer is paused is
		// not served after Resume; the next one is. The client's default
		// expiry (30 s) made a resumed consumer wait up to that long.
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			log.WarnContext(ctx, "jetstream consume", slog.Any("err", err))
		}))
	if err != nil {
		return nil, fmt.Errorf("jetstream: consume %s: %w", name, err)
	}
	s := &subscription{cc: cc, done: make(chan struct{})}
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.done:
		}
	}()
	return s, nil
}

type subscription struct {
	cc   jetstream.ConsumeContext
	once sync.Once
	done chan struct{}
}

// Stop ends delivery and waits until the handler has returned.
func (s *subscription) Stop() {
	s.once.Do(func() {
		close(s.done)
		s.cc.Stop()
		<-s.cc.Closed()
	})
}

type delivery struct{ msg jetstream.Msg }

func (d delivery) Message() queue.Message { return fromNATS(d.msg.Headers(), d.msg.Data()) }

func (d delivery) Meta() queue.DeliveryMeta {
	md, err := d.msg.Metadata()
	if err != nil {
		return queue.DeliveryMeta{}
	}
	return queue.DeliveryMeta{Sequence: md.Sequence.Stream, NumDelivered: md.NumDelivered, Published: md.Timestamp}
}

// Ack waits for the server to confirm, so a returned nil means the
// acknowledgement is recorded.
func (d delivery) Ack(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

func (d delivery) Nak(_ context.Context, delay time.Duration) error {
	if delay <= 0 {
		return d.msg.Nak()
	}
	return d.msg.NakWithDelay(delay)
}

func (d delivery) Term(_ context.Context) error { return d.msg.Term() }
