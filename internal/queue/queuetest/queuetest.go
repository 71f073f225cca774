// Package queuetest is the conformance suite every queue backend runs:
// queuetest.Run(t, newQueue). It checks the behaviour the rollback
// playbook relies on: at-least-once delivery, pause, stats and positions,
// quarantine and rate-limited replay, and snapshots.
//
// newQueue must return an empty, isolated queue (fresh server, or unique
// stream and topic names) and arrange its cleanup with t.Cleanup. Its
// redelivery delay for unacknowledged messages (JetStream's AckWait) should
// be at most two seconds so the suite stays fast.
package queuetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/queue"
)

// waitFor bounds every wait for a delivery or a state change.
const waitFor = 15 * time.Second

// quiet is how long the suite watches for deliveries that must not happen.
const quiet = 750 * time.Millisecond

const consumerName = "workers"

// Run runs the conformance suite.
func Run(t *testing.T, newQueue func(t *testing.T) queue.Queue) {
	tests := []struct {
		name string
		fn   func(t *testing.T, q queue.Queue)
	}{
		{"PublishConsumeAck", testPublishConsumeAck},
		{"RejectsInvalidMessage", testRejectsInvalid},
		{"RedeliveryAfterNak", testRedeliveryAfterNak},
		{"RedeliveryAfterConsumerDies", testRedeliveryAfterConsumerDies},
		{"DuplicatePublish", testDuplicatePublish},
		{"PauseResume", testPauseResume},
		{"StatsAndPositions", testStatsAndPositions},
		{"QuarantineReplay", testQuarantineReplay},
		{"ReplayResumesAfterHandlerError", testReplayResumes},
		{"ReplayRate", testReplayRate},
		{"Snapshot", testSnapshot},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueue(t)
			tc.fn(t, q)
		})
	}
}

// Msg returns a valid message for tenant and key.
func Msg(tenant, key string) queue.Message {
	return queue.Message{
		ID: tenant + "/" + key, Tenant: tenant,
		Body:    []byte("body of " + key),
		Headers: map[string]string{"Content-Type": "application/json"},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitFor)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, ctx context.Context, q queue.Queue, msgs ...queue.Message) []queue.PublishResult {
	t.Helper()
	var out []queue.PublishResult
	for _, m := range msgs {
		r, err := q.Publish(ctx, m)
		if err != nil {
			t.Fatalf("Publish(%s): %v", m.ID, err)
		}
		if r.Sequence == 0 {
			t.Fatalf("Publish(%s): sequence 0", m.ID)
		}
		out = append(out, r)
	}
	return out
}

func msgs(tenant string, n int) []queue.Message {
	out := make([]queue.Message, n)
	for i := range out {
		out[i] = Msg(tenant, fmt.Sprintf("k%03d", i))
	}
	return out
}

// got is one delivery as seen by a test handler.
type got struct {
	msg  queue.Message
	meta queue.DeliveryMeta
	d    queue.Delivery
}

// collect starts a subscription that sends every delivery to the returned
// channel, after calling act on it (act may be nil: leave it unacked).
func collect(t *testing.T, ctx context.Context, q queue.Queue, act func(queue.Delivery)) (<-chan got, queue.Subscription) {
	t.Helper()
	ch := make(chan got, 1024)
	sub, err := q.Consume(ctx, consumerName, func(ctx context.Context, d queue.Delivery) {
		if act != nil {
			act(d)
		}
		ch <- got{msg: d.Message(), meta: d.Meta(), d: d}
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	t.Cleanup(sub.Stop)
	return ch, sub
}

func ackAll(t *testing.T) func(queue.Delivery) {
	return func(d queue.Delivery) {
		if err := d.Ack(context.Background()); err != nil {
			t.Errorf("Ack(%s): %v", d.Message().ID, err)
		}
	}
}

func receive(t *testing.T, ch <-chan got, n int) []got {
	t.Helper()
	var out []got
	timeout := time.After(waitFor)
	for len(out) < n {
		select {
		case g := <-ch:
			out = append(out, g)
		case <-timeout:
			t.Fatalf("received %d deliveries, want %d", len(out), n)
		}
	}
	return out
}

func expectNone(t *testing.T, ch <-chan got) {
	t.Helper()
	select {
	case g := <-ch:
		t.Fatalf("unexpected delivery of %s (delivery %d)", g.msg.ID, g.meta.NumDelivered)
	case <-time.After(quiet):
	}
}

// eventually polls cond until it returns nil or waitFor passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ids(gs []got) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.msg.ID
	}
	return out
}

