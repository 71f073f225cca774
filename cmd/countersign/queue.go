package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/queueurl"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("queue", "async sign queue controls: pause, resume, stats, positions, snapshot, quarantine, replay", runQueue)
}

// Embedded JetStream layout inside a data dir: the file store, and the URL
// of the running node's embedded server (so the controls reach it while it
// runs; without a running node they open the store directly).
const (
	queueStoreDir = "jetstream"
	queueURLFile  = "jetstream/client.url"
)

const queueUsage = `<subcommand> [--data DIR | --queue-url URL] [flags]

subcommands:
  pause        stop delivery to the workers' consumer (durable, survives restarts)
  resume       resume delivery
  stats        backlog, ack-pending, redelivered, paused
  positions    stream and consumer sequences (JSON, for a snapshot)
  snapshot     --out FILE: archive of the streams; prints its SHA-256
  quarantine   --ids ID,ID | --from-seq N --to-seq M: move messages out of the work stream
  replay       --rate R [--max N] [--dry-run]: sign the quarantined jobs idempotently

--queue-url names an external queue: nats://HOST:4222 (NATS JetStream) or
kafka://HOST:9092 (Kafka); see docs/configuration.md, "Queue URLs". Without it,
the embedded JetStream of --data is used: through the running node when one
serves it, otherwise opened directly from <data>/jetstream.`

func runQueue(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(env.stderr, "usage: countersign queue %s\n", queueUsage)
		if len(args) == 0 {
			return usageError("queue: missing subcommand")
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	fs := newFlagSet(env, "queue "+sub, "[--data DIR | --queue-url URL] [flags]")
	data := fs.String("data", "./data", "data directory whose embedded JetStream to use")
	extQ := addExternalQueueFlags(env, fs, "instead of the embedded server")
	consumer := fs.String("consumer", node.DefaultConsumer, "durable consumer of the workers")
	out := fs.String("out", "", "snapshot: file to write (refused if it exists)")
	ids := fs.String("ids", "", "quarantine: comma-separated message IDs (<tenant>/<idempotency key>)")
	fromSeq := fs.Uint64("from-seq", 0, "quarantine: first stream sequence")
	toSeq := fs.Uint64("to-seq", 0, "quarantine: last stream sequence")
	rate := fs.Float64("rate", 0, "replay: messages per second (required)")
	maxN := fs.Int("max", 0, "replay: at most this many messages (0: all)")
	dryRun := fs.Bool("dry-run", false, "replay: list what would be replayed")
	release := fs.String("release", envOr(env, "COUNTERSIGN_RELEASE", "dev"), "replay: release stamped on signatures made by the replay")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("queue %s: unexpected arguments %v", sub, fs.Args())
	}
	switch sub {
	case "pause", "resume", "stats", "positions", "snapshot", "quarantine", "replay":
	default:
		return usageError("queue: unknown subcommand %q\nusage: countersign queue %s", sub, queueUsage)
	}
	// Validate before touching the queue.
	var sel queue.Selector
	switch sub {
	case "snapshot":
		if *out == "" {
			return usageError("queue snapshot: --out is required")
		}
	case "quarantine":
		if *ids != "" {
			for _, id := range strings.Split(*ids, ",") {
				if id = strings.TrimSpace(id); id != "" {
					sel.IDs = append(sel.IDs, id)
				}
			}
		}
		sel.FromSeq, sel.ToSeq = *fromSeq, *toSeq
		if len(sel.IDs) == 0 && sel.ToSeq == 0 {
			return usageError("queue quarantine: give --ids or --from-seq/--to-seq")
		}
		if sel.ToSeq > 0 && sel.FromSeq > sel.ToSeq {
			return usageError("queue quarantine: --from-seq %d is after --to-seq %d", sel.FromSeq, sel.ToSeq)
		}
	case "replay":
		if *rate <= 0 {
			return usageError("queue replay: --rate must be > 0")
		}
	}

	qurl, err := extQ.value()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	q, err := openQueue(ctx, queueOptions{data: *data, url: qurl, logger: logger})
	if err != nil {
		return err
	}
	defer q.Close()

	var result any
	switch sub {
	case "pause":
		err = q.Pause(ctx, *consumer)
		result = map[string]any{"consumer": *consumer, "paused": true}
	case "resume":
		err = q.Resume(ctx, *consumer)
		result = map[string]any{"consumer": *consumer, "paused": false}
	case "stats":
		result, err = q.Stats(ctx, *consumer)
	case "positions":
		result, err = q.Positions(ctx)
	case "snapshot":
		result, err = snapshotQueue(ctx, q, *out)
	case "quarantine":
		result, err = q.Quarantine(ctx, sel)
	case "replay":
		result, err = replayQueue(ctx, q, *data, *release, logger, queue.ReplayOptions{Rate: *rate, Max: *maxN, DryRun: *dryRun})
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(result)
}

func snapshotQueue(ctx context.Context, q queue.Queue, path string) (queue.SnapshotInfo, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return queue.SnapshotInfo{}, err
	}
	info, err := q.Snapshot(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return queue.SnapshotInfo{}, err
	}
	return info, nil
}

