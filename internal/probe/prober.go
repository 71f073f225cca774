package probe

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/fleet"
)

// Target is one pool as the fleet describes it.
type Target struct {
	// Release is what the fleet says runs in the pool; every answer must
	// carry it in X-Countersign-Release. "" skips that check (e.g. while a
	// rolling update mixes releases behind one endpoint).
	Release string
	// Endpoints are the base URLs of the pool's replicas.
	Endpoints []string
}

// Targets returns the pools to probe, keyed by pool name. It is called at
// every round, so the probe follows deploys, scale-downs and rollbacks.
type Targets func(ctx context.Context) (map[string]Target, error)

// StaticTargets always returns ts.
func StaticTargets(ts map[string]Target) Targets {
	return func(context.Context) (map[string]Target, error) { return ts, nil }
}

// EndpointTargets adapts a callback that knows endpoints but not releases
// (no release check).
func EndpointTargets(f func(ctx context.Context) map[string][]string) Targets {
	return func(ctx context.Context) (map[string]Target, error) {
		out := map[string]Target{}
		for pool, eps := range f(ctx) {
			out[pool] = Target{Endpoints: eps}
		}
		return out, nil
	}
}

// FleetStatus is the part of fleet.Fleet the probe needs.
type FleetStatus interface {
	Status(ctx context.Context) ([]fleet.PoolStatus, error)
}

// FleetTargets probes every pool of f at its ready endpoints, expecting the
// pool's current release.
func FleetTargets(f FleetStatus) Targets {
	return func(ctx context.Context) (map[string]Target, error) {
		st, err := f.Status(ctx)
		if err != nil {
			return nil, err
		}
		out := make(map[string]Target, len(st))
		for _, ps := range st {
			out[ps.Pool] = Target{Release: ps.Release.ID, Endpoints: slices.Clone(ps.Endpoints)}
		}
		return out, nil
	}
}

