package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/countersign/countersign/internal/queue"
)

// pollWait bounds one poll so Nak'd redeliveries and pause changes are
// noticed promptly.
const pollWait = 100 * time.Millisecond

// subscription is one group member. Its handler runs on one goroutine;
// Ack, Nak and Term may be called from any goroutine.
type subscription struct {
	q      *Queue
	name   string
	cl     *kgo.Client
	h      queue.Handler
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	parts map[int32]*partState // tracked deliveries of assigned partitions
	due   []*kgo.Record        // Nak'd records waiting for redelivery
	dueAt map[*kgo.Record]time.Time
}

// partState tracks one partition: commit is the lowest offset not yet
// acknowledged (the group's next committed offset); delivered is one past
// the highest offset delivered.
type partState struct {
	commit    int64
	delivered int64
	done      map[int64]bool
	count     map[int64]uint64
}

// Consume joins the consumer group for name and delivers its records.
func (q *Queue) Consume(ctx context.Context, name string, h queue.Handler) (queue.Subscription, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	s := &subscription{
		q: q, name: name, h: h, done: make(chan struct{}),
		parts: map[int32]*partState{}, dueAt: map[*kgo.Record]time.Time{},
		log: q.cfg.Logger.With(slog.String("topic", q.cfg.Topic), slog.String("consumer", name)),
	}
	cl, err := kgo.NewClient(q.cfg.opts(
		kgo.ConsumerGroup(q.group(name)),
		kgo.ConsumeTopics(q.cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(pollWait),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.revoked),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer %s: %w", name, err)
	}
	s.cl = cl
	q.mu.Lock()
	q.subs[name] = append(q.subs[name], s)
	q.mu.Unlock()
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go s.run(runCtx)
	return s, nil
}

// Stop leaves the group; records delivered but not acknowledged are
// redelivered to the next member.
func (s *subscription) Stop() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.cl.Close()
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		subs := s.q.subs[s.name]
		for i, o := range subs {
			if o == s {
				s.q.subs[s.name] = append(subs[:i], subs[i+1:]...)
				break
			}
		}
	})
}

func (s *subscription) revoked(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range lost[s.q.cfg.Topic] {
		delete(s.parts, p)
	}
	kept := s.due[:0]
	for _, r := range s.due {
		if _, ok := s.parts[r.Partition]; ok {
			kept = append(kept, r)
		} else {
			delete(s.dueAt, r)
		}
	}
	s.due = kept
}

func (s *subscription) run(ctx context.Context) {
	defer close(s.done)
	for ctx.Err() == nil {
		for _, r := range s.takeDue() {
			if !s.deliver(ctx, r) {
				return
			}
		}
		pctx, cancel := context.WithTimeout(ctx, pollWait)
		fs := s.cl.PollFetches(pctx)
		cancel()
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if ctx.Err() == nil && pctx.Err() == nil {
				s.log.WarnContext(ctx, "kafka fetch", slog.String("fetch_topic", t), slog.Int("partition", int(p)), slog.Any("err", err))
			}
		})
		for _, r := range fs.Records() {
			if !s.deliver(ctx, r) {
				return
			}
		}
	}
}

// takeDue removes and returns the Nak'd records whose delay has passed.
func (s *subscription) takeDue() []*kgo.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var out []*kgo.Record
	kept := s.due[:0]
	for _, r := range s.due {
		if now.Before(s.dueAt[r]) {
			kept = append(kept, r)
			continue
		}
		delete(s.dueAt, r)
		out = append(out, r)
	}
	s.due = kept
	return out
}

// deliver waits while the consumer is paused, then hands r to the handler.
// It returns false when ctx ended.
func (s *subscription) deliver(ctx context.Context, r *kgo.Record) bool {
	for {
		paused, changed := s.q.ctrl.state(s.name)
		if !paused {
			break
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
	n := s.track(r)
	s.h(ctx, &delivery{s: s, r: r, n: n})
	return ctx.Err() == nil
}

// track records a delivery of r and returns its delivery count.
func (s *subscription) track(r *kgo.Record) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, ok := s.parts[r.Partition]
	if !ok {
		ps = &partState{commit: r.Offset, delivered: r.Offset, done: map[int64]bool{}, count: map[int64]uint64{}}
		s.parts[r.Partition] = ps
	}
	ps.delivered = max(ps.delivered, r.Offset+1)
	ps.count[r.Offset]++
	return ps.count[r.Offset]
}

// settle marks r done and returns the offset to commit, or -1 when the
// commit point did not move.
func (s *subscription) settle(r *kgo.Record) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, ok := s.parts[r.Partition]
	if !ok {
		return -1 // partition revoked: the next owner redelivers
	}
	ps.done[r.Offset] = true
	before := ps.commit
	for ps.done[ps.commit] {
		delete(ps.done, ps.commit)
		delete(ps.count, ps.commit)
		ps.commit++
	}
	if ps.commit == before {
		return -1
	}
	return ps.commit
}

func (s *subscription) commit(ctx context.Context, r *kgo.Record, offset int64) error {
	if offset < 0 {
		return nil
	}
	var cerr error
	s.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{
		r.Topic: {r.Partition: {Epoch: -1, Offset: offset}},
	}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		cerr = commitErr(resp, err)
	})
	if cerr != nil {
		return fmt.Errorf("kafka: commit %s/%d@%d: %w", r.Topic, r.Partition, offset, cerr)
	}
	return nil
}

// inFlight counts delivered, unacknowledged records and those delivered
// more than once.
func (s *subscription) inFlight() (pending, redelivered uint64, delivered map[int32]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delivered = map[int32]int64{}
	for p, ps := range s.parts {
		delivered[p] = ps.delivered
		for off := ps.commit; off < ps.delivered; off++ {
			if ps.done[off] {
				continue
			}
			pending++
			if ps.count[off] > 1 {
				redelivered++
			}
		}
	}
	return pending, redelivered, delivered
}

type delivery struct {
	s *subscription
	r *kgo.Record
	n uint64
}

func (d *delivery) Message() queue.Message { return fromRecord(d.r) }

func (d *delivery) Meta() queue.DeliveryMeta {
	return queue.DeliveryMeta{Sequence: uint64(d.r.Offset) + 1, Partition: d.r.Partition, NumDelivered: d.n, Published: d.r.Timestamp}
}

// Ack returns once the group offset covering this record (if it moved) is
// committed.
func (d *delivery) Ack(ctx context.Context) error { return d.s.commit(ctx, d.r, d.s.settle(d.r)) }

// Term is Ack without processing: Kafka has no dead-letter state of its own.
func (d *delivery) Term(ctx context.Context) error { return d.Ack(ctx) }

// Nak schedules redelivery to this member after delay.
func (d *delivery) Nak(_ context.Context, delay time.Duration) error {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	if _, ok := d.s.parts[d.r.Partition]; !ok {
		return nil // revoked: the next owner redelivers from the commit point
	}
	d.s.due = append(d.s.due, d.r)
	d.s.dueAt[d.r] = time.Now().Add(delay)
	return nil
}

func commitErr(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}