// replayQueue re-delivers quarantined messages to a worker running in this
// process on the installation of data: each job is signed at most once (the
// worker completes a job whose signature exists and acknowledges a finished
// one), and the queue marks each message replayed once its job is finished.
func replayQueue(ctx context.Context, q queue.Queue, data, release string, logger *slog.Logger, opts queue.ReplayOptions) (queue.ReplayResult, error) {
	if opts.DryRun {
		return q.Replay(ctx, opts)
	}
	inst, err := install.Open(ctx, data, install.OpenOptions{Release: release, Instance: "replay-" + fmt.Sprint(os.Getpid()), Logger: logger})
	if err != nil {
		return queue.ReplayResult{}, err
	}
	defer inst.Close()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	committer := store.NewCommitter(runCtx, inst.Store, store.CommitterConfig{})
	defer committer.Close()
	srv, err := node.New(node.Config{Store: inst.Store, Committer: committer, Keys: inst.Keys, Jobs: inst.Store, Queue: q,
		Release: release, Instance: "replay-" + fmt.Sprint(os.Getpid()), Logger: logger})
	if err != nil {
		return queue.ReplayResult{}, err
	}
	w, err := node.NewWorker(srv, node.WorkerConfig{Queue: q, Logger: logger})
	if err != nil {
		return queue.ReplayResult{}, err
	}
	opts.Handler = w.Process
	return q.Replay(ctx, opts)
}

// queueOptions choose the queue of a node or of the controls.
type queueOptions struct {
	data string // data dir: embedded store under <data>/jetstream
	url  string // external queue instead (queueurl: nats:// or kafka://)
	// serve: this process owns the embedded server (the node); it listens
	// on loopback and records its URL for the controls.
	serve      bool
	syncAlways bool
	ackWait    time.Duration // redelivery delay of unacknowledged messages (0: the backend's default)
	logger     *slog.Logger
}

// controlQueue is a queue.Queue that also owns, when embedded, the server
// and its connection, and removes the server's URL file on Close.
type controlQueue struct {
	queue.Queue
	srv     *jetstream.Server
	nc      *nats.Conn
	urlFile string
}

func (c *controlQueue) Close() error {
	if c.urlFile != "" {
		os.Remove(c.urlFile)
	}
	err := c.Queue.Close()
	if c.nc != nil {
		c.nc.Close()
	}
	if c.srv != nil {
		c.srv.Shutdown()
	}
	return err
}

