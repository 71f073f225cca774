package control

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/queueurl"
	"github.com/countersign/countersign/internal/store"
)

// Embedded queue layout inside the data directory. The URL file is the
// one `countersign queue --data DIR` reads to reach a running server.
const (
	QueueStoreDir = "jetstream"
	QueueURLFile  = "jetstream/client.url"
)

// DefaultQueueAckWait is how long an unacknowledged job message waits
// before it is redelivered to another worker (e.g. after the regressive
// pool's workers were stopped with messages in hand).
const DefaultQueueAckWait = 10 * time.Second

// sharedConsumerNote says why the block-ingress and isolate steps do not
// pause a consumer per pool.
const sharedConsumerNote = "every pool's workers share the durable consumer " + node.DefaultConsumer +
	" (one work queue); pausing it would stop the stable workers too, so it is not paused per pool: " +
	"the gateway refuses POST /v1/sign:async while the gate is on, and isolate stops the regressive pool's workers"

// worldQueue is the embedded JetStream server the world runs, or an
// external queue (srv nil: a NATS JetStream cluster or Kafka, by URL), and
// the control plane's own connection to it.
type worldQueue struct {
	srv *jetstream.Server
	q   queue.Queue
	url string
	// nodeArgs pass the embedded server's URL to a release's nodes
	// (--nats: every release understands it; the URL holds no secret).
	// nodeEnv passes an external queue's URL instead, through the local
	// fleet's environment, which is never recorded and never on a command
	// line, since the URL may hold a password: $COUNTERSIGN_NATS_URL for
	// JetStream (every release reads it), $COUNTERSIGN_QUEUE_URL for Kafka.
	nodeArgs []string
	nodeEnv  []string
	urlFile  string
	// closeConn closes the control plane's in-process connection.
	closeConn func()
}

// startQueue starts the embedded JetStream server on loopback, storing
// under <Dir>/jetstream. It listens on the port the previous control
// process used when that port is free, so nodes that outlived it (a
// crash-resume) reconnect to the same URL; otherwise on a free port.
func (w *World) startQueue(ctx context.Context) error {
	if w.cfg.QueueURL != "" {
		return w.dialQueue(ctx)
	}
	dir := filepath.Join(w.cfg.Dir, QueueStoreDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("control: queue store: %w", err)
	}
	urlFile := filepath.Join(w.cfg.Dir, QueueURLFile)
	scfg := jetstream.ServerConfig{StoreDir: dir, Listen: true, Host: "127.0.0.1", Port: previousPort(urlFile)}
	srv, err := jetstream.StartServer(scfg)
	if err != nil && scfg.Port > 0 {
		w.log.Warn("embedded queue: previous port taken; picking a free one", "port", scfg.Port, "err", err)
		scfg.Port = -1
		srv, err = jetstream.StartServer(scfg)
	}
	if err != nil {
		return fmt.Errorf("control: embedded queue: %w", err)
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Shutdown()
		return err
	}
	q, err := jetstream.New(ctx, nc, jetstream.Config{AckWait: w.ackWait(), Logger: w.log})
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return fmt.Errorf("control: queue streams: %w", err)
	}
	w.queue = &worldQueue{srv: srv, q: q, url: srv.ClientURL(), nodeArgs: []string{"--nats", srv.ClientURL()}, urlFile: urlFile, closeConn: nc.Close}
	if err := os.WriteFile(urlFile, []byte(w.queue.url+"\n"), 0o600); err != nil {
		w.queue.close()
		w.queue = nil
		return fmt.Errorf("control: %w", err)
	}
	return nil
}