func testPublishConsumeAck(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	in := msgs("acme", 3)
	res := publish(t, ctx, q, in...)
	ch, _ := collect(t, ctx, q, ackAll(t))
	out := receive(t, ch, 3)
	slices.SortFunc(out, func(a, b got) int { return cmpStr(a.msg.ID, b.msg.ID) })
	for i, g := range out {
		want := in[i]
		if g.msg.ID != want.ID || g.msg.Tenant != want.Tenant || !bytes.Equal(g.msg.Body, want.Body) {
			t.Errorf("delivery %d = %+v, want %+v", i, g.msg, want)
		}
		if g.msg.Headers["Content-Type"] != "application/json" {
			t.Errorf("delivery %d headers = %v, want Content-Type kept", i, g.msg.Headers)
		}
		if g.meta.Sequence != res[i].Sequence || g.meta.NumDelivered != 1 {
			t.Errorf("delivery %d meta = %+v, want sequence %d, delivery 1", i, g.meta, res[i].Sequence)
		}
	}
	eventually(t, "stats after acks", func() error {
		st, err := q.Stats(ctx, consumerName)
		if err != nil {
			return err
		}
		if st.Pending != 0 || st.AckPending != 0 || st.Backlog != 0 {
			return fmt.Errorf("stats = %+v, want nothing pending", st)
		}
		return nil
	})
	expectNone(t, ch)
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testRejectsInvalid(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		m    queue.Message
	}{
		{"no tenant", queue.Message{ID: "acme/k"}},
		{"no id", queue.Message{Tenant: "acme"}},
		{"id of another tenant", queue.Message{ID: "other/k", Tenant: "acme"}},
		{"empty key", queue.Message{ID: "acme/", Tenant: "acme"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := q.Publish(ctx, tc.m); !errors.Is(err, queue.ErrInvalidMessage) {
				t.Errorf("Publish(%+v) = %v, want ErrInvalidMessage", tc.m, err)
			}
		})
	}
}

func testRedeliveryAfterNak(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	publish(t, ctx, q, Msg("acme", "nak"))
	var mu sync.Mutex
	first := true
	ch, _ := collect(t, ctx, q, func(d queue.Delivery) {
		mu.Lock()
		defer mu.Unlock()
		var err error
		if first {
			err = d.Nak(ctx, 100*time.Millisecond)
		} else {
			err = d.Ack(ctx)
		}
		first = false
		if err != nil {
			t.Errorf("Nak/Ack: %v", err)
		}
	})
	out := receive(t, ch, 2)
	if out[0].msg.ID != "acme/nak" || out[1].msg.ID != "acme/nak" {
		t.Fatalf("deliveries = %v, want acme/nak twice", ids(out))
	}
	if out[0].meta.NumDelivered != 1 || out[1].meta.NumDelivered != 2 {
		t.Errorf("delivery counts = %d, %d, want 1, 2", out[0].meta.NumDelivered, out[1].meta.NumDelivered)
	}
	expectNone(t, ch)
}

func testRedeliveryAfterConsumerDies(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	publish(t, ctx, q, Msg("acme", "orphan"))
	ch1, sub1 := collect(t, ctx, q, nil) // delivered, never acknowledged
	first := receive(t, ch1, 1)[0]
	sub1.Stop()

	ch2, _ := collect(t, ctx, q, ackAll(t))
	again := receive(t, ch2, 1)[0]
	if again.msg.ID != first.msg.ID || again.meta.Sequence != first.meta.Sequence {
		t.Fatalf("redelivered %s@%d, want %s@%d", again.msg.ID, again.meta.Sequence, first.msg.ID, first.meta.Sequence)
	}
	expectNone(t, ch2)
}

