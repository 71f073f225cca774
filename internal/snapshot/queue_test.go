package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
)

// TestQueueSnapshotJetStream snapshots an in-process JetStream queue with a
// consumer part-way through, verifies the snapshot, and restores the
// stored archive into a fresh server.
func TestQueueSnapshotJetStream(t *testing.T) {
	ctx := t.Context()
	q, err := jetstream.OpenEmbedded(ctx, jetstream.ServerConfig{StoreDir: t.TempDir()}, jetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const total, acks = 30, 7
	for i := range total {
		m := queue.Message{ID: fmt.Sprintf("acme/k%02d", i), Tenant: "acme", Body: []byte(`{"doc":"` + fmt.Sprint(i) + `"}`)}
		if _, err := q.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	acked := make(chan struct{}, total)
	sub, err := q.Consume(ctx, "workers", func(ctx context.Context, d queue.Delivery) {
		if d.Meta().Sequence <= acks {
			if err := d.Ack(ctx); err == nil {
				acked <- struct{}{}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for range acks {
		<-acked
	}
	sub.Stop()
	if err := q.Pause(ctx, "workers"); err != nil {
		t.Fatal(err)
	}

	d := newDir(t)
	m, _, err := Take(ctx, Config{Store: d, Parts: []Part{QueuePositions{Queue: q}, QueueStream{Queue: q}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, d, m.ObjectName()); err != nil {
		t.Fatal(err)
	}
	posRef, _ := m.Part("queue-positions.json")
	var pos queue.Positions
	if err := json.Unmarshal(readObject(t, d, posRef.Object), &pos); err != nil {
		t.Fatal(err)
	}
	var workers *queue.ConsumerPosition
	for i := range pos.Consumers {
		if pos.Consumers[i].Consumer == "workers" {
			workers = &pos.Consumers[i]
		}
	}
	if workers == nil || workers.AckFloorStream != acks || !workers.Paused {
		t.Fatalf("positions %+v: want consumer workers paused with ack floor %d", pos, acks)
	}
	if posRef.Meta["backend"] != pos.Backend || posRef.Meta["consumers"] == nil {
		t.Errorf("positions meta = %v", posRef.Meta)
	}
	streamRef, _ := m.Part("queue.archive")
	if streamRef.Meta["format"] != jetstream.SnapshotFormat {
		t.Errorf("stream meta = %v", streamRef.Meta)
	}
	t.Logf("queue archive %d bytes; positions %s", streamRef.Size, readObject(t, d, posRef.Object))

	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := jetstream.Restore(ctx, nc, bytes.NewReader(readObject(t, d, streamRef.Object))); err != nil {
		t.Fatalf("restore the stored archive: %v", err)
	}
	dst, err := jetstream.New(ctx, nc, jetstream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := dst.Stats(ctx, "workers")
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != total-acks {
		t.Errorf("restored consumer has %d pending, want %d", st.Pending, total-acks)
	}
}
