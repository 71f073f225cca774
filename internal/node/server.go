package node

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/auth"
	"github.com/countersign/countersign/internal/store"
)

// DefaultMaxDocumentBytes bounds a sign or verify request body.
const DefaultMaxDocumentBytes = 16 << 20

// Committer commits a signature and its audit event (typically the store's
// group committer, which batches concurrent writes into one transaction).
type Committer interface {
	Commit(ctx context.Context, w store.SignatureWrite) (store.WriteResult, error)
}

// KeyMaterial opens signers and verification material for stored key
// versions (keys.Manager).
type KeyMaterial interface {
	SignerFor(ctx context.Context, kv store.KeyVersion) (crypto.Signer, error)
	VerifyMaterial(kv store.KeyVersion) (crypto.PublicKey, []*x509.Certificate, error)
}

// Store is what the node reads from the store directly.
type Store interface {
	auth.TokenStore
	Ping(ctx context.Context) error
	KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error)
	ListKeys(ctx context.Context, tenantID string) ([]store.KeyVersion, error)
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	Store     Store
	Committer Committer
	Keys      KeyMaterial

	// Release and Instance stamp every signature. Instance defaults to
	// "<hostname>-<pid>".
	Release  string
	Instance string

	// MaxDocumentBytes bounds request bodies (default DefaultMaxDocumentBytes).
	MaxDocumentBytes int64
	// KeyCacheTTL bounds how long a key state change (disable, rotate) may
	// take to reach this node (default 2s).
	KeyCacheTTL time.Duration

	// Ready, when set, is an extra readiness check (e.g. key provider health).
	Ready func(ctx context.Context) error
	// Faults injects drill faults; nil outside drills.
	Faults *Faults
	// Jobs and Queue enable asynchronous signing (POST /v1/sign:async,
	// GET /v1/jobs/{id}); without them those routes answer 404.
	Jobs  JobStore
	Queue Publisher
	// CrashPoint, armed only in drill mode, SIGKILLs the process at one of
	// the asynchronous path's crash points.
	CrashPoint *CrashPoint
	// Extra handlers mounted on the same mux (e.g. the audit log read API
	// under /v1/audit/). Keys are mux patterns.
	Extra map[string]http.Handler
	// Durability is what a commit survives, as the store reports it
	// (store.DurabilityReporter); it is exported on /metrics as
	// countersign_store_durability_info so benchmarks say what they
	// measured. Zero when unknown.
	Durability Durability
	// CommitMetrics, when set, are exported on /metrics; the caller
	// feeds them from the Committer (NewCommitMetrics).
	CommitMetrics *CommitMetrics

	Logger *slog.Logger
	Now    func() time.Time
}

// Durability is a store's backend and its durability setting, e.g.
// {"sqlite", "FULL"} or {"postgres", "on"}.
type Durability struct{ Backend, Setting string }

// Server is the signing HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	auth    *auth.Verifier
	keys    *keyCache
	flights flights
	metrics *metrics
	mux     *http.ServeMux

	hdrRelease, hdrInstance []string // header values, allocated once
}