func testDuplicatePublish(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	m := Msg("acme", "twice")
	r := publish(t, ctx, q, m, m)
	_, dedup := q.(queue.Deduplicator)
	ch, _ := collect(t, ctx, q, ackAll(t))
	if dedup {
		if !r[1].Duplicate || r[1].Sequence != r[0].Sequence || r[0].Duplicate {
			t.Fatalf("publish results = %+v, want the second reported as duplicate of the first", r)
		}
		receive(t, ch, 1)
		expectNone(t, ch)
		return
	}
	// Without broker de-duplication both copies are stored and delivered:
	// the consumer's idempotency (the store's unique key) absorbs them.
	if r[0].Duplicate || r[1].Duplicate || r[0].Sequence == r[1].Sequence {
		t.Fatalf("publish results = %+v, want two distinct non-duplicate records", r)
	}
	out := receive(t, ch, 2)
	if out[0].msg.ID != m.ID || out[1].msg.ID != m.ID {
		t.Fatalf("deliveries = %v, want %s twice", ids(out), m.ID)
	}
}

func testPauseResume(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	publish(t, ctx, q, Msg("acme", "before"))
	ch, _ := collect(t, ctx, q, ackAll(t))
	receive(t, ch, 1)
	if err := q.Pause(ctx, consumerName); errors.Is(err, queue.ErrUnsupported) {
		t.Skipf("backend cannot pause: %v", err)
	} else if err != nil {
		t.Fatalf("Pause: %v", err)
	}
	eventually(t, "paused", func() error {
		st, err := q.Stats(ctx, consumerName)
		if err != nil {
			return err
		}
		if !st.Paused {
			return fmt.Errorf("stats = %+v, want paused", st)
		}
		return nil
	})
	publish(t, ctx, q, Msg("acme", "during-1"), Msg("acme", "during-2"))
	expectNone(t, ch)
	st, err := q.Stats(ctx, consumerName)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Pending != 2 {
		t.Errorf("paused stats = %+v, want 2 pending", st)
	}
	if err := q.Resume(ctx, consumerName); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	out := ids(receive(t, ch, 2))
	slices.Sort(out)
	if want := []string{"acme/during-1", "acme/during-2"}; !slices.Equal(out, want) {
		t.Errorf("after resume got %v, want %v", out, want)
	}
}

func testStatsAndPositions(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	publish(t, ctx, q, msgs("acme", 5)...)
	eventually(t, "backlog before consuming", func() error {
		st, err := q.Stats(ctx, consumerName)
		if err != nil {
			return err
		}
		if st.Pending != 5 || st.AckPending != 0 {
			return fmt.Errorf("stats = %+v, want 5 pending, 0 ack-pending", st)
		}
		return nil
	})
	// Acknowledge the first three in sequence order, leave two in flight.
	ch, _ := collect(t, ctx, q, func(d queue.Delivery) {
		if d.Meta().Sequence <= 3 {
			if err := d.Ack(ctx); err != nil {
				t.Errorf("Ack: %v", err)
			}
		}
	})
	receive(t, ch, 5)
	eventually(t, "stats after 3 acks", func() error {
		st, err := q.Stats(ctx, consumerName)
		if err != nil {
			return err
		}
		if st.Pending != 2 || st.AckPending != 2 || st.Backlog != 0 {
			return fmt.Errorf("stats = %+v, want 2 pending, 2 ack-pending, 0 backlog", st)
		}
		return nil
	})
	eventually(t, "positions after 3 acks", func() error {
		p, err := q.Positions(ctx)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("marshal positions: %w", err)
		}
		var back queue.Positions
		if err := json.Unmarshal(raw, &back); err != nil {
			return fmt.Errorf("unmarshal positions: %w", err)
		}
		if back.Backend == "" || back.CapturedAt.IsZero() {
			return fmt.Errorf("positions %s lack backend or time", raw)
		}
		for _, c := range back.Consumers {
			if c.Consumer == consumerName && c.AckFloorStream == 3 && c.DeliveredStream == 5 {
				return nil
			}
		}
		for _, pp := range back.Partitions {
			if pp.Group != "" && pp.Committed == 3 && pp.End == 5 {
				return nil
			}
		}
		return fmt.Errorf("positions %s: no consumer at ack floor 3 of 5", raw)
	})
}
