package jetstream_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/queuetest"
)

// BenchmarkPublish measures accepted publishes per second on the embedded
// server: "accepted" (PubAck) and "fsynced" (SyncAlways).
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct {
		name string
		sync bool
	}{{"accepted", false}, {"fsynced-SyncAlways", true}} {
		b.Run(bc.name, func(b *testing.B) {
			q := openEmbedded(b, jetstream.ServerConfig{SyncAlways: bc.sync})
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				if _, err := q.Publish(ctx, queuetest.Msg("acme", fmt.Sprint(i))); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkConsumeAck measures consume + confirmed ack of pre-published
// messages.
func BenchmarkConsumeAck(b *testing.B) {
	q := openEmbedded(b, jetstream.ServerConfig{})
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
