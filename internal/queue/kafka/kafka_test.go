package kafka_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/kafka"
	"github.com/countersign/countersign/internal/queue/queuetest"
)

// newFakeCluster starts kfake, franz-go's protocol-level FAKE Kafka cluster,
// in process: no real Kafka broker can run on the development machines.
func newFakeCluster(t testing.TB) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func openFake(t testing.TB, brokers []string) *kafka.Queue {
	t.Helper()
	q, err := kafka.New(context.Background(), kafka.Config{Brokers: brokers, Topic: "cs." + rand.Text()[:8]})
	if err != nil {
		t.Fatalf("kafka.New: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestConformanceKfakeFakeCluster(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Queue {
		return openFake(t, newFakeCluster(t))
	})
}

// TestPauseSurvivesRestart checks that a pause written by one Queue is
// honoured by a Queue opened afterwards (a restarted worker).
func TestPauseSurvivesRestart(t *testing.T) {
	brokers := newFakeCluster(t)
	ctx := t.Context()
	cfg := kafka.Config{Brokers: brokers, Topic: "cs.restart"}
	q1, err := kafka.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := q1.Pause(ctx, "workers"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	q1.Close()
	q2, err := kafka.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New after restart: %v", err)
	}
	defer q2.Close()
	st, err := q2.Stats(ctx, "workers")
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if !st.Paused {
		t.Fatalf("stats after restart = %+v, want paused", st)
	}
}

func BenchmarkPublishKfakeFakeCluster(b *testing.B) {
	q := openFake(b, newFakeCluster(b))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := q.Publish(ctx, queuetest.Msg("acme", fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConsumeAckKfakeFakeCluster(b *testing.B) {
	q := openFake(b, newFakeCluster(b))
	ctx := context.Background()
	for i := range b.N {
		if _, err := q.Publish(ctx, queuetest.Msg("acme", fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
	done := make(chan struct{})
	n := 0
	b.ResetTimer()
	sub, err := q.Consume(ctx, "bench", func(ctx context.Context, d queue.Delivery) {
		if err := d.Ack(ctx); err != nil {
			b.Error(err)
		}
		if n++; n == b.N {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	<-done
	b.StopTimer()
	sub.Stop()
}
