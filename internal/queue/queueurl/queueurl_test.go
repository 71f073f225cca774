package queueurl

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/queuetest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url, backend string
		brokers      []string
		topic        string
		partitions   int32
		replication  int16
		opts         int // franz-go options beyond the defaults (TLS, SASL)
		replicas     int
		natsURLs     string
	}{
		{url: "nats://127.0.0.1:4222", backend: JetStream},
		{url: "nats://u:p@a:4222,nats://b:4222", backend: JetStream},
		{url: "tls://nats.example:4222", backend: JetStream},
		{url: "nats://a:4222,nats://b:4222,nats://c:4222?replicas=3", backend: JetStream, replicas: 3, natsURLs: "nats://a:4222,nats://b:4222,nats://c:4222"},
		{url: "kafka://k1:9092", backend: Kafka, brokers: []string{"k1:9092"}},
		{url: "kafka://k1:9092,k2:9093/cs.work", backend: Kafka, brokers: []string{"k1:9092", "k2:9093"}, topic: "cs.work"},
		{url: "kafka://[::1]:9092?partitions=6&replication=3", backend: Kafka, brokers: []string{"[::1]:9092"}, partitions: 6, replication: 3},
		{url: "kafka://k1:9092?tls=true", backend: Kafka, brokers: []string{"k1:9092"}, opts: 1},
		{url: "kafka://svc:s3cret@k1:9092?sasl=scram-sha-512&tls=1", backend: Kafka, brokers: []string{"k1:9092"}, opts: 2},
		{url: "KAFKA://k1:9092", backend: Kafka, brokers: []string{"k1:9092"}},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := Parse(tc.url)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Backend != tc.backend {
				t.Fatalf("backend %q, want %q", got.Backend, tc.backend)
			}
			if tc.backend != Kafka {
				want := tc.natsURLs
				if want == "" {
					want = tc.url
				}
				if got.natsURLs != want || got.replicas != tc.replicas {
					t.Errorf("NATS URLs %q replicas %d, want %q %d", got.natsURLs, got.replicas, want, tc.replicas)
				}
				return
			}
			k := got.kafka
			if strings.Join(k.Brokers, ",") != strings.Join(tc.brokers, ",") || k.Topic != tc.topic ||
				k.Partitions != tc.partitions || k.ReplicationFactor != tc.replication || len(k.ClientOpts) != tc.opts {
				t.Errorf("kafka config = brokers %v topic %q partitions %d replication %d opts %d, want %v %q %d %d %d",
					k.Brokers, k.Topic, k.Partitions, k.ReplicationFactor, len(k.ClientOpts),
					tc.brokers, tc.topic, tc.partitions, tc.replication, tc.opts)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"127.0.0.1:4222", "want nats://HOST:PORT"},
		{"amqp://h:5672", `unknown scheme "amqp"`},
		{"nats://a:4222?replicas=7", "replicas="},
		{"nats://a:4222?stream=x", `unknown option "stream"`},
		{"nats://", "has no HOST:PORT"},
		{"kafka://", "is not HOST:PORT"},
		{"kafka://k1", "is not HOST:PORT"},
		{"kafka://k1:0", "port"},
		{"kafka://k1:9092,", "is not HOST:PORT"},
		{"kafka://k1:9092/bad topic", "topic"},
		{"kafka://k1:9092/a/b", "topic"},
		{"kafka://k1:9092?acks=1", `unknown option "acks"`},
		{"kafka://k1:9092?tls=maybe", "tls="},
		{"kafka://k1:9092?partitions=0", "partitions="},
		{"kafka://k1:9092?sasl=plain", "needs USER:PASSWORD@"},
		{"kafka://u:hunter2@k1:9092", "without sasl="},
		{"kafka://u:hunter2@k1:9092?sasl=gssapi", `sasl="gssapi"`},
		{"kafka://k1:9092?ca=/nonexistent/ca.pem", "ca:"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := Parse(tc.url)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) = %v, want ErrInvalid", tc.url, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q carries the password", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                        "nats://127.0.0.1:4222",
		"nats://u:pw1@a:4222,nats://v:pw2@b:4222":      "nats://u:xxxxx@a:4222,nats://v:xxxxx@b:4222",
		"nats://s3cret-token@a:4222":                   "nats://xxxxx@a:4222", // a NATS token
		"kafka://svc:pw1@k1:9092,k2:9092/t?sasl=plain": "kafka://svc:xxxxx@k1:9092,k2:9092/t?sasl=plain",
		"kafka://svc:p@ss:w0rd@k1:9092?sasl=plain":     "kafka://svc:xxxxx@k1:9092?sasl=plain",
		"kafka://svc:pa/ss?w#rd@k1:9092?sasl=plain":    "kafka://svc:xxxxx@k1:9092?sasl=plain",
		"nats://u:pa,ss@a:4222":                        "nats://u:xxxxx@a:4222", // a comma in the password
		"nats://u:p%zz@a:4222":                         "nats://u:xxxxx@a:4222",
		"#://0:00000000@0":                             "#://0:xxxxx@0", // found by FuzzRedact
		"h:p@ss":                                       "xxxxx@ss",
		// An "@" after the path is taken for the end of a userinfo: too
		// much is hidden, never too little.
		"kafka://k1:9092/t?x=a@b": "kafka://k1:xxxxx@b",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseKafkaPasswordWithReservedCharacters(t *testing.T) {
	got, err := Parse("kafka://svc:pa/ss?w#rd@k1:9092/topic?sasl=plain")
	if err != nil {
		t.Fatal(err)
	}
	if got.kafka.Topic != "topic" || strings.Join(got.kafka.Brokers, ",") != "k1:9092" || len(got.kafka.ClientOpts) != 1 {
		t.Errorf("parsed %+v", got.kafka)
	}
}

// newKafka starts a fake Kafka cluster (queuetest.FakeKafka) and returns
// its brokers as a URL authority.
func newKafka(t *testing.T, opts ...kfake.Opt) string {
	t.Helper()
	return strings.Join(queuetest.FakeKafka(t, opts...), ",")
}

// roundTrip publishes one message and consumes it.
func roundTrip(t *testing.T, q queue.Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := q.Publish(ctx, queuetest.Msg("acme", "k1")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := make(chan string, 1)
	sub, err := q.Consume(ctx, "workers", func(ctx context.Context, d queue.Delivery) {
		d.Ack(ctx)
		got <- d.Message().ID
	})
	if err != nil {
		t.Fatalf("Consume: %v", err)
	}
	defer sub.Stop()
	select {
	case id := <-got:
		if id != "acme/k1" {
			t.Errorf("delivered %q, want acme/k1", id)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
}

func TestOpenKafka(t *testing.T) {
	q, err := Open(t.Context(), "kafka://"+newKafka(t)+"/cs.open", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	roundTrip(t, q)
}

func TestOpenKafkaSASL(t *testing.T) {
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			kmech := map[string]string{"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512"}[mech]
			addr := newKafka(t, kfake.EnableSASL(), kfake.Superuser(kmech, "svc", "right-password"))
			q, err := Open(t.Context(), "kafka://svc:right-password@"+addr+"?sasl="+mech, Options{})
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, q)
			q.Close()

			_, err = Open(t.Context(), "kafka://svc:wrong-password@"+addr+"?sasl="+mech, Options{ConnectTimeout: time.Second})
			if err == nil {
				t.Fatal("a wrong password was accepted")
			}
			t.Logf("wrong password: %v", err)
			if strings.Contains(err.Error(), "wrong-password") {
				t.Errorf("error %q carries the password", err)
			}
		})
	}
}

func TestOpenKafkaTLS(t *testing.T) {
	// httptest's certificate is valid for 127.0.0.1; kfake serves it.
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := newKafka(t, kfake.TLS(&tls.Config{Certificates: srv.TLS.Certificates}))
	q, err := Open(t.Context(), "kafka://"+addr+"?ca="+ca, Options{})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, q)
	q.Close()

	// Without the CA the brokers' certificate is not trusted.
	if _, err := Open(t.Context(), "kafka://"+addr+"?tls=true", Options{ConnectTimeout: 2 * time.Second}); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}
}

