package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/db"
)

// actorGatewayRestart is the actor of the gate a restarted gateway restores.
const actorGatewayRestart = "gateway-restart"

func init() {
	register("gateway", "run the gateway on its own: weighted pools, maintenance gate, admin API (the in-cluster edge)", runGateway)
}

// poolsFlag collects repeated --pool NAME=URL[,URL...].
type poolsFlag map[string][]string

func (p poolsFlag) String() string { return fmt.Sprint(map[string][]string(p)) }

func (p poolsFlag) Set(s string) error {
	name, list, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=URL[,URL...], got %q", s)
	}
	if _, dup := p[name]; dup {
		return fmt.Errorf("pool %q given twice", name)
	}
	urls := []string{}
	if list != "" {
		urls = strings.Split(list, ",")
	}
	p[name] = urls
	return nil
}

// parseWeights reads "stable=100,canary=0".
func parseWeights(s string) (map[string]int, error) {
	out := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || name == "" || err != nil {
			return nil, fmt.Errorf("want NAME=PERCENT[,NAME=PERCENT...], got %q", s)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("pool %q weighted twice in %q", name, s)
		}
		out[name] = n
	}
	return out, nil
}

func runGateway(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "gateway", "--store URL --admin-token-file FILE --pool NAME=URL[,URL...] [flags]")
	listen := fs.String("listen", "127.0.0.1:7400", "data-plane address (the signing API, proxied to the pools)")
	adminListen := fs.String("admin-listen", "127.0.0.1:7401", "admin API address (weights, gate, pools; /healthz and /readyz need no token)")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin API bearer token, at least 16 characters (required)")
	pools := poolsFlag{}
	fs.Var(pools, "pool", "pool and its backend URLs, NAME=URL[,URL...] (repeatable; NAME= makes an empty pool)")
	weightsArg := fs.String("weights", "stable=100,canary=0", "weights, percent, used until the store holds recorded ones")
	storeURL := fs.String("store", "", "store URL where changes are recorded and routing is kept: postgres://... or sqlite:FILE (required)")
	migrate := fs.Bool("migrate", false, "apply pending store migrations before serving")
	healthEvery := fs.Duration("health-interval", gateway.DefaultHealthInterval, "period of the backends' readiness checks")
	release := fs.String("release", envOr(env, "COUNTERSIGN_RELEASE", "gateway"), "release recorded with every change (env COUNTERSIGN_RELEASE)")
	instance := fs.String("instance", env.getenv("COUNTERSIGN_INSTANCE"), "instance recorded with every change (default gateway-host-pid; env COUNTERSIGN_INSTANCE)")
	logLevel := fs.String("log-level", "info", "debug | info | warn | error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError("gateway takes no arguments, got %q", fs.Args())
	case *storeURL == "":
		return usageError("--store is required: changes are recorded there before they take effect")
	case *tokenFile == "":
		return usageError("--admin-token-file is required")
	case len(pools) == 0:
		return usageError("give at least one --pool NAME=URL[,URL...]")
	case *healthEvery <= 0:
		return usageError("--health-interval must be positive")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError("--log-level: %v", err)
	}
	weights, err := parseWeights(*weightsArg)
	if err != nil {
		return usageError("--weights: %v", err)
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	if *instance == "" {
		host, _ := os.Hostname()
		*instance = fmt.Sprintf("gateway-%s-%d", host, os.Getpid())
	}
	logger := slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: lvl}))

	st, err := db.Open(ctx, *storeURL, store.Options{Migrate: *migrate, Logger: logger})
	if err != nil {
		return err
	}
	defer st.Close()
	gw, restored, err := startGateway(ctx, st, pools, weights, *release, *instance, *healthEvery, logger)
	if err != nil {
		return err
	}
	admin, err := gateway.NewAdmin(gw, strings.TrimSpace(string(token)))
	if err != nil {
		return usageError("--admin-token-file %s: %v", *tokenFile, err)
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	health := make(chan error, 1)
	go func() { health <- gw.Run(runCtx) }()

	var draining atomic.Bool
	dataLn, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", *adminListen)
	if err != nil {
		dataLn.Close()
		return err
	}
	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	dataSrv := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	adminSrv := &http.Server{Handler: probes(admin, &draining), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	served := make(chan error, 2)
	go func() { served <- dataSrv.Serve(dataLn) }()
	go func() { served <- adminSrv.Serve(adminLn) }()

	state := gw.State()
	w := map[string]int{}
	for _, p := range state.Pools {
		w[p.Name] = p.Weight
	}
	logger.Info("countersign gateway serving", slog.String("addr", dataLn.Addr().String()), slog.String("admin", adminLn.Addr().String()),
		slog.Any("weights", w), slog.Bool("gate", state.Gate.On), slog.String("store", db.Redact(*storeURL)), slog.Int("pid", os.Getpid()))
	fmt.Fprintf(env.stdout, "countersign gateway listening on http://%s (admin http://%s)\n", dataLn.Addr(), adminLn.Addr())
	fmt.Fprintf(env.stdout, "  weights %s%s\n", fmtPoolWeights(w), restored)
	if state.Gate.On {
		fmt.Fprintf(env.stdout, "  maintenance gate ON (Retry-After %d s): %s\n", state.Gate.RetryAfter, state.Gate.Reason)
	}

	var runErr error
	select {
	case runErr = <-served:
	case runErr = <-health:
	case <-ctx.Done():
	}
	// Drain: say not ready, stop accepting, let in-flight requests finish.
	draining.Store(true)
	logger.Info("draining: no new requests, finishing in-flight ones")
	shCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownErr := errors.Join(dataSrv.Shutdown(shCtx), adminSrv.Shutdown(shCtx))
	cancelRun()
	fmt.Fprintln(env.stdout, "countersign gateway stopped")
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return errors.Join(runErr, shutdownErr)
	}
	return shutdownErr
}

