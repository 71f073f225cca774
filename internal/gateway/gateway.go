package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/api"
)

// Rand is the random source that splits traffic by weight. *math/rand/v2.Rand
// satisfies it; the gateway serializes calls, so it need not be safe for
// concurrent use.
type Rand interface {
	IntN(n int) int
}

// Recorder receives every change before it takes effect, so the caller can
// make it an audit event. If Record returns an error, the change is refused.
type Recorder interface {
	Record(ctx context.Context, typ, subject string, details map[string]any) error
}

// Event types given to the Recorder.
const (
	EventWeights = "gateway.weights.set"
	EventGate    = "gateway.gate.set"
	EventPool    = "gateway.pool.set"
)

// Defaults for Config fields left zero.
const (
	DefaultRetryAfter     = 30 // seconds
	DefaultHealthInterval = time.Second
	DefaultHealthTimeout  = 500 * time.Millisecond
	DefaultHealthPath     = "/readyz"
)

// Config configures a Gateway.
type Config struct {
	// Pools are the initial pools and their backend URLs. Backends start
	// unhealthy until the first health pass (Run or CheckHealth).
	Pools map[string][]string
	// Weights are the initial weights, percent, summing to 100.
	Weights map[string]int
	// Recorder receives every change before it takes effect. Required.
	Recorder Recorder
	// Rand splits traffic; default math/rand/v2's global source.
	Rand Rand
	// Now is the clock; default time.Now.
	Now func() time.Time
	// HealthInterval is the period of Run's health passes (default 1 s);
	// HealthTimeout bounds one check (default 500 ms); HealthPath is the
	// readiness path probed on each backend (default /readyz).
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthPath     string
	// DefaultRetryAfter is used when the gate is turned on without one
	// (seconds, default 30).
	DefaultRetryAfter int
	// Transport carries proxied requests and health checks; default a
	// clone of http.DefaultTransport.
	Transport http.RoundTripper
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Gateway is the weighted, health-aware, gated reverse proxy. It is an
// http.Handler for the data plane; Admin serves its control API.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	proxy  *httputil.ReverseProxy
	health *http.Client

	mu      sync.Mutex // serializes changes; guards pools, weights, gate
	pools   map[string]*pool
	weights map[string]int
	gate    Gate
	route   atomicRoute // immutable routing snapshot read by the request path

	randMu sync.Mutex
	rand   Rand

	// buffered is the bytes of request bodies kept for a resend now
	// (bufferReplayable), bounded by maxReplayBytes.
	buffered atomic.Int64

	counters
}

// New builds a gateway. It does no I/O: call Run (or CheckHealth) to bring
// backends into rotation.
func New(cfg Config) (*Gateway, error) {
	if cfg.Recorder == nil {
		return nil, fmt.Errorf("%w: a Recorder is required", ErrInvalid)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = DefaultHealthTimeout
	}
	if cfg.HealthPath == "" {
		cfg.HealthPath = DefaultHealthPath
	}
	if cfg.DefaultRetryAfter <= 0 {
		cfg.DefaultRetryAfter = DefaultRetryAfter
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, pools: map[string]*pool{}, weights: map[string]int{}, rand: cfg.Rand}
	if g.rand == nil {
		g.rand = globalRand{}
	}
	g.health = &http.Client{Transport: cfg.Transport, Timeout: cfg.HealthTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, name := range slices.Sorted(maps.Keys(cfg.Pools)) {
		if err := validPoolName(name); err != nil {
			return nil, err
		}
		p := newPool(name)
		bs, _, err := parseBackends(cfg.Pools[name], nil)
		if err != nil {
			return nil, err
		}
		p.backends.Store(&bs)
		g.pools[name] = p
	}
	if len(cfg.Weights) > 0 {
		w, err := g.checkWeightsLocked(cfg.Weights)
		if err != nil {
			return nil, err
		}
		g.weights = w
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			at := pr.In.Context().Value(attemptKey{}).(*attempt)
			pr.SetURL(at.backend.url)
			pr.SetXForwarded()
		},
		Transport:    cfg.Transport,
		ErrorHandler: g.proxyError,
	}
	g.rebuildRouteLocked()
	return g, nil
}

type globalRand struct{}

func (globalRand) IntN(n int) int { return mrand.IntN(n) }

type attemptKey struct{}