func TestOpenJetStream(t *testing.T) {
	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: t.TempDir(), Listen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	q, err := Open(t.Context(), srv.ClientURL(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	roundTrip(t, q)
}

func TestOpenUnreachableRedacts(t *testing.T) {
	_, err := Open(t.Context(), "nats://u:hunter2@127.0.0.1:1", Options{ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "xxxxx") {
		t.Errorf("error %q: want the URL with its password redacted", err)
	}
}

// startNATSCluster starts three clustered NATS servers with JetStream on
// loopback (the same server Countersign embeds, v2.15), as a NATS cluster
// on Kubernetes would run, and returns their client URLs joined by commas.
func startNATSCluster(t *testing.T) string {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
	}
	var urls []string
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("cs-%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "countersign-test", Host: "127.0.0.1", Port: p},
			Routes:  routes,
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %d not ready", i)
		}
		urls = append(urls, ns.ClientURL())
	}
	return strings.Join(urls, ",")
}

// TestNATSClusterByURL runs the queue conformance suite (pause and resume,
// positions, snapshot, quarantine, replay) against a three-server
// JetStream cluster named by URL, with the streams replicated three times.
func TestNATSClusterByURL(t *testing.T) {
	raw := startNATSCluster(t) + "?replicas=3"
	open := func(t *testing.T) queue.Queue {
		// The meta leader is elected a moment after the servers start.
		deadline := time.Now().Add(20 * time.Second)
		for {
			// A short ack wait, as the other JetStream suites use: a
			// stopped consumer's message comes back within it.
			q, err := Open(t.Context(), raw, Options{AckWait: time.Second})
			if err == nil {
				t.Cleanup(func() { q.Close(); deleteStreams(t, raw) })
				return q
			}
			if time.Now().After(deadline) {
				t.Fatalf("Open %s: %v", raw, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	q := open(t)
	pos, err := q.Positions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(pos)
	t.Logf("positions on the cluster: %s", b)
	checkReplicas(t, raw, 3)
	// A process that does not say (an operator's `queue stats`) keeps the
	// streams' replication.
	plain := raw[:strings.LastIndex(raw, "?")]
	q2, err := Open(t.Context(), plain, Options{})
	if err != nil {
		t.Fatal(err)
	}
	q2.Close()
	checkReplicas(t, raw, 3)
	queuetest.Run(t, open)
}

// deleteStreams removes the queue's streams from the cluster, so that the
// next conformance test starts empty as it does on a fresh server.
func deleteStreams(t *testing.T, raw string) {
	t.Helper()
	js := clusterJS(t, raw)
	for _, s := range []string{jetstream.DefaultStream, jetstream.DefaultStream + "_REPLAY"} {
		if err := js.DeleteStream(context.Background(), s); err != nil && !errors.Is(err, natsjs.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", s, err)
		}
	}
}

func checkReplicas(t *testing.T, raw string, want int) {
	t.Helper()
	js := clusterJS(t, raw)
	for _, name := range []string{jetstream.DefaultStream, jetstream.DefaultStream + "_REPLAY"} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if got := s.CachedInfo().Config.Replicas; got != want {
			t.Errorf("stream %s has %d replicas, want %d", name, got, want)
		}
	}
}

// clusterJS is a JetStream client of the cluster raw names (raw without
// our options), closed when the test ends.
func clusterJS(t *testing.T, raw string) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(raw[:strings.LastIndex(raw, "?")])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
