package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/countersign/countersign/internal/queue"
)

const hdrQuarantinedFrom = "Countersign-Quarantined-From"

// offsets returns start and end offsets of every partition of topic.
func (q *Queue) offsets(ctx context.Context, topic string) (start, end kadm.ListedOffsets, err error) {
	if start, err = q.adm.ListStartOffsets(ctx, topic); err == nil {
		err = start.Error()
	}
	if err == nil {
		if end, err = q.adm.ListEndOffsets(ctx, topic); err == nil {
			err = end.Error()
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kafka: list offsets of %s: %w", topic, err)
	}
	return start, end, nil
}

// committed returns group's committed offset on topic/partition, or -1.
func committed(offs kadm.OffsetResponses, topic string, p int32) int64 {
	if o, ok := offs.Lookup(topic, p); ok && o.Err == nil {
		return o.At
	}
	return -1
}

// fetchCommitted returns group's committed offsets; a group that never
// committed has none.
func (q *Queue) fetchCommitted(ctx context.Context, group string) (kadm.OffsetResponses, error) {
	offs, err := q.adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: fetch offsets of %s: %w", group, err)
	}
	return offs, nil
}

// Stats combines the group's committed offsets (what the broker knows)
// with this process's in-flight deliveries (Kafka keeps no ack-pending
// state): AckPending and Redelivered count only subscriptions of this
// Queue.
func (q *Queue) Stats(ctx context.Context, name string) (queue.Stats, error) {
	start, end, err := q.offsets(ctx, q.cfg.Topic)
	if err != nil {
		return queue.Stats{}, err
	}
	offs, err := q.fetchCommitted(ctx, q.group(name))
	if err != nil {
		return queue.Stats{}, err
	}
	st := queue.Stats{Consumer: name}
	st.Paused, _ = q.ctrl.state(name)
	delivered := map[int32]int64{}
	q.mu.Lock()
	subs := slices.Clone(q.subs[name])
	q.mu.Unlock()
	for _, s := range subs {
		pending, redelivered, d := s.inFlight()
		st.AckPending += pending
		st.Redelivered += redelivered
		for p, off := range d {
			delivered[p] = max(delivered[p], off)
		}
	}
	end.Each(func(e kadm.ListedOffset) {
		s, _ := start.Lookup(e.Topic, e.Partition)
		from := max(committed(offs, e.Topic, e.Partition), s.Offset)
		st.Pending += uint64(max(e.Offset-from, 0))
		st.Backlog += uint64(max(e.Offset-max(from, delivered[e.Partition]), 0))
	})
	return st, nil
}

// Positions lists, per partition of the work and replay topics, the start
// and end offsets and the committed offset of each of this queue's groups.
func (q *Queue) Positions(ctx context.Context) (queue.Positions, error) {
	p := queue.Positions{Backend: "kafka", CapturedAt: time.Now().UTC()}
	groups, err := q.adm.ListGroups(ctx)
	if err != nil {
		return p, fmt.Errorf("kafka: list groups: %w", err)
	}
	for _, topic := range []string{q.cfg.Topic, q.replayTopic()} {
		start, end, err := q.offsets(ctx, topic)
		if err != nil {
			return p, err
		}
		names := []string{""}
		for _, g := range groups.Groups() {
			if (topic == q.replayTopic()) == (g == q.replayGroup()) && strings.HasPrefix(g, q.cfg.Topic+".") {
				names = append(names, g)
			}
		}
		slices.Sort(names)
		for _, g := range names {
			var offs kadm.OffsetResponses
			if g != "" {
				if offs, err = q.fetchCommitted(ctx, g); err != nil {
					return p, err
				}
			}
			for _, e := range sortedOffsets(end) {
				s, _ := start.Lookup(e.Topic, e.Partition)
				p.Partitions = append(p.Partitions, queue.PartitionPosition{
					Topic: e.Topic, Partition: e.Partition, Start: s.Offset, End: e.Offset,
					Group: g, Committed: committed(offs, e.Topic, e.Partition),
				})
			}
		}
	}
	return p, nil
}

