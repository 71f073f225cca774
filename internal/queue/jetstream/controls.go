package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/semver"

	"github.com/countersign/countersign/internal/queue"
)

// pauseForever is how far ahead Pause sets the server's pause deadline.
const pauseForever = 100 * 365 * 24 * time.Hour

// Pause pauses the durable consumer on the server; the pause survives
// worker and server restarts until Resume.
func (q *Queue) Pause(ctx context.Context, name string) error {
	if err := q.checkPause(); err != nil {
		return err
	}
	if _, err := q.workConsumer(ctx, name); err != nil {
		return err
	}
	if _, err := q.js.PauseConsumer(ctx, q.cfg.Stream, name, time.Now().Add(pauseForever)); err != nil {
		return fmt.Errorf("jetstream: pause %s: %w", name, err)
	}
	return nil
}

// Resume resumes a paused consumer.
func (q *Queue) Resume(ctx context.Context, name string) error {
	if err := q.checkPause(); err != nil {
		return err
	}
	if _, err := q.js.ResumeConsumer(ctx, q.cfg.Stream, name); err != nil {
		return fmt.Errorf("jetstream: resume %s: %w", name, err)
	}
	return nil
}

// minPauseVersion is the first server release with consumer pause.
const minPauseVersion = "v2.11.0"

// checkPause refuses Pause and Resume on servers older than 2.11, which
// would silently ignore the request.
func (q *Queue) checkPause() error {
	v := "v" + q.nc.ConnectedServerVersion()
	if !semver.IsValid(v) || semver.Compare(v, minPauseVersion) < 0 {
		return fmt.Errorf("%w: consumer pause needs nats-server >= %s, connected to %s", queue.ErrUnsupported, minPauseVersion, v)
	}
	return nil
}

// Stats implements queue.Queue from the consumer's info.
func (q *Queue) Stats(ctx context.Context, name string) (queue.Stats, error) {
	c, err := q.workConsumer(ctx, name)
	if err != nil {
		return queue.Stats{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return queue.Stats{}, fmt.Errorf("jetstream: consumer info %s: %w", name, err)
	}
	return queue.Stats{
		Consumer:    name,
		Backlog:     info.NumPending,
		AckPending:  uint64(info.NumAckPending),
		Redelivered: uint64(info.NumRedelivered),
		Pending:     info.NumPending + uint64(info.NumAckPending),
		Paused:      info.Paused,
	}, nil
}

// Positions records both streams' sequences and every consumer's
// delivered sequences and ack floor.
func (q *Queue) Positions(ctx context.Context) (queue.Positions, error) {
	p := queue.Positions{Backend: "jetstream", CapturedAt: time.Now().UTC()}
	for _, s := range []jetstream.Stream{q.work, q.replay} {
		info, err := s.Info(ctx)
		if err != nil {
			return queue.Positions{}, fmt.Errorf("jetstream: stream info: %w", err)
		}
		p.Streams = append(p.Streams, queue.StreamPosition{
			Stream: info.Config.Name, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Messages: info.State.Msgs,
		})
		lister := s.ListConsumers(ctx)
		for ci := range lister.Info() {
			p.Consumers = append(p.Consumers, queue.ConsumerPosition{
				Stream: ci.Stream, Consumer: ci.Name,
				DeliveredStream: ci.Delivered.Stream, DeliveredConsumer: ci.Delivered.Consumer,
				AckFloorStream: ci.AckFloor.Stream, AckFloorConsumer: ci.AckFloor.Consumer,
				NumPending: ci.NumPending, NumAckPending: ci.NumAckPending, NumRedelivered: ci.NumRedelivered,
				Paused: ci.Paused,
			})
		}
		if err := lister.Err(); err != nil {
			return queue.Positions{}, fmt.Errorf("jetstream: list consumers: %w", err)
		}
	}
	return p, nil
}

// Quarantine copies the selected messages to the replay stream, then
// deletes them from the work stream. A crash between the two leaves the
// message in both, which the idempotent consumer tolerates.
func (q *Queue) Quarantine(ctx context.Context, sel queue.Selector) (queue.QuarantineResult, error) {
	var res queue.QuarantineResult
	msgs, notFound, err := q.selectMsgs(ctx, sel)
	if err != nil {
		return res, err
	}
	for _, id := range notFound {
		switch found, err := q.inReplay(ctx, id); {
		case err != nil:
			return res, err
		case found:
			res.AlreadyQuarantined = append(res.AlreadyQuarantined, id)
		default:
			res.NotFound = append(res.NotFound, id)
		}
	}
	for _, raw := range msgs {
		m := fromNATS(raw.Header, raw.Data)
		if found, err := q.inReplay(ctx, m.ID); err != nil {
			return res, err
		} else if found {
			res.AlreadyQuarantined = append(res.AlreadyQuarantined, m.ID)
			continue
		}
		copyMsg := toNATS(q.replaySubject(m.ID), m)
		copyMsg.Header.Set(hdrQuarantinedFrom, strconv.FormatUint(raw.Sequence, 10))
		if _, err := q.js.PublishMsg(ctx, copyMsg); err != nil {
			return res, fmt.Errorf("jetstream: quarantine %s: %w", m.ID, err)
		}
		if err := q.work.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return res, fmt.Errorf("jetstream: remove %s from work stream: %w", m.ID, err)
		}
		res.Moved = append(res.Moved, m.ID)
	}
	return res, nil
}