// dialQueue connects to an external queue by URL (queueurl): a NATS
// JetStream server or cluster, with the same streams and consumer as the
// embedded one, or a Kafka cluster, with the topics and consumer group of
// package kafka. The playbook's queue steps use only queue.Queue, so they
// do the same on both.
func (w *World) dialQueue(ctx context.Context) error {
	t, err := queueurl.Parse(w.cfg.QueueURL)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	q, err := t.Open(ctx, queueurl.Options{AckWait: w.ackWait(), Logger: w.log})
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	env := "COUNTERSIGN_NATS_URL="
	if t.Backend != queueurl.JetStream {
		env = "COUNTERSIGN_QUEUE_URL="
	}
	w.queue = &worldQueue{q: q, url: w.cfg.QueueURL, nodeEnv: []string{env + w.cfg.QueueURL}}
	return nil
}

func (w *World) ackWait() time.Duration {
	if w.cfg.QueueAckWait > 0 {
		return w.cfg.QueueAckWait
	}
	return DefaultQueueAckWait
}

// previousPort is the port of the URL a previous control process wrote,
// or -1 (any free port).
func previousPort(urlFile string) int {
	b, err := os.ReadFile(urlFile)
	if err != nil {
		return -1
	}
	u, err := url.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil || p <= 0 {
		return -1
	}
	return p
}

func (q *worldQueue) close() error {
	if q == nil {
		return nil
	}
	if q.urlFile != "" {
		os.Remove(q.urlFile)
	}
	err := q.q.Close()
	if q.closeConn != nil {
		q.closeConn()
	}
	if q.srv != nil {
		q.srv.Shutdown()
	}
	return err
}

// QueueURL is the client URL of the world's queue: its embedded JetStream
// server, or the external queue it was given. It may carry a password:
// print it through queueurl.Redact.
func (w *World) QueueURL() string {
	if w.queue == nil {
		return ""
	}
	return w.queue.url
}

// Queue exposes the world's queue (stats, positions, controls).
func (w *World) Queue() queue.Queue {
	if w.queue == nil {
		return nil
	}
	return w.queue.q
}

// consumerState reads the shared workers' consumer; a consumer no worker
// has created yet reads as empty.
func (w *World) consumerState(ctx context.Context) map[string]any {
	st, err := w.queue.q.Stats(ctx, node.DefaultConsumer)
	if err != nil {
		return map[string]any{"consumer": node.DefaultConsumer, "error": err.Error()}
	}
	return map[string]any{"consumer": st.Consumer, "paused": st.Paused, "backlog": st.Backlog,
		"ack_pending": st.AckPending, "redelivered": st.Redelivered}
}

// jobReader is what the republisher reads (store.Store).
type jobReader interface {
	JobByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Job, error)
}

// republisher is the replay step's reconcile.Processor: it puts a job's
// message back on the work queue, where the stable pool's workers sign it
// (idempotently: a job already signed is acknowledged without signing, a
// key that holds its signature is linked), and waits until the job is
// finished. A re-publish the broker drops as a duplicate (same message ID
// within its de-duplication window) means the message is still queued or
// was just handled; it is published again each Every until the job
// finishes or Timeout passes.
type republisher struct {
	q       queue.Queue
	jobs    jobReader
	every   time.Duration
	timeout time.Duration
}

// errReplayTimeout is returned when a replayed job is still accepted
// after the republisher's timeout.
var errReplayTimeout = errors.New("control: replayed job not finished by the stable workers in time")

func (r republisher) Process(ctx context.Context, m queue.Message) error {
	tenant, key, ok := strings.Cut(m.ID, "/")
	if !ok {
		return fmt.Errorf("%w: %q", queue.ErrInvalidMessage, m.ID)
	}
	deadline := time.Now().Add(r.timeout)
	for {
		if _, err := r.q.Publish(ctx, m); err != nil {
			return err
		}
		next := time.Now().Add(r.every)
		for time.Now().Before(next) {
			j, err := r.jobs.JobByIdempotencyKey(ctx, tenant, key)
			if err != nil {
				return err
			}
			if j.State != store.JobAccepted {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%w: job %s after %s", errReplayTimeout, j.ID, r.timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}