func sortedOffsets(l kadm.ListedOffsets) []kadm.ListedOffset {
	var out []kadm.ListedOffset
	l.Each(func(o kadm.ListedOffset) { out = append(out, o) })
	slices.SortFunc(out, func(a, b kadm.ListedOffset) int { return int(a.Partition - b.Partition) })
	return out
}

// readRange returns the records of topic in [from[p], to[p]) for every
// partition p listed in to, in partition then offset order.
func (q *Queue) readRange(ctx context.Context, topic string, from, to map[int32]int64) ([]*kgo.Record, error) {
	parts := map[int32]kgo.Offset{}
	remaining := map[int32]int64{}
	for p, end := range to {
		if end > from[p] {
			parts[p] = kgo.NewOffset().At(from[p])
			remaining[p] = end
		}
	}
	if len(parts) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(q.cfg.opts(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))...)
	if err != nil {
		return nil, fmt.Errorf("kafka: reader: %w", err)
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafka: read %s: %w", topic, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, fmt.Errorf("kafka: read %s: %w", topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			byPart[r.Partition] = append(byPart[r.Partition], r)
			if r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
	var out []*kgo.Record
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		out = append(out, byPart[p]...)
	}
	return out, nil
}

// readAll returns every record currently in topic.
func (q *Queue) readAll(ctx context.Context, topic string) ([]*kgo.Record, error) {
	start, end, err := q.offsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	from, to := map[int32]int64{}, map[int32]int64{}
	end.Each(func(e kadm.ListedOffset) {
		s, _ := start.Lookup(e.Topic, e.Partition)
		from[e.Partition], to[e.Partition] = s.Offset, e.Offset
	})
	return q.readRange(ctx, topic, from, to)
}

// Quarantine copies the selected records to the replay topic. Kafka logs
// are immutable, so the originals stay where they are; a worker that still
// receives one relies on the store's idempotency. Finding records by ID
// reads the whole work topic.
func (q *Queue) Quarantine(ctx context.Context, sel queue.Selector) (queue.QuarantineResult, error) {
	var res queue.QuarantineResult
	work, err := q.readAll(ctx, q.cfg.Topic)
	if err != nil {
		return res, err
	}
	replayed, err := q.readAll(ctx, q.replayTopic())
	if err != nil {
		return res, err
	}
	inReplay := map[string]bool{}
	for _, r := range replayed {
		inReplay[fromRecord(r).ID] = true
	}
	wanted := map[string]bool{}
	for _, id := range sel.IDs {
		wanted[id] = true
	}
	found := map[string]bool{}
	var copies []*kgo.Record
	for _, r := range work {
		m := fromRecord(r)
		seq := uint64(r.Offset) + 1
		inRange := sel.ToSeq > 0 && seq >= sel.FromSeq && seq <= sel.ToSeq
		if (!wanted[m.ID] && !inRange) || found[m.ID] {
			continue
		}
		found[m.ID] = true
		if inReplay[m.ID] {
			res.AlreadyQuarantined = append(res.AlreadyQuarantined, m.ID)
			continue
		}
		c := toRecord(q.replayTopic(), m)
		c.Headers = append(c.Headers, kgo.RecordHeader{
			Key: hdrQuarantinedFrom, Value: []byte(strconv.Itoa(int(r.Partition)) + "@" + strconv.FormatInt(r.Offset, 10)),
		})
		copies = append(copies, c)
		res.Moved = append(res.Moved, m.ID)
	}
	for _, id := range sel.IDs {
		if !found[id] {
			res.NotFound = append(res.NotFound, id)
		}
	}
	if len(copies) > 0 {
		if err := q.cl.ProduceSync(ctx, copies...).FirstErr(); err != nil {
			return queue.QuarantineResult{}, fmt.Errorf("kafka: quarantine: %w", err)
		}
	}
	return res, nil
}
