package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("node", "serve the signing API (the data plane)", runNode)
}

func runNode(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "node", "--data DIR --listen ADDR [flags]")
	data := fs.String("data", "./data", "data directory made by 'countersign init'")
	listen := fs.String("listen", "127.0.0.1:7300", "address to serve the API on")
	release := fs.String("release", envOr(env, "COUNTERSIGN_RELEASE", "dev"), "release id stamped on every signature (env COUNTERSIGN_RELEASE)")
	instance := fs.String("instance", env.getenv("COUNTERSIGN_INSTANCE"), "instance id stamped on every signature (default host-pid; env COUNTERSIGN_INSTANCE)")
	storeURL := fs.String("store", "", "override the data directory's store URL")
	migrate := fs.Bool("migrate", false, "apply pending store migrations before serving")
	schemaMin := fs.Int("schema-min", 0, "lowest store schema version this release runs against (default: the binary's)")
	schemaMax := fs.Int("schema-max", 0, "highest store schema version this release runs against (default: the binary's)")
	integrate := fs.Bool("integrate", true, "integrate the audit log and sign checkpoints (turn off when another process does, e.g. under 'countersign up')")
	maxDoc := fs.Int64("max-document-bytes", node.DefaultMaxDocumentBytes, "largest document accepted")
	drill := fs.Bool("drill", false, "drill mode: allows --fault; never use in production")
	fault := fs.String("fault", "", "drill fault scenario to inject (needs --drill): invalid-signatures | metadata-drift | hsm-timeouts | partial-persist | irreversible-migration")
	faultRate := fs.Float64("fault-rate", 1, "fraction of requests the fault affects")
	logLevel := fs.String("log-level", "info", "debug | info | warn | error")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060); off by default")
	flagsPath := fs.String("flags", "", "flagd-format flag file of this release (validated at start, watched for changes); off when empty")
	gcPercent := fs.Int("gc-percent", defaultGCPercent, "Go GC target percentage, as GOGC (0, or $GOGC set: the runtime's own setting); higher trades memory for less CPU per request")
	linger := fs.Duration("commit-linger", store.DefaultLinger, "how long the group commit may wait for more signatures once several are arriving (0: commit at once); see docs/configuration.md")
	qf := addQueueFlags(env, fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *linger < 0 || *linger > 100*time.Millisecond {
		return usageError("--commit-linger %v: want 0 to 100ms", *linger)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError("--log-level: %v", err)
	}
	logger := slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: lvl}))
	if env.getenv("GOGC") == "" && *gcPercent != 0 {
		debug.SetGCPercent(*gcPercent)
	}
	if *pprofAddr != "" {
		stopPprof, err := startPprof(*pprofAddr, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	var faults *node.Faults
	if *fault != "" {
		if !*drill {
			return usageError("--fault is honoured only with --drill")
		}
		var err error
		if faults, err = node.NewFaults(*fault, *faultRate, uint64(time.Now().UnixNano())); err != nil {
			return usageError("%v", err)
		}
		logger = logger.With(slog.String("drill_fault", *fault), slog.Bool("drill", true))
	}

	crash, err := qf.crashPoint(env, *drill)
	if err != nil {
		return err
	}

	var extra []store.Migration
	if *fault == node.FaultIrreversibleMigration {
		// A newer release's expand migration: this release then declares
		// (and needs) the expanded schema.
		extra, *migrate = []store.Migration{node.DrillMigration()}, true
		if *schemaMin == 0 {
			*schemaMin, *schemaMax = store.SchemaVersion+1, store.SchemaVersion+1
		}
	}
	inst, err := install.Open(ctx, *data, install.OpenOptions{Migrate: *migrate, SchemaMin: *schemaMin, SchemaMax: *schemaMax, ExtraMigrations: extra,
		StoreURL: *storeURL, Release: *release, Instance: *instance, Logger: logger})
	if err != nil {
		return err
	}
	defer inst.Close()

	// Fork protection: refuse to write onto a tree that is not consistent
	// with the checkpoints this installation has signed. A node that does
	// not integrate may have no history of its own (a pod: the control
	// plane integrates and keeps it, and checks at its start); it checks
	// when the history is there, as on one machine.
	if _, err := os.Stat(inst.HistoryPath()); *integrate || err == nil {
		if err := auditlog.CheckFork(ctx, inst.Store, inst.HistoryPath()); err != nil {
			return err
		}
	} else {
		logger.Info("fork check left to the integrating control plane: no checkpoint history here", "history", inst.HistoryPath())
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	commitMetrics := node.NewCommitMetrics()
	commitCfg := store.CommitterConfig{Linger: *linger, Observe: commitMetrics.Observe}
	var recent *auditlog.RecentEntries
	if *integrate {
		// The integrator hashes the signature events this node commits from
		// memory instead of reading them back.
		recent = auditlog.NewRecentEntries(0)
		commitCfg.Committed = recent.AddCommitted
	}
	committer := store.NewCommitter(runCtx, inst.Store, commitCfg)
	integrated := make(chan error, 1)
	var integrator *auditlog.Integrator
	if *integrate {
		signer, err := inst.NoteSigner(ctx)
		if err != nil {
			return err
		}
		integrator, err = auditlog.NewIntegrator(inst.Store, auditlog.Config{Signer: signer, HistoryPath: inst.HistoryPath(), Recent: recent, Logger: logger})
		if err != nil {
			return err
		}
		go func() { integrated <- integrator.Run(runCtx) }()
	}

	if *flagsPath != "" {
		// The signing path does not evaluate flags yet (internal/node takes
		// no flag set): the file is validated, watched and logged, so a
		// release never starts on a broken flag file.
		set, err := flags.New(ctx, flags.Config{Path: *flagsPath, Logger: logger})
		if err != nil {
			return fmt.Errorf("--flags: %w", err)
		}
		defer set.Close(context.WithoutCancel(ctx))
		_, sum := set.Snapshot()
		logger.Info("flags loaded", slog.String("file", *flagsPath), slog.String("sha256", sum),
			slog.String(flags.CMSDigest, set.String(ctx, flags.CMSDigest, "sha256", flags.EvalContext{})),
			slog.Bool(flags.NewSigningPath, set.Bool(ctx, flags.NewSigningPath, false, flags.EvalContext{})))
		go set.Watch(runCtx)
	}

	q, err := qf.open(ctx, *data, logger)
	if err != nil {
		return err
	}
	var durability node.Durability
	if dr, ok := inst.Store.(store.DurabilityReporter); ok {
		if durability.Backend, durability.Setting, err = dr.Durability(ctx); err != nil {
			return err
		}
		if durability.Backend == "sqlite" && durability.Setting != store.SyncFull {
			logger.Warn("store durability: SQLite synchronous is not FULL: a committed signature survives a crash of this process but not a power loss",
				slog.String("synchronous", durability.Setting))
		}
	}
	ncfg := node.Config{
		Store: inst.Store, Committer: committer, Keys: inst.Keys,
		Release: *release, Instance: *instance, MaxDocumentBytes: *maxDoc,
		Faults: faults, CrashPoint: crash, Logger: logger, Durability: durability, CommitMetrics: commitMetrics,
		Extra: map[string]http.Handler{auditlog.PathPrefix: auditlog.Handler(inst.Store, logger)},
	}
	if q != nil {
		defer q.Close()
		ncfg.Jobs, ncfg.Queue = inst.Store, q
	}
	srv, err := node.New(ncfg)
	if err != nil {
		return err
	}
	stopWorker, err := qf.startWorker(runCtx, srv, q, logger)
	if err != nil {
		return err
	}
	defer stopWorker()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	logger.Info("countersign node serving", slog.String("addr", ln.Addr().String()), slog.String("data", *data), slog.Int("pid", os.Getpid()),
		slog.String("store_backend", durability.Backend), slog.String("store_durability", durability.Setting))
	fmt.Fprintf(env.stdout, "countersign node listening on http://%s (release %s)\n", ln.Addr(), *release)

	select {
	case err := <-served:
		return err
	case err := <-integrated:
		// A fork detected while running: stop taking writes at once.
		hs.Close()
		return fmt.Errorf("audit log integration stopped: %w", err)
	case <-ctx.Done():
	}
	// Drain: stop accepting, let in-flight requests finish (their commits
	// included), then flush the committer and sign a last checkpoint.
	logger.Info("draining: no new requests, finishing in-flight ones")
	shCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownErr := hs.Shutdown(shCtx)
	stopWorker()
	closeErr := committer.Close()
	if integrator != nil {
		if _, err := integrator.IntegrateOnce(shCtx); err != nil && !errors.Is(err, auditlog.ErrNoCheckpoint) {
			logger.Error("final audit integration failed", slog.Any("err", err))
		}
	}
	cancelRun()
	logger.Info("stopped")
	return errors.Join(shutdownErr, closeErr)
}

// defaultGCPercent is the node's GC target. The signing path allocates a
// few kilobytes per request over a small live heap, so at Go's default of
// 100 the collector runs hundreds of times a second and took 11-20 % of
// the node's CPU under load; at 400 it runs a quarter as often and takes
// 4-7 %, for a larger peak RSS (151 -> 257 MB in the c=64 benchmark;
// docs/benchmarks.md).
const defaultGCPercent = 400

func envOr(env *cliEnv, name, def string) string {
	if v := env.getenv(name); v != "" {
		return v
	}
	return def
}
