package queuetest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// FakeKafka starts kfake, franz-go's protocol-level FAKE Kafka cluster,
// with one broker listening on loopback (so other processes reach it as
// they would a cluster) plus opts, closes it when tb ends, and returns its
// broker addresses. No real Kafka broker can run on the development
// machines.
func FakeKafka(tb testing.TB, opts ...kfake.Opt) []string {
	tb.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		tb.Fatalf("kfake: %v", err)
	}
	tb.Cleanup(c.Close)
	return c.ListenAddrs()
}
