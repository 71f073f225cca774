package kafka

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/countersign/countersign/internal/queue"
)

// SnapshotFormat names the JSON-lines dump Snapshot writes.
const SnapshotFormat = "kafka-dump/v1"

// pendingReplay returns the replay topic's records after the replay
// group's committed offset (the replay topic has one partition).
func (q *Queue) pendingReplay(ctx context.Context) ([]*kgo.Record, error) {
	start, end, err := q.offsets(ctx, q.replayTopic())
	if err != nil {
		return nil, err
	}
	offs, err := q.fetchCommitted(ctx, q.replayGroup())
	if err != nil {
		return nil, err
	}
	from, to := map[int32]int64{}, map[int32]int64{}
	end.Each(func(e kadm.ListedOffset) {
		s, _ := start.Lookup(e.Topic, e.Partition)
		from[e.Partition] = max(s.Offset, committed(offs, e.Topic, e.Partition))
		to[e.Partition] = e.Offset
	})
	return q.readRange(ctx, q.replayTopic(), from, to)
}

// Replay delivers the quarantined records not yet replayed, in quarantine
// order, committing the replay group's offset after each handler success,
// so a replayed record is never replayed again.
func (q *Queue) Replay(ctx context.Context, opts queue.ReplayOptions) (queue.ReplayResult, error) {
	lim, err := queue.NewReplayLimiter(opts)
	if err != nil {
		return queue.ReplayResult{}, err
	}
	recs, err := q.pendingReplay(ctx)
	if err != nil {
		return queue.ReplayResult{}, err
	}
	if len(recs) == 0 {
		return queue.ReplayResult{DryRun: opts.DryRun}, queue.ErrNothingToReplay
	}
	if opts.Max > 0 && len(recs) > opts.Max {
		recs = recs[:opts.Max]
	}
	res := queue.ReplayResult{DryRun: opts.DryRun}
	for _, r := range recs {
		m := fromRecord(r)
		if opts.DryRun {
			res.IDs = append(res.IDs, m.ID)
			continue
		}
		if err := lim.Wait(ctx); err != nil {
			return res, fmt.Errorf("kafka: replay: %w", err)
		}
		if err := opts.Handler(ctx, m); err != nil {
			return res, fmt.Errorf("kafka: replay %s: %w", m.ID, err)
		}
		var o kadm.Offsets
		o.AddOffset(r.Topic, r.Partition, r.Offset+1, -1)
		resp, err := q.adm.CommitOffsets(ctx, q.replayGroup(), o)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return res, fmt.Errorf("kafka: mark %s replayed: %w", m.ID, err)
		}
		res.IDs = append(res.IDs, m.ID)
	}
	return res, nil
}

// dumpHeader is the first line of a Kafka snapshot.
type dumpHeader struct {
	Format    string          `json:"format"`
	Positions queue.Positions `json:"positions"`
}

// dumpRecord is one record of a Kafka snapshot.
type dumpRecord struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp time.Time         `json:"timestamp"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers,omitempty"`
	Value     []byte            `json:"value"`
}

// Snapshot writes a JSON-lines dump: a header line with the positions
// (start, end and committed offsets), then every record of the work and
// replay topics between the listed start and end offsets. Kafka has no
// snapshot API, so this is a copy for evidence and re-publication, not a
// restorable broker state: offsets and group state cannot be restored from
// it, and records written after the positions were taken are left out.
func (q *Queue) Snapshot(ctx context.Context, w io.Writer) (queue.SnapshotInfo, error) {
	pos, err := q.Positions(ctx)
	if err != nil {
		return queue.SnapshotInfo{}, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	enc := json.NewEncoder(cw)
	if err := enc.Encode(dumpHeader{Format: SnapshotFormat, Positions: pos}); err != nil {
		return queue.SnapshotInfo{}, fmt.Errorf("kafka: snapshot: %w", err)
	}
	for _, topic := range []string{q.cfg.Topic, q.replayTopic()} {
		from, to := map[int32]int64{}, map[int32]int64{}
		for _, p := range pos.Partitions {
			if p.Topic == topic && p.Group == "" {
				from[p.Partition], to[p.Partition] = p.Start, p.End
			}
		}
		recs, err := q.readRange(ctx, topic, from, to)
		if err != nil {
			return queue.SnapshotInfo{}, err
		}
		for _, r := range recs {
			d := dumpRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UTC(), Key: string(r.Key), Value: r.Value}
			for _, hd := range r.Headers {
				if d.Headers == nil {
					d.Headers = map[string]string{}
				}
				d.Headers[hd.Key] = string(hd.Value)
			}
			if err := enc.Encode(d); err != nil {
				return queue.SnapshotInfo{}, fmt.Errorf("kafka: snapshot: %w", err)
			}
		}
	}
	return queue.SnapshotInfo{Format: SnapshotFormat, SHA256: hex.EncodeToString(h.Sum(nil)), Size: cw.n}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