// ServeHTTP routes one data-plane request: the gate first, then a pool by
// weight, then a healthy backend of that pool. A request the backend could
// not be sent or answer (its process died, a pooled connection to it was
// stale) is sent once more to another backend when that is safe: see
// replayable.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := g.route.Load()
	if rt.gate.refuses(r) {
		g.gated.Add(1)
		writeRetryProblem(w, http.StatusServiceUnavailable, api.TypeMaintenance, rt.gate.Reason, rt.gate.RetryAfter)
		return
	}
	p, b := g.choose(rt, nil)
	if b == nil {
		g.unroutable.Add(1)
		writeRetryProblem(w, http.StatusServiceUnavailable, api.TypeUnavailable, "no healthy backend can take this request", 1)
		return
	}
	body, replay, release := g.bufferReplayable(r)
	defer release()
	for try := 0; ; try++ {
		err := g.forward(w, r, p, b, body, replay)
		if err == nil {
			return
		}
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			return // the client went away; nobody is left to answer
		}
		if rt = g.route.Load(); replay && try == 0 && !rt.gate.refuses(r) {
			// Any other backend, the failed one excluded; choose re-reads
			// the weights and health, which the failure may have changed.
			// A gate closed meanwhile stops the resend (no write reaches a
			// pool while it is on), and the answer stays 502: the failed
			// backend may have committed the request, so it is not
			// "refused before acceptance".
			if p2, b2 := g.choose(rt, b); b2 != nil {
				g.retried.Add(1)
				g.log.InfoContext(r.Context(), "gateway: backend failed before answering; sending the request to another backend",
					"backend", b.raw, "next", b2.raw, "err", err)
				p, b = p2, b2
				continue
			}
		}
		writeRetryProblem(w, http.StatusBadGateway, api.TypeUnavailable, "the backend could not be reached", 0)
		return
	}
}

// attempt carries the transport error of one forwarding attempt from the
// proxy's ErrorHandler back to ServeHTTP.
type attempt struct {
	backend *backend
	err     error
}

// forward sends r to b and returns the error that kept the backend from
// answering, with nothing written to w; nil once an answer was relayed.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, p *pool, b *backend, body []byte, replay bool) error {
	p.inFlight.Add(1)
	b.inFlight.Add(1)
	p.forwarded.Add(1)
	b.forwarded.Add(1)
	p.lastForward.Store(g.cfg.Now().UnixNano())
	defer func() {
		b.inFlight.Add(-1)
		p.inFlight.Add(-1)
	}()
	at := &attempt{backend: b}
	out := r.WithContext(context.WithValue(r.Context(), attemptKey{}, at))
	if replay {
		// A fresh reader per attempt; GetBody also lets the transport
		// resend on a new connection when a pooled one turns out dead.
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	}
	g.proxy.ServeHTTP(w, out)
	if at.err == nil {
		b.failedRun.Store(0)
	}
	return at.err
}

// ejectAfter is how many forwarded requests in a row a backend may leave
// unanswered (connection dropped or reset, no response) before the gateway
// takes it out of rotation without waiting for its health check, which such
// a backend may keep passing. The next passing health check puts it back;
// if it still drops requests, the first one takes it out again.
const ejectAfter = 3

// Bodies the gateway keeps in memory to be able to resend a request:
// each at most maxReplayBody, all together at most maxReplayBytes. A body
// over either bound, or of unknown length, is streamed and never resent.
const (
	maxReplayBody  = 8 << 20
	maxReplayBytes = 64 << 20
)

// replayable reports whether sending r twice cannot do anything twice:
// reads, and the node's writes, which carry their own idempotency keys —
// the Idempotency-Key header of a sign request or an async job, or one key
// per item of a batch (an item without a key is refused, never signed). The
// backends share the store, which answers a repeated key with the first
// result, so a request the failed backend did commit is answered, not
// signed again. Writes to any other path are never resent, key or not.
func replayable(r *http.Request) bool {
	if isRead(r) {
		return true
	}
	if r.Method != http.MethodPost {
		return false
	}
	switch r.URL.Path {
	case "/v1/sign", "/v1/sign:async":
		return r.Header.Get("Idempotency-Key") != ""
	case "/v1/sign:batch":
		return true
	}
	return false
}