// startGateway builds the gateway with the routing recorded in st (a
// restarted gateway keeps its weights and its gate) and runs one health
// pass, so backends are in rotation before the first request. restored
// says, for printing, where the weights came from.
func startGateway(ctx context.Context, st store.Store, pools map[string][]string, weights map[string]int,
	release, instance string, healthEvery time.Duration, logger *slog.Logger) (*gateway.Gateway, string, error) {
	recWeights, recGate, err := control.LoadRouting(ctx, st)
	if err != nil {
		return nil, "", fmt.Errorf("read the routing recorded in the store: %w", err)
	}
	restored := " (from --weights)"
	if recWeights != nil {
		weights, restored = recWeights, " (restored from the store)"
	}
	gw, err := gateway.New(gateway.Config{Pools: pools, Weights: weights, Recorder: control.NewRecorder(st, release, instance, nil),
		HealthInterval: healthEvery, Logger: logger})
	switch {
	case err != nil && recWeights != nil:
		// Routing other than what was recorded would undo a containment
		// (a zeroed canary): refuse, and say what to do.
		return nil, "", fmt.Errorf("the weights recorded in the store (%s) do not fit the --pool flags: %w; give the recorded pools, or set weights through the admin API of a gateway that has them",
			fmtPoolWeights(recWeights), err)
	case err != nil:
		return nil, "", usageError("%v", err)
	}
	if recGate != nil && recGate.On {
		if _, err := gw.SetGate(gateway.WithActor(ctx, actorGatewayRestart), *recGate); err != nil {
			return nil, "", fmt.Errorf("restore the maintenance gate: %w", err)
		}
	}
	gw.CheckHealth(ctx)
	return gw, restored, nil
}

// probes serves the kubelet's probes on the admin listener without a
// token (they reveal nothing) and everything else through the admin API.
// /readyz turns 503 once the gateway drains.
func probes(admin http.Handler, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/", admin)
	return mux
}

func fmtPoolWeights(w map[string]int) string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", p, w[p]))
	}
	return strings.Join(parts, ",")
}
