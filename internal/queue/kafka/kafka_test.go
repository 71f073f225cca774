package kafka_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/kafka"
	"github.com/countersign/countersign/internal/queue/queuetest"
)

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
		return openFake(t, queuetest.FakeKafka(t))
	})
}

// TestPauseSurvivesRestart checks that a pause written by one Queue is
// honoured by a Queue opened afterwards (a restarted worker).
func TestPauseSurvivesRestart(t *testing.T) {
	brokers := queuetest.FakeKafka(t)
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
	q := openFake(b, queuetest.FakeKafka(b))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := q.Publish(ctx, queuetest.Msg("acme", fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConsumeAckKfakeFakeCluster(b *testing.B) {
	q := openFake(b, queuetest.FakeKafka(b))
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

// TestWithoutCreateACL: once the topics exist, a principal with Describe,
// Read and Write on them and Read on the groups, but no Create, opens the
// queue and works; without the topics it is told it may not create them.
func TestWithoutCreateACL(t *testing.T) {
	const topic = "cs.acl"
	allow := func(res kmsg.ACLResourceType, name string, ops ...kmsg.ACLOperation) []kfake.ACL {
		var acls []kfake.ACL
		for _, op := range ops {
			acls = append(acls, kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
		}
		return acls
	}
	var acls []kfake.ACL
	for _, tp := range []string{topic, topic + ".replay", topic + ".control"} {
		acls = append(acls, allow(kmsg.ACLResourceTypeTopic, tp, kmsg.ACLOperationDescribe, kmsg.ACLOperationRead, kmsg.ACLOperationWrite)...)
	}
	for _, g := range []string{topic + ".workers", topic + ".replay"} {
		acls = append(acls, allow(kmsg.ACLResourceTypeGroup, g, kmsg.ACLOperationRead, kmsg.ACLOperationDescribe)...)
	}
	acls = append(acls, allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite)...)
	brokers := queuetest.FakeKafka(t, kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-pw"), kfake.User("PLAIN", "app", "app-pw", acls...))
	as := func(user, pass string) kafka.Config {
		return kafka.Config{Brokers: brokers, Topic: topic,
			ClientOpts: []kgo.Opt{kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())}}
	}
	ctx := t.Context()
	if _, err := kafka.New(ctx, as("app", "app-pw")); err == nil || !strings.Contains(err.Error(), "create topic") {
		t.Fatalf("New as app before the topics exist = %v, want a create-topic authorization error", err)
	}
	admin, err := kafka.New(ctx, as("admin", "admin-pw"))
	if err != nil {
		t.Fatalf("New as admin: %v", err)
	}
	admin.Close()
	q, err := kafka.New(ctx, as("app", "app-pw"))
	if err != nil {
		t.Fatalf("New as app once the topics exist: %v", err)
	}
	defer q.Close()
	if _, err := q.Publish(ctx, queuetest.Msg("acme", "acl")); err != nil {
		t.Fatalf("Publish as app: %v", err)
	}
	if _, err := q.Positions(ctx); err != nil {
		t.Fatalf("Positions as app: %v", err)
	}
}
