// Package kafka implements queue.Queue on Apache Kafka with franz-go.
//
// Layout: work records go to Config.Topic with the message ID as record
// key (so one ID always lands in one partition) and in the
// Countersign-Msg-Id header. Quarantined copies go to Topic+".replay" (one
// partition, so replay order is quarantine order) and pause state lives in
// the compacted Topic+".control" topic, keyed by consumer name. A consumer
// named N is the consumer group Topic+"."+N; the replay's progress is the
// committed offset of group Topic+".replay".
//
// "Accepted" means the partition leader acknowledged the produce request
// with acks=all, i.e. every in-sync replica holds the record; Kafka has no
// publish-time de-duplication by ID, so repeats are stored as new records
// and PublishResult.Duplicate is always false.
//
// Sequences are partition offsets plus one. Delivery counts are kept in the
// consuming process and restart at 1 after a rebalance or restart, because
// Kafka does not record deliveries. Ack commits the group offset once every
// earlier delivered offset of the partition is acknowledged, so a consumer
// that dies redelivers from its oldest unacknowledged record.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/countersign/countersign/internal/queue"
)

// Defaults for Config.
const (
	DefaultTopic      = "countersign.sign"
	DefaultPartitions = 1
)

// Config locates the cluster and names the topics.
type Config struct {
	Brokers           []string
	Topic             string // default DefaultTopic
	Partitions        int32  // partitions of a newly created work topic; default 1
	ReplicationFactor int16  // of newly created topics; default -1 (broker default)
	Logger            *slog.Logger
	// ClientOpts are extra franz-go options (TLS, SASL) for every client.
	ClientOpts []kgo.Opt
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Queue is a queue.Queue on Kafka. It is safe for concurrent use.
type Queue struct {
	cfg  Config
	cl   *kgo.Client // producer and metadata
	adm  *kadm.Client
	ctrl *control

	mu     sync.Mutex
	subs   map[string][]*subscription
	closed bool
}

var _ queue.Queue = (*Queue)(nil)

// New connects, creates the topics when missing and starts watching pause
// state.
func New(ctx context.Context, cfg Config) (*Queue, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: Config.Brokers is empty")
	}
	cl, err := kgo.NewClient(cfg.opts(kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return nil, fmt.Errorf("kafka: client: %w", err)
	}
	// Ping tries each broker once and returns the last failure (refused
	// connection, TLS or SASL error); without it the first request retries
	// until ctx ends and reports only the deadline.
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka: no broker answered: %w", err)
	}
	q := &Queue{cfg: cfg, cl: cl, adm: kadm.NewClient(cl), subs: map[string][]*subscription{}}
	if err := q.createTopics(ctx); err != nil {
		cl.Close()
		return nil, err
	}
	q.ctrl, err = startControl(ctx, q)
	if err != nil {
		cl.Close()
		return nil, err
	}
	return q, nil
}

func (c Config) opts(extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	opts = append(opts, c.ClientOpts...)
	return append(opts, extra...)
}

// Topics returns the work, replay and control topic names.
func (q *Queue) Topics() (work, replay, control string) {
	return q.cfg.Topic, q.replayTopic(), q.controlTopic()
}

func (q *Queue) replayTopic() string          { return q.cfg.Topic + ".replay" }
func (q *Queue) controlTopic() string         { return q.cfg.Topic + ".control" }
func (q *Queue) replayGroup() string          { return q.cfg.Topic + ".replay" }
func (q *Queue) group(consumer string) string { return q.cfg.Topic + "." + consumer }

// createTopics creates the topics that do not exist yet. It asks first,
// so that a principal without the Create ACL works once the topics exist
// (Kafka answers a create request of such a principal with an
// authorization error even for an existing topic).
func (q *Queue) createTopics(ctx context.Context) error {
	compact := "compact"
	topics := []struct {
		name  string
		parts int32
		conf  map[string]*string
	}{
		{q.cfg.Topic, q.cfg.Partitions, nil},
		{q.replayTopic(), 1, nil},
		{q.controlTopic(), 1, map[string]*string{"cleanup.policy": &compact}},
	}
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.name
	}
	existing, err := q.adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("kafka: describe topics: %w", err)
	}
	for _, t := range topics {
		if d, ok := existing[t.name]; ok && d.Err == nil {
			continue
		}
		resp, err := q.adm.CreateTopic(ctx, t.parts, q.cfg.ReplicationFactor, t.conf, t.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", t.name, err)
		}
	}
	return nil
}

func (q *Queue) checkOpen() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return queue.ErrClosed
	}
	return nil
}

// Close stops the pause watcher and closes the client. Running
// subscriptions must be stopped first.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	q.ctrl.stop()
	q.cl.Close()
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
	rec := toRecord(q.cfg.Topic, m)
	if err := q.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return queue.PublishResult{}, fmt.Errorf("kafka: publish %s: %w", m.ID, err)
	}
	return queue.PublishResult{Sequence: uint64(rec.Offset) + 1}, nil
}

func toRecord(topic string, m queue.Message) *kgo.Record {
	rec := &kgo.Record{Topic: topic, Key: []byte(m.ID), Value: m.Body}
	for k, v := range m.Headers {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: queue.HeaderTenant, Value: []byte(m.Tenant)},
		kgo.RecordHeader{Key: queue.HeaderID, Value: []byte(m.ID)})
	return rec
}

func fromRecord(r *kgo.Record) queue.Message {
	m := queue.Message{ID: string(r.Key), Body: r.Value}
	for _, h := range r.Headers {
		switch h.Key {
		case queue.HeaderTenant:
			m.Tenant = string(h.Value)
		case queue.HeaderID:
			m.ID = string(h.Value)
		case hdrQuarantinedFrom:
		default:
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[h.Key] = string(h.Value)
		}
	}
	return m
}