// openQueue opens the external NATS server, the running node's embedded
// server, or the embedded store itself.
func openQueue(ctx context.Context, o queueOptions) (*controlQueue, error) {
	cfg := jetstream.Config{AckWait: o.ackWait, Logger: o.logger}
	if o.url != "" {
		q, err := queueurl.Open(ctx, o.url, queueurl.Options{AckWait: o.ackWait, Logger: o.logger})
		if err != nil {
			return nil, err
		}
		return &controlQueue{Queue: q}, nil
	}
	urlFile := filepath.Join(o.data, queueURLFile)
	if !o.serve {
		if b, err := os.ReadFile(urlFile); err == nil {
			q, err := jetstream.Dial(ctx, strings.TrimSpace(string(b)), cfg, nats.Timeout(2*time.Second), nats.MaxReconnects(0))
			if err == nil {
				return &controlQueue{Queue: q}, nil
			}
			// A stale file from a node that died: open the store directly.
			o.logger.Warn("the node's embedded queue is not reachable; opening its store directly", slog.Any("err", err))
		}
	}
	if _, err := os.Stat(filepath.Join(o.data, install.ConfigFile)); err != nil {
		return nil, fmt.Errorf("queue: %s is not a Countersign data directory: %w", o.data, err)
	}
	dir := filepath.Join(o.data, queueStoreDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: dir, Listen: o.serve, SyncAlways: o.syncAlways})
	if err != nil {
		return nil, err
	}
	nc, err := srv.Connect()
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	q, err := jetstream.New(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	cq := &controlQueue{Queue: q, srv: srv, nc: nc}
	if o.serve {
		if err := os.WriteFile(urlFile, []byte(srv.ClientURL()+"\n"), 0o600); err != nil {
			cq.Close()
			return nil, fmt.Errorf("queue: %w", err)
		}
		cq.urlFile = urlFile
	}
	return cq, nil
}

var errNoQueue = errors.New("node: --worker needs a queue (--queue embedded or --queue-url URL)")

// externalQueueFlags are --queue-url, which names a NATS JetStream or a
// Kafka queue, and --nats, its older spelling for NATS alone.
type externalQueueFlags struct {
	url, nats *string
}

func addExternalQueueFlags(env *cliEnv, fs interface {
	String(name, value, usage string) *string
}, what string) *externalQueueFlags {
	return &externalQueueFlags{
		url: fs.String("queue-url", env.getenv("COUNTERSIGN_QUEUE_URL"),
			"external queue "+what+": nats://HOST:4222[,...] (NATS JetStream) or kafka://HOST:9092[,...][/TOPIC][?OPTIONS] (env COUNTERSIGN_QUEUE_URL)"),
		nats: fs.String("nats", env.getenv("COUNTERSIGN_NATS_URL"), "NATS JetStream URL(s): the older spelling of --queue-url for NATS (env COUNTERSIGN_NATS_URL)"),
	}
}

// value is the queue URL the flags name, "" for none.
func (f *externalQueueFlags) value() (string, error) {
	return resolveQueueURL(*f.url, *f.nats)
}

// resolveQueueURL checks --queue-url and --nats: --nats takes NATS URLs
// only, and the two may not name different queues.
func resolveQueueURL(queueURL, natsURL string) (string, error) {
	queueURL, natsURL = strings.TrimSpace(queueURL), strings.TrimSpace(natsURL)
	if natsURL != "" {
		t, err := queueurl.Parse(natsURL)
		if err != nil {
			return "", usageError("--nats: %v", err)
		}
		if t.Backend != queueurl.JetStream {
			return "", usageError("--nats takes a NATS URL; give %s as --queue-url", t)
		}
	}
	switch {
	case queueURL == "":
		return natsURL, nil
	case natsURL != "" && natsURL != queueURL:
		return "", usageError("--queue-url %s and --nats %s name different queues (also check $COUNTERSIGN_QUEUE_URL and $COUNTERSIGN_NATS_URL)",
			queueurl.Redact(queueURL), queueurl.Redact(natsURL))
	}
	if _, err := queueurl.Parse(queueURL); err != nil {
		return "", usageError("--queue-url: %v", err)
	}
	return queueURL, nil
}

// nodeQueueFlags are the node's flags for asynchronous signing.
type nodeQueueFlags struct {
	mode           *string
	external       *externalQueueFlags
	syncAlways     *bool
	worker         *bool
	concurrency    *int
	sweepAfter     *time.Duration
	ackWait        *time.Duration
	callbackSecret *string
}

