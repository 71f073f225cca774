package jetstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/queuetest"
)

const testAckWait = time.Second

func openEmbedded(t testing.TB, scfg jetstream.ServerConfig) *jetstream.Queue {
	t.Helper()
	if scfg.StoreDir == "" {
		scfg.StoreDir = t.TempDir()
	}
	q, err := jetstream.OpenEmbedded(context.Background(), scfg, jetstream.Config{AckWait: testAckWait})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestConformanceEmbedded(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Queue {
		return openEmbedded(t, jetstream.ServerConfig{})
	})
}

// externalURL returns the dev machine's NATS server, failing under CI when
// it is unreachable and skipping otherwise.
func externalURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("COUNTERSIGN_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err == nil {
		nc.Close()
		return url
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("external NATS server %s unreachable under CI=true: %v", url, err)
	}
	t.Skipf("external NATS server %s unreachable (set COUNTERSIGN_TEST_NATS; required under CI=true): %v", url, err)
	return ""
}

func TestConformanceExternal(t *testing.T) {
	url := externalURL(t)
	queuetest.Run(t, func(t *testing.T) queue.Queue {
		suffix := rand.Text()[:10]
		cfg := jetstream.Config{Stream: "CSTEST_" + suffix, Subject: "cstest." + suffix, AckWait: testAckWait}
		q, err := jetstream.Dial(t.Context(), url, cfg)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() {
			defer q.Close()
			nc, err := nats.Connect(url)
			if err != nil {
				t.Errorf("cleanup connect: %v", err)
				return
			}
			defer nc.Close()
			js, _ := natsjs.New(nc)
			work, replay := q.Streams()
			for _, s := range []string{work, replay} {
				if err := js.DeleteStream(context.Background(), s); err != nil {
					t.Errorf("cleanup: delete stream %s: %v", s, err)
				}
			}
		})
		return q
	})
}

func TestListeningServer(t *testing.T) {
	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	if url == "" {
		t.Fatal("ClientURL empty for a listening server")
	}
	q, err := jetstream.Dial(t.Context(), url, jetstream.Config{})
	if err != nil {
		t.Fatalf("Dial(%s): %v", url, err)
	}
	defer q.Close()
	if _, err := q.Publish(t.Context(), queuetest.Msg("acme", "tcp")); err != nil {
		t.Fatalf("Publish over TCP: %v", err)
	}
	quiet, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	defer quiet.Shutdown()
	if got := quiet.ClientURL(); got != "" {
		t.Errorf("ClientURL of a non-listening server = %q, want empty", got)
	}
}

// TestPauseSurvivesRestart restarts the embedded server on the same store
// and checks the consumer is still paused.
func TestPauseSurvivesRestart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	q := openEmbedded(t, jetstream.ServerConfig{StoreDir: dir})
	if err := q.Pause(ctx, "workers"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	q.Close()
	q = openEmbedded(t, jetstream.ServerConfig{StoreDir: dir})
	st, err := q.Stats(ctx, "workers")
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if !st.Paused {
		t.Fatalf("after restart stats = %+v, want paused", st)
	}
}

// TestSnapshotRestore restores a snapshot into a fresh server and checks
// that messages, quarantined messages and consumer positions come back.
func TestSnapshotRestore(t *testing.T) {
	ctx := t.Context()
	src := openEmbedded(t, jetstream.ServerConfig{})
	var want []string
	for i := range 20 {
		m := queuetest.Msg("acme", fmt.Sprintf("k%02d", i))
		want = append(want, m.ID)
		if _, err := src.Publish(ctx, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if _, err := src.Quarantine(ctx, queue.Selector{IDs: []string{want[19]}}); err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	acked := make(chan struct{}, 20)
	sub, err := src.Consume(ctx, "workers", func(ctx context.Context, d queue.Delivery) {
		if d.Meta().Sequence <= 5 {
			if err := d.Ack(ctx); err != nil {
				t.Errorf("Ack: %v", err)
			}
			acked <- struct{}{}
		}
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for range 5 {
		<-acked
	}
	sub.Stop()
	var buf bytes.Buffer
	if _, err := src.Snapshot(ctx, &buf); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}

	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	streams, err := jetstream.Restore(ctx, nc, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if len(streams) != 2 {
		t.Fatalf("restored %v, want work and replay streams", streams)
	}
	dst, err := jetstream.New(ctx, nc, jetstream.Config{AckWait: testAckWait})
	if err != nil {
		t.Fatalf("New on restored streams: %v", err)
	}
	st, err := dst.Stats(ctx, "workers")
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	// 19 messages remain in the work stream, 5 acknowledged before the
	// snapshot; the unacknowledged ones count as pending again.
	if st.Pending != 14 {
		t.Errorf("restored consumer stats = %+v, want 14 pending", st)
	}
	got := make(chan string, 20)
	sub, err = dst.Consume(ctx, "workers", func(ctx context.Context, d queue.Delivery) {
		_ = d.Ack(ctx)
		got <- d.Message().ID
	})
	if err != nil {
		t.Fatalf("Consume restored: %v", err)
	}
	defer sub.Stop()
	for i := 5; i < 19; i++ {
		select {
		case id := <-got:
			if id != want[i] {
				t.Errorf("restored delivery = %s, want %s", id, want[i])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("restored stream delivered %d messages, want 14", i-5)
		}
	}
	plan, err := dst.Replay(ctx, queue.ReplayOptions{Rate: 100, DryRun: true})
	if err != nil || len(plan.IDs) != 1 || plan.IDs[0] != want[19] {
		t.Errorf("restored replay plan = %+v, %v, want [%s]", plan, err, want[19])
	}
	// A second restore of the same archive is refused: the streams exist.
	if _, err := jetstream.Restore(ctx, nc, bytes.NewReader(buf.Bytes())); !errors.Is(err, jetstream.ErrSnapshot) {
		t.Errorf("second Restore = %v, want ErrSnapshot", err)
	}
}