// inReplay reports whether id has ever been quarantined.
func (q *Queue) inReplay(ctx context.Context, id string) (bool, error) {
	_, err := q.replay.GetLastMsgForSubject(ctx, q.replaySubject(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	}
	return false, fmt.Errorf("jetstream: look up %s in replay stream: %w", id, err)
}

// selectMsgs returns the selected messages in stream order without
// repeats, and the selected IDs that were not found.
func (q *Queue) selectMsgs(ctx context.Context, sel queue.Selector) ([]*jetstream.RawStreamMsg, []string, error) {
	var (
		out      []*jetstream.RawStreamMsg
		notFound []string
		seen     = map[uint64]bool{}
	)
	if sel.ToSeq > 0 {
		info, err := q.work.Info(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("jetstream: stream info: %w", err)
		}
		from, to := max(sel.FromSeq, info.State.FirstSeq), min(sel.ToSeq, info.State.LastSeq)
		for seq := from; seq <= to && seq > 0; seq++ {
			raw, err := q.work.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("jetstream: get %d: %w", seq, err)
			}
			seen[seq] = true
			out = append(out, raw)
		}
	}
	for _, id := range sel.IDs {
		raw, err := q.work.GetLastMsgForSubject(ctx, q.workSubject(id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			notFound = append(notFound, id)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("jetstream: get %s: %w", id, err)
		}
		if !seen[raw.Sequence] {
			seen[raw.Sequence] = true
			out = append(out, raw)
		}
	}
	return out, notFound, nil
}

// Replay delivers the quarantined messages that have not been replayed, in
// quarantine order, through the replay stream's durable consumer: a
// message acknowledged there is never replayed again.
func (q *Queue) Replay(ctx context.Context, opts queue.ReplayOptions) (queue.ReplayResult, error) {
	lim, err := queue.NewReplayLimiter(opts)
	if err != nil {
		return queue.ReplayResult{}, err
	}
	c, err := q.consumer(ctx, q.replay, replayConsumer, q.cfg.Subject+".replay.>")
	if err != nil {
		return queue.ReplayResult{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return queue.ReplayResult{}, fmt.Errorf("jetstream: replay consumer info: %w", err)
	}
	if info.NumPending+uint64(info.NumAckPending) == 0 {
		return queue.ReplayResult{DryRun: opts.DryRun}, queue.ErrNothingToReplay
	}
	if opts.DryRun {
		return q.replayPlan(ctx, info.AckFloor.Stream, opts.Max)
	}
	res := queue.ReplayResult{}
	for opts.Max == 0 || len(res.IDs) < opts.Max {
		// Fetch before waiting, so the round trip overlaps the pause and
		// handler calls keep to the rate.
		batch, err := c.FetchNoWait(1)
		if err != nil {
			return res, fmt.Errorf("jetstream: replay fetch: %w", err)
		}
		msg, ok := <-batch.Messages()
		if !ok {
			return res, batch.Error()
		}
		m := fromNATS(msg.Headers(), msg.Data())
		if err := lim.Wait(ctx); err != nil {
			return res, errors.Join(fmt.Errorf("jetstream: replay: %w", err), msg.Nak())
		}
		if err := opts.Handler(ctx, m); err != nil {
			return res, errors.Join(fmt.Errorf("jetstream: replay %s: %w", m.ID, err), msg.Nak())
		}
		if err := msg.DoubleAck(ctx); err != nil {
			return res, fmt.Errorf("jetstream: replay ack %s: %w", m.ID, err)
		}
		res.IDs = append(res.IDs, m.ID)
	}
	return res, nil
}

// replayPlan lists what Replay would deliver: the replay stream above the
// replay consumer's ack floor, in order.
func (q *Queue) replayPlan(ctx context.Context, ackFloor uint64, limit int) (queue.ReplayResult, error) {
	res := queue.ReplayResult{DryRun: true}
	info, err := q.replay.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("jetstream: replay stream info: %w", err)
	}
	for seq := max(ackFloor+1, info.State.FirstSeq); seq <= info.State.LastSeq; seq++ {
		if limit > 0 && len(res.IDs) >= limit {
			break
		}
		raw, err := q.replay.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("jetstream: replay plan get %d: %w", seq, err)
		}
		res.IDs = append(res.IDs, raw.Header.Get(queue.HeaderID))
	}
	return res, nil
}