func addQueueFlags(env *cliEnv, fs interface {
	String(name, value, usage string) *string
	Bool(name string, value bool, usage string) *bool
	Int(name string, value int, usage string) *int
	Duration(name string, value time.Duration, usage string) *time.Duration
}) *nodeQueueFlags {
	return &nodeQueueFlags{
		mode:           fs.String("queue", "off", "async signing queue: off | embedded (JetStream in <data>/jetstream); --queue-url implies an external one"),
		external:       addExternalQueueFlags(env, fs, "for async signing"),
		syncAlways:     fs.Bool("queue-sync-always", false, "embedded queue: fsync every message before the PubAck"),
		worker:         fs.Bool("worker", true, "run the async worker in this process (when a queue is configured)"),
		concurrency:    fs.Int("worker-concurrency", node.DefaultWorkerConcurrency, "messages the worker signs at once"),
		sweepAfter:     fs.Duration("sweep-after", node.DefaultSweepAfter, "re-publish jobs still accepted after this long"),
		ackWait:        fs.Duration("queue-ack-wait", jetstream.DefaultAckWait, "redeliver a message not acknowledged within this (e.g. after a crash); set when the consumer is created"),
		callbackSecret: fs.String("callback-secret-file", "", "file holding the HMAC-SHA256 secret that signs job callbacks"),
	}
}

// crashPoint arms $COUNTERSIGN_CRASHPOINT, which only drill mode honours;
// outside a drill its presence is refused rather than ignored.
func (f *nodeQueueFlags) crashPoint(env *cliEnv, drill bool) (*node.CrashPoint, error) {
	spec := env.getenv(node.CrashPointEnv)
	if spec == "" {
		return nil, nil
	}
	if !drill {
		return nil, usageError("$%s is honoured only with --drill", node.CrashPointEnv)
	}
	cp, err := node.ParseCrashPoint(spec)
	if err != nil {
		return nil, usageError("$%s: %v", node.CrashPointEnv, err)
	}
	return cp, nil
}

// open returns the node's queue, or nil when async signing is off.
func (f *nodeQueueFlags) open(ctx context.Context, data string, logger *slog.Logger) (*controlQueue, error) {
	url, err := f.external.value()
	if err != nil {
		return nil, err
	}
	switch {
	case url != "":
		return openQueue(ctx, queueOptions{url: url, ackWait: *f.ackWait, logger: logger})
	case *f.mode == "embedded":
		return openQueue(ctx, queueOptions{data: data, serve: true, syncAlways: *f.syncAlways, ackWait: *f.ackWait, logger: logger})
	case *f.mode == "off" || *f.mode == "":
		if *f.worker && *f.mode != "off" {
			return nil, errNoQueue
		}
		return nil, nil
	}
	return nil, usageError("--queue: %q is not off or embedded", *f.mode)
}

// startWorker runs the worker in the background when one is wanted; the
// returned stop ends it and waits (it may be called twice).
func (f *nodeQueueFlags) startWorker(ctx context.Context, srv *node.Server, q *controlQueue, logger *slog.Logger) (stop func(), err error) {
	if q == nil || !*f.worker {
		return func() {}, nil
	}
	var secret node.CallbackSecret
	if *f.callbackSecret != "" {
		b, err := os.ReadFile(*f.callbackSecret)
		if err != nil {
			return nil, fmt.Errorf("--callback-secret-file: %w", err)
		}
		if secret = node.CallbackSecret(strings.TrimSpace(string(b))); len(secret) < 16 {
			return nil, fmt.Errorf("--callback-secret-file: the secret must be at least 16 bytes")
		}
	}
	w, err := node.NewWorker(srv, node.WorkerConfig{Queue: q, Concurrency: *f.concurrency, SweepAfter: *f.sweepAfter,
		CallbackSecret: secret, Logger: logger})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				logger.Error("async worker stopped", slog.Any("err", err))
			}
		})
	}, nil
}