// bufferReplayable reads the body of a replayable request into memory and
// says whether the request may be resent; release returns the body's share
// of maxReplayBytes. A body that cannot be read whole is left for the proxy
// to stream (what was read is put back in front of the rest).
func (g *Gateway) bufferReplayable(r *http.Request) (body []byte, replay bool, release func()) {
	release = func() {}
	if !replayable(r) {
		return nil, false, release
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true, release
	}
	n := r.ContentLength
	if n < 0 || n > maxReplayBody {
		return nil, false, release
	}
	if g.buffered.Add(n) > maxReplayBytes {
		g.buffered.Add(-n)
		return nil, false, release
	}
	release = func() { g.buffered.Add(-n) }
	buf := make([]byte, n)
	if k, err := io.ReadFull(r.Body, buf); err != nil {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf[:k]), r.Body), r.Body}
		return nil, false, release
	}
	return buf, true, release
}

type readCloser struct {
	io.Reader
	io.Closer
}

// refuses reports whether the gate answers r itself: it is on, and r is a
// write or reads are blocked too.
func (gt Gate) refuses(r *http.Request) bool {
	return gt.On && (gt.BlockReads || !isRead(r))
}

// isRead reports whether a request cannot accept work: safe methods, and
// POST /v1/verify, which checks a signature and stores nothing.
func isRead(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	case http.MethodPost:
		return r.URL.Path == "/v1/verify"
	}
	return false
}

// choose picks a pool by effective weight and a healthy backend in it,
// never avoid (nil: any). A pool with no healthy backend has effective
// weight 0; its share goes to the others in proportion to their weights.
func (g *Gateway) choose(rt *route, avoid *backend) (*pool, *backend) {
	var eff [8]int
	effs := eff[:0]
	total := 0
	for _, e := range rt.pools {
		w := 0
		if e.weight > 0 && e.pool.healthy(avoid) {
			w = e.weight
		}
		effs = append(effs, w)
		total += w
	}
	if total == 0 {
		return nil, nil
	}
	g.randMu.Lock()
	n := g.rand.IntN(total)
	g.randMu.Unlock()
	for i, e := range rt.pools {
		if n < effs[i] {
			if b := e.pool.pick(avoid); b != nil {
				return e.pool, b
			}
			break // lost its last healthy backend since the weights were read
		}
		n -= effs[i]
	}
	// Rare race with a health change: take any pool that can serve.
	for _, e := range rt.pools {
		if e.weight > 0 {
			if b := e.pool.pick(avoid); b != nil {
				return e.pool, b
			}
		}
	}
	return nil, nil
}

// proxyError is the proxy's ErrorHandler: the backend could not be sent
// the request or did not answer, and nothing has been written to the
// client. It takes a backend that refused the connection, or left
// ejectAfter requests in a row unanswered, out of rotation and hands the
// error to ServeHTTP, which answers (or tries another backend).
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	g.proxyErrs.Add(1)
	at, _ := r.Context().Value(attemptKey{}).(*attempt)
	if at == nil {
		writeRetryProblem(w, http.StatusBadGateway, api.TypeUnavailable, "the backend could not be reached", 0)
		return
	}
	at.err = err
	b := at.backend
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away: not the backend's failure
	}
	b.failed.Add(1)
	run := b.failedRun.Add(1)
	switch {
	case isDialError(err):
		if b.setHealth(false, g.cfg.Now(), err.Error()) {
			g.log.WarnContext(r.Context(), "gateway: backend refused connection, out of rotation", "backend", b.raw, "err", err)
		}
	case run >= ejectAfter:
		if b.setHealth(false, g.cfg.Now(), fmt.Sprintf("%d forwarded requests in a row unanswered; last: %v", run, err)) {
			g.log.WarnContext(r.Context(), "gateway: backend leaves requests unanswered, out of rotation until its next passing health check",
				"backend", b.raw, "in_a_row", run, "err", err)
		}
	}
}

func writeRetryProblem(w http.ResponseWriter, status int, typ, detail string, retryAfter int) {
	p := api.NewProblem(status, typ, detail)
	if retryAfter > 0 {
		p.RetryAfter = retryAfter
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeProblem(w, p)
}

func writeProblem(w http.ResponseWriter, p *api.Problem) {
	w.Header().Set("Content-Type", api.ContentTypeProblem)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