// Config configures a Prober. Zero fields take the documented defaults.
type Config struct {
	Targets Targets // required
	Policy  *Policy // required: the keys probed and what they must look like
	// Trust is the pinned out-of-band trust set (required).
	Trust *TrustSet
	// Token authenticates the probe's sign requests.
	Token string
	// Tenant is the tenant of Token, as the TrustSet names it ("" if the
	// trust set was built for the probe's tenant with tenant "").
	Tenant string
	// Interval between rounds (Run). Default 250 ms.
	Interval time.Duration
	// Timeout of one request. Default 1 s.
	Timeout time.Duration
	// KeyCheckEvery: every this many rounds, each endpoint's
	// GET /v1/keys/{name} is compared with the trust set. Default 4;
	// negative disables.
	KeyCheckEvery int
	// DocumentSize is the size of the random probe document. Default 64.
	DocumentSize int
	// HTTPClient is used for every request (default: a dedicated one).
	HTTPClient *http.Client
	// Sink receives every finding as soon as it is known, e.g.
	// Detector.Observe. It may be called concurrently.
	Sink func(Finding)
	// Now is the clock stamping findings; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Prober defaults.
const (
	DefaultInterval      = 250 * time.Millisecond
	DefaultTimeout       = time.Second
	DefaultKeyCheckEvery = 4
	DefaultDocumentSize  = 64
)

// Prober signs through every pool and checks every answer independently.
type Prober struct {
	cfg Config
	hc  *http.Client

	mu          sync.Mutex
	checker     Checker
	round       uint64
	lastTargets map[string]Target
	clients     map[string]*client.Client
	busy        map[slot]bool
}

// slot is one recurring probe; at most one is in flight per slot, so a hung
// endpoint never piles up requests and never delays other pools.
type slot struct {
	pool, endpoint, key string
	format              api.Format // "" for the key check
}

// New validates cfg and returns a Prober.
func New(cfg Config) (*Prober, error) {
	if cfg.Targets == nil || cfg.Trust == nil {
		return nil, errors.New("probe: Targets and Trust are required")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	for _, kp := range cfg.Policy.Keys {
		if kp.Tenant != "" && kp.Tenant != cfg.Tenant {
			continue // an entry for passive checks of another tenant
		}
		if len(cfg.Trust.Versions(cfg.Tenant, kp.Key)) == 0 {
			return nil, fmt.Errorf("%w: key %q has no pinned version in the trust set", ErrPolicy, kp.Key)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.KeyCheckEvery == 0 {
		cfg.KeyCheckEvery = DefaultKeyCheckEvery
	}
	if cfg.DocumentSize <= 0 {
		cfg.DocumentSize = DefaultDocumentSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		hc = &http.Client{Transport: tr}
	}
	hcCopy := *hc
	base := hcCopy.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hcCopy.Transport = captureTransport{base}
	return &Prober{
		cfg: cfg, hc: &hcCopy,
		checker: Checker{Policy: cfg.Policy, Trust: cfg.Trust, Tenant: cfg.Tenant, Now: cfg.Now},
		clients: map[string]*client.Client{}, busy: map[slot]bool{},
	}, nil
}

// SetTrustSet re-pins the trust set, e.g. after a key rotation the control
// plane performed itself.
func (p *Prober) SetTrustSet(ts *TrustSet) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checker.Trust = ts
}

// Checker returns the checker the prober uses, for passive checks of real
// traffic with the same policy and trust set.
func (p *Prober) Checker() *Checker {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.checker
	return &c
}

// Run probes every Interval until ctx ends. A round does not wait for the
// previous one: each slot whose last probe is still in flight is skipped.
func (p *Prober) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		p.start(ctx, &wg)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Round runs one round and waits for it: every pool × endpoint × key ×
// format is signed and checked. It returns the findings (also given to the
// Sink), e.g. for the playbook's verify step.
func (p *Prober) Round(ctx context.Context) []Finding {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []Finding
	)
	for _, job := range p.plan(ctx) {
		wg.Go(func() {
			if f, ok := p.do(ctx, job); ok {
				mu.Lock()
				out = append(out, f)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Finding) int {
		return cmpFinding(a, b)
	})
	return out
}

func cmpFinding(a, b Finding) int {
	for _, c := range [][2]string{{a.Pool, b.Pool}, {a.Endpoint, b.Endpoint}, {a.Key, b.Key}, {string(a.Format), string(b.Format)}} {
		if c[0] != c[1] {
			if c[0] < c[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func (p *Prober) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, job := range p.plan(ctx) {
		wg.Go(func() { p.do(ctx, job) })
	}
}

type job struct {
	round  uint64
	slot   slot
	target Target
	policy KeyPolicy
}

// plan advances the round, refreshes targets and claims the free slots.
func (p *Prober) plan(ctx context.Context) []job {
	targets, err := p.cfg.Targets(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "probe: targets unavailable; probing the last known ones", "err", err)
		targets = p.lastTargets
	} else {
		p.lastTargets = targets
		p.pruneClientsLocked(targets)
	}
	p.round++
	keyCheck := p.cfg.KeyCheckEvery > 0 && (p.round-1)%uint64(p.cfg.KeyCheckEvery) == 0
	var jobs []job
	for _, pool := range slices.Sorted(maps.Keys(targets)) {
		t := targets[pool]
		for _, ep := range t.Endpoints {
			for _, kp := range p.cfg.Policy.Keys {
				if kp.Tenant != "" && kp.Tenant != p.cfg.Tenant {
					continue
				}
				formats := kp.FormatList()
				if keyCheck {
					formats = append(slices.Clone(formats), "")
				}
				for _, f := range formats {
					s := slot{pool, ep, kp.Key, f}
					if p.busy[s] {
						continue
					}
					p.busy[s] = true
					jobs = append(jobs, job{round: p.round, slot: s, target: t, policy: kp})
				}
			}
		}
	}
	return jobs
}

// pruneClientsLocked drops clients of endpoints no longer targeted.
// p.mu must be held.
func (p *Prober) pruneClientsLocked(targets map[string]Target) {
	live := map[string]bool{}
	for _, t := range targets {
		for _, ep := range t.Endpoints {
			live[ep] = true
		}
	}
	for ep := range p.clients {
		if !live[ep] {
			delete(p.clients, ep)
		}
	}
}

func (p *Prober) clientFor(ep string) (*client.Client, Checker, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[ep]; ok {
		return c, p.checker, nil
	}
	c, err := client.New(ep, p.cfg.Token, client.WithHTTPClient(p.hc), client.WithRetry(client.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		return nil, p.checker, err
	}
	p.clients[ep] = c
	return c, p.checker, nil
}

// do runs one job, releases its slot and reports the finding.
func (p *Prober) do(ctx context.Context, j job) (Finding, bool) {
	defer func() {
		p.mu.Lock()
		delete(p.busy, j.slot)
		p.mu.Unlock()
	}()
	var (
		f  Finding
		ok bool
	)
	if j.slot.format == "" {
		f, ok = p.checkKey(ctx, j)
	} else {
		f, ok = p.probe(ctx, j)
	}
	if !ok {
		return Finding{}, false
	}
	f.Round, f.Pool, f.Endpoint = j.round, j.slot.pool, j.slot.endpoint
	if f.Kind != KindOK {
		p.cfg.Logger.WarnContext(ctx, "probe: finding", "finding", f)
	}
	if p.cfg.Sink != nil {
		p.cfg.Sink(f)
	}
	return f, true
}

func (p *Prober) probe(ctx context.Context, j job) (Finding, bool) {
	base := Finding{Release: j.target.Release, Key: j.slot.key, Format: j.slot.format}
	c, checker, err := p.clientFor(j.slot.endpoint)
	if err != nil {
		return p.stamp(base, KindError, err.Error()), true
	}
	doc := make([]byte, p.cfg.DocumentSize)
	_, _ = rand.Read(doc) // crypto/rand.Read never fails
	idem := client.NewIdempotencyKey()
	rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	h := &answerHeaders{}
	rctx = context.WithValue(rctx, headersKey{}, h)
	began := time.Now()
	resp, err := c.Sign(rctx, api.SignRequest{Key: j.slot.key, Format: j.slot.format, Document: doc, DocumentID: "probe:" + idem},
		client.WithIdempotencyKey(idem))
	latency := time.Since(began)
	if ctx.Err() != nil {
		return Finding{}, false // shutting down: not evidence of anything
	}
	base.Latency = latency
	h.mu.Lock()
	release, instance := h.release, h.instance
	h.mu.Unlock()
	if release != "" {
		base.Release = release
	}
	base.Instance = instance
	if err != nil {
		kind, detail := classifyErr(err)
		return p.stamp(base, kind, detail), true
	}
	f := checker.CheckSignature(*resp, nil, doc)
	f.Latency, f.Instance = latency, instance
	if f.Release == "" {
		f.Release = base.Release
	}
	if f.Kind != KindOK {
		return f, true
	}
	if kind, detail := checkAnswer(j, *resp, release, instance); kind != KindOK {
		f.Kind, f.Detail = kind, detail
	}
	return f, true
}

// checkAnswer compares what the node says about itself and the request
// with what the probe asked and what the fleet says runs there.
func checkAnswer(j job, resp api.SignResponse, release, instance string) (Kind, string) {
	switch {
	case resp.Key != j.slot.key:
		return KindDrift, fmt.Sprintf("answered for key %q, asked %q", resp.Key, j.slot.key)
	case resp.Format != j.slot.format:
		return KindDrift, fmt.Sprintf("answered format %q, asked %q", resp.Format, j.slot.format)
	case release == "":
		return KindDrift, "answer has no X-Countersign-Release header"
	case resp.Release != release:
		return KindDrift, fmt.Sprintf("signature stamped release %q, header says %q", resp.Release, release)
	case j.target.Release != "" && release != j.target.Release:
		return KindDrift, fmt.Sprintf("release %q answered, fleet says %q runs here", release, j.target.Release)
	case instance != "" && resp.Instance != instance:
		return KindDrift, fmt.Sprintf("signature stamped instance %q, header says %q", resp.Instance, instance)
	}
	return KindOK, ""
}

// checkKey compares the key the endpoint serves with the pinned one. Only
// drift is reported: availability is judged from the sign probes.
func (p *Prober) checkKey(ctx context.Context, j job) (Finding, bool) {
	c, checker, err := p.clientFor(j.slot.endpoint)
	if err != nil {
		return Finding{}, false
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	h := &answerHeaders{}
	k, err := c.Key(context.WithValue(rctx, headersKey{}, h), j.slot.key)
	if err != nil {
		p.cfg.Logger.DebugContext(ctx, "probe: key check failed", "endpoint", j.slot.endpoint, "key", j.slot.key, "err", err)
		return Finding{}, false
	}
	derr := checker.Trust.CheckServed(p.cfg.Tenant, *k)
	if derr == nil {
		return Finding{}, false
	}
	h.mu.Lock()
	release, instance := h.release, h.instance
	h.mu.Unlock()
	if release == "" {
		release = j.target.Release
	}
	f := Finding{Release: release, Instance: instance, Key: j.slot.key, Format: "", Detail: "served key: " + derr.Error()}
	var kd *KeyDriftError
	if errors.As(derr, &kd) {
		f.KeyVersion = kd.Version
	}
	return p.stamp(f, KindDrift, f.Detail), true
}

func (p *Prober) stamp(f Finding, k Kind, detail string) Finding {
	f.Time, f.Kind, f.Detail = p.cfg.Now(), k, detail
	return f
}

// classifyErr maps a client error to a kind.
func classifyErr(err error) (Kind, string) {
	var pr *api.Problem
	var ue *url.Error
	var ne net.Error
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &pr):
		d := fmt.Sprintf("%d %s", pr.Status, pr.Type)
		if pr.Detail != "" {
			d += ": " + pr.Detail
		}
		if pr.Status >= 500 || pr.Status == http.StatusTooManyRequests {
			return KindUnavailable, d
		}
		return KindError, d
	case errors.Is(err, context.DeadlineExceeded):
		return KindUnavailable, "timeout: " + err.Error()
	case errors.As(err, &se), errors.As(err, &te):
		return KindError, err.Error()
	case errors.As(err, &ue), errors.As(err, &ne):
		return KindUnavailable, err.Error()
	}
	return KindError, err.Error()
}

// headersKey carries an *answerHeaders through a request's context, so the
// transport can report the node's identity headers past the client.
type headersKey struct{}

type answerHeaders struct {
	mu                sync.Mutex
	release, instance string
}

type captureTransport struct{ base http.RoundTripper }

func (t captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err == nil {
		if h, ok := r.Context().Value(headersKey{}).(*answerHeaders); ok {
			h.mu.Lock()
			h.release, h.instance = resp.Header.Get("X-Countersign-Release"), resp.Header.Get("X-Countersign-Instance")
			h.mu.Unlock()
		}
	}
	return resp, err
}