// New validates cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Committer == nil || cfg.Keys == nil {
		return nil, errors.New("node: Config needs Store, Committer and Keys")
	}
	if cfg.Release == "" {
		return nil, errors.New("node: Config.Release is required (it stamps every signature)")
	}
	if cfg.Instance == "" {
		h, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if cfg.MaxDocumentBytes <= 0 {
		cfg.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if cfg.KeyCacheTTL <= 0 {
		cfg.KeyCacheTTL = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jobs != nil {
		cfg.Committer = &jobCommitter{inner: cfg.Committer, jobs: cfg.Jobs, crash: cfg.CrashPoint}
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With(slog.String("release", cfg.Release), slog.String("instance", cfg.Instance)),
		now:     cfg.Now,
		auth:    auth.NewVerifier(cfg.Store, 0, cfg.Now),
		keys:    newKeyCache(cfg.Store, cfg.Keys, cfg.KeyCacheTTL, cfg.Now),
		metrics: newMetrics(),
		mux:     http.NewServeMux(),
	}
	s.flights.m = make(map[string]*flight)
	s.hdrRelease, s.hdrInstance = []string{cfg.Release}, []string{cfg.Instance}
	s.metrics.watchCommitter(cfg.Committer)
	if cfg.CommitMetrics != nil {
		s.metrics.reg.MustRegister(cfg.CommitMetrics.size, cfg.CommitMetrics.dur)
	}
	if cfg.Durability.Backend != "" {
		s.metrics.durability(cfg.Durability)
	}
	if cfg.Faults != nil {
		s.log.Warn("DRILL FAULTS ENABLED: this node misbehaves on purpose", slog.String("scenario", cfg.Faults.Scenario))
	}
	if cfg.CrashPoint != nil {
		s.log.Warn("DRILL CRASH POINT ARMED: this node will SIGKILL itself", slog.String("crash_point", cfg.CrashPoint.String()))
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	s.mux.Handle("POST /v1/sign", s.authed("sign", s.handleSign))
	s.mux.Handle("POST /v1/sign:batch", s.authed("sign_batch", s.handleSignBatch))
	s.mux.Handle("POST /v1/sign:async", s.authed("sign_async", s.handleSignAsync))
	s.mux.Handle("GET /v1/jobs/{id}", s.authed("jobs_get", s.handleGetJob))
	s.mux.Handle("POST /v1/verify", s.authed("verify", s.handleVerify))
	s.mux.Handle("GET /v1/keys", s.authed("keys_list", s.handleListKeys))
	s.mux.Handle("GET /v1/keys/{name}", s.authed("keys_get", s.handleGetKey))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.Handle("GET /metrics", s.metrics.handler())
	for pattern, h := range s.cfg.Extra {
		s.mux.Handle(pattern, h)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, problem(http.StatusNotFound, api.TypeNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path))
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["X-Countersign-Release"] = s.hdrRelease // see hdrJSON
	h["X-Countersign-Instance"] = s.hdrInstance
	s.mux.ServeHTTP(w, r)
}

type tenantKey struct{}

// authed wraps a handler with bearer-token authentication and metrics.
func (s *Server) authed(route string, h func(w http.ResponseWriter, r *http.Request, tenant string) error) http.Handler {
	obs := s.metrics.route(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		err := s.authAndServe(rec, r, h)
		if err != nil {
			s.writeError(rec, r, err)
		}
		obs.observe(rec.status, time.Since(start))
	})
}

func (s *Server) authAndServe(w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, string) error) error {
	tok, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="countersign"`)
		return problem(http.StatusUnauthorized, api.TypeUnauthorized, "missing bearer token")
	}
	tenant, err := s.auth.Verify(r.Context(), tok)
	if errors.Is(err, auth.ErrInvalid) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="countersign", error="invalid_token"`)
		return problem(http.StatusUnauthorized, api.TypeUnauthorized, "invalid or revoked token")
	}
	if err != nil {
		return unavailable("cannot check credentials right now", 1, err)
	}
	return h(w, r, tenant)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !equalFoldASCII(h[:len(p)], p) {
		return "", false
	}
	return h[len(p):], true
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		s.writeError(w, r, unavailable("store unreachable", 1, err))
		return
	}
	// A committer that can no longer make commits durable (a failed
	// fsync: store.ErrNotDurable) fails every write until the process
	// restarts; say so, so the gateway or Kubernetes takes it out.
	if ce, ok := s.cfg.Committer.(interface{ Err() error }); ok {
		if err := ce.Err(); err != nil {
			s.writeError(w, r, unavailable("not ready: "+err.Error(), 1, err))
			return
		}
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(ctx); err != nil {
			s.writeError(w, r, unavailable("not ready: "+err.Error(), 1, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}
