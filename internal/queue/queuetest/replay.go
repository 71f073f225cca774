package queuetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/queue"
)

func testQuarantineReplay(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	in := msgs("acme", 6)
	res := publish(t, ctx, q, in...)

	sel := queue.Selector{
		IDs:     []string{in[1].ID, in[3].ID, "acme/missing"},
		FromSeq: res[4].Sequence, ToSeq: res[5].Sequence,
	}
	qr, err := q.Quarantine(ctx, sel)
	if err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	want := []string{in[1].ID, in[3].ID, in[4].ID, in[5].ID}
	if got := sorted(qr.Moved); !slices.Equal(got, want) {
		t.Errorf("Quarantine moved %v, want %v", got, want)
	}
	if !slices.Equal(qr.NotFound, []string{"acme/missing"}) || len(qr.AlreadyQuarantined) != 0 {
		t.Errorf("Quarantine = %+v, want only acme/missing not found", qr)
	}

	plan, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, DryRun: true})
	if err != nil {
		t.Fatalf("Replay dry run: %v", err)
	}
	if !plan.DryRun || !slices.Equal(sorted(plan.IDs), want) {
		t.Fatalf("dry run = %+v, want %v", plan, want)
	}
	// A dry run changes nothing: a second one plans the same.
	if again, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, DryRun: true}); err != nil || !slices.Equal(again.IDs, plan.IDs) {
		t.Fatalf("second dry run = %+v, %v, want %v", again, err, plan.IDs)
	}

	var mu sync.Mutex
	var delivered []string
	done, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: func(_ context.Context, m queue.Message) error {
		mu.Lock()
		defer mu.Unlock()
		delivered = append(delivered, m.ID)
		if m.Tenant != "acme" || len(m.Body) == 0 {
			t.Errorf("replayed message %+v lacks tenant or body", m)
		}
		return nil
	}})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if !slices.Equal(delivered, plan.IDs) || !slices.Equal(done.IDs, plan.IDs) {
		t.Fatalf("replay delivered %v (reported %v), dry run planned %v", delivered, done.IDs, plan.IDs)
	}

	// The replayed set is not delivered twice: neither by another replay
	// nor by quarantining it again.
	if second, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: func(_ context.Context, m queue.Message) error {
		t.Errorf("second replay delivered %s", m.ID)
		return nil
	}}); !errors.Is(err, queue.ErrNothingToReplay) || len(second.IDs) != 0 {
		t.Fatalf("second Replay = %+v, %v, want ErrNothingToReplay", second, err)
	}
	again, err := q.Quarantine(ctx, queue.Selector{IDs: []string{in[1].ID}})
	if err != nil {
		t.Fatalf("re-Quarantine: %v", err)
	}
	if len(again.Moved) != 0 || !slices.Equal(again.AlreadyQuarantined, []string{in[1].ID}) {
		t.Fatalf("re-Quarantine = %+v, want %s already quarantined", again, in[1].ID)
	}
	if _, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, DryRun: true}); !errors.Is(err, queue.ErrNothingToReplay) {
		t.Fatalf("dry run after replay: %v, want ErrNothingToReplay", err)
	}
}

func testReplayRate(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	const (
		// 20/s leaves each delivery 50 ms, so the broker round trips of a
		// loaded 2-core CI machine do not masquerade as limiter error.
		n    = 21
		rate = 20.0 // messages per second: 20 intervals = 1 s
	)
	res := publish(t, ctx, q, msgs("acme", n)...)
	if _, err := q.Quarantine(ctx, queue.Selector{FromSeq: res[0].Sequence, ToSeq: res[n-1].Sequence}); err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	var stamps []time.Time
	out, err := q.Replay(ctx, queue.ReplayOptions{Rate: rate, Handler: func(context.Context, queue.Message) error {
		stamps = append(stamps, time.Now())
		return nil
	}})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if len(out.IDs) != n || len(stamps) != n {
		t.Fatalf("replayed %d (handler saw %d), want %d", len(out.IDs), len(stamps), n)
	}
	// Measured over a fixed count: n deliveries span n-1 intervals.
	span := stamps[n-1].Sub(stamps[0])
	got := float64(n-1) / span.Seconds()
	if got < rate*0.9 || got > rate*1.1 {
		t.Errorf("replay rate = %.1f/s over %d messages (%s), want %.0f/s ±10%%", got, n, span, rate)
	}
}

func testSnapshot(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	publish(t, ctx, q, msgs("acme", 3)...)
	var buf bytes.Buffer
	info, err := q.Snapshot(ctx, &buf)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if buf.Len() == 0 || info.Size != int64(buf.Len()) || info.SHA256 != hex.EncodeToString(sum[:]) || info.Format == "" {
		t.Fatalf("Snapshot = %+v; wrote %d bytes with SHA-256 %x", info, buf.Len(), sum)
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func testReplayResumes(t *testing.T, q queue.Queue) {
	ctx := ctxT(t)
	in := msgs("acme", 3)
	res := publish(t, ctx, q, in...)
	if _, err := q.Quarantine(ctx, queue.Selector{FromSeq: res[0].Sequence, ToSeq: res[2].Sequence}); err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	errSign := errors.New("signer unavailable")
	first, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: func(_ context.Context, m queue.Message) error {
		if m.ID == in[1].ID {
			return errSign
		}
		return nil
	}})
	if !errors.Is(err, errSign) || !slices.Equal(first.IDs, []string{in[0].ID}) {
		t.Fatalf("failing Replay = %+v, %v, want [%s] and the handler's error", first, err, in[0].ID)
	}
	want := []string{in[1].ID, in[2].ID}
	eventually(t, "dry run after failure", func() error {
		plan, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, DryRun: true})
		if err != nil {
			return err
		}
		if !slices.Equal(plan.IDs, want) {
			return errors.New("plan " + strings.Join(plan.IDs, ",") + " want " + strings.Join(want, ","))
		}
		return nil
	})
	var got []string
	if _, err := q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: func(_ context.Context, m queue.Message) error {
		got = append(got, m.ID)
		return nil
	}}); err != nil {
		t.Fatalf("second Replay: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("second replay delivered %v, want %v", got, want)
	}
}
