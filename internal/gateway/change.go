package gateway

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sync/atomic"
	"time"
)

// route is the immutable routing snapshot the request path reads.
type route struct {
	gate  Gate
	pools []routeEntry // sorted by name: the weight split is deterministic
}

type routeEntry struct {
	pool   *pool
	weight int
}

type atomicRoute struct{ atomic.Pointer[route] }

// counters are the gateway-wide monotonic counters.
type counters struct {
	gated      atomic.Uint64
	unroutable atomic.Uint64
	proxyErrs  atomic.Uint64
	retried    atomic.Uint64
}

// rebuildRouteLocked publishes a new routing snapshot. g.mu must be held.
func (g *Gateway) rebuildRouteLocked() {
	rt := &route{gate: g.gate}
	for _, name := range slices.Sorted(maps.Keys(g.pools)) {
		rt.pools = append(rt.pools, routeEntry{pool: g.pools[name], weight: g.weights[name]})
	}
	g.route.Store(rt)
}

type actorKey struct{}

// WithActor returns a context that names who makes a change; the actor is
// passed to the Recorder in the details ("actor").
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor set by WithActor, or "".
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// record hands a change to the Recorder. g.mu must be held, so the evidence
// order is the order in which changes take effect.
func (g *Gateway) recordLocked(ctx context.Context, typ, subject string, details map[string]any) error {
	if a := ActorFrom(ctx); a != "" {
		details["actor"] = a
	}
	if err := g.cfg.Recorder.Record(ctx, typ, subject, details); err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrNotRecorded, typ, subject, err)
	}
	return nil
}

// SetWeights replaces the pool weights. Every named pool must exist, each
// weight be in [0,100] and the sum be 100; pools not named get 0. The change
// is recorded before it takes effect.
func (g *Gateway) SetWeights(ctx context.Context, weights map[string]int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	w, err := g.checkWeightsLocked(weights)
	if err != nil {
		return err
	}
	if err := g.recordLocked(ctx, EventWeights, "gateway", map[string]any{"before": maps.Clone(g.weights), "after": maps.Clone(w)}); err != nil {
		return err
	}
	g.weights = w
	g.rebuildRouteLocked()
	g.log.InfoContext(ctx, "gateway: weights set", "weights", w, "actor", ActorFrom(ctx))
	return nil
}

func (g *Gateway) checkWeightsLocked(weights map[string]int) (map[string]int, error) {
	if err := ValidateWeights(func(name string) bool { _, ok := g.pools[name]; return ok }, weights); err != nil {
		return nil, err
	}
	return maps.Clone(weights), nil
}

// ValidateWeights checks pool weights as every router applies them: each
// named pool must exist (has), each weight be in [0,100] and the sum be
// 100. Names are checked in sorted order, so the error is the same for the
// same input.
func ValidateWeights(has func(pool string) bool, weights map[string]int) error {
	sum := 0
	for _, name := range slices.Sorted(maps.Keys(weights)) {
		w := weights[name]
		if !has(name) {
			return fmt.Errorf("%w %q in weights", ErrUnknownPool, name)
		}
		if w < 0 || w > 100 {
			return fmt.Errorf("%w: weight of %q is %d, want 0..100", ErrInvalid, name, w)
		}
		sum += w
	}
	if sum != 100 {
		return fmt.Errorf("%w: weights sum to %d, want 100", ErrInvalid, sum)
	}
	return nil
}

// SetGate opens or closes the maintenance gate. Turning it on without a
// RetryAfter uses Config.DefaultRetryAfter. The change is recorded before
// it takes effect; once SetGate returns nil, no later write request reaches
// a pool.
func (g *Gateway) SetGate(ctx context.Context, gate Gate) (Gate, error) {
	if gate.RetryAfter < 0 {
		return Gate{}, fmt.Errorf("%w: retry_after %d is negative", ErrInvalid, gate.RetryAfter)
	}
	if gate.On && gate.RetryAfter == 0 {
		gate.RetryAfter = g.cfg.DefaultRetryAfter
	}
	if !gate.On {
		gate = Gate{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gate.Since = g.cfg.Now().UTC()
	after := map[string]any{"on": gate.On, "retry_after": gate.RetryAfter, "reason": gate.Reason, "block_reads": gate.BlockReads}
	before := map[string]any{"on": g.gate.On, "retry_after": g.gate.RetryAfter, "reason": g.gate.Reason, "block_reads": g.gate.BlockReads}
	if err := g.recordLocked(ctx, EventGate, "gateway", map[string]any{"before": before, "after": after}); err != nil {
		return Gate{}, err
	}
	g.gate = gate
	g.rebuildRouteLocked()
	g.log.InfoContext(ctx, "gateway: maintenance gate set", "on", gate.On, "retry_after", gate.RetryAfter, "reason", gate.Reason, "actor", ActorFrom(ctx))
	return gate, nil
}

var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func validPoolName(name string) error {
	if !poolNameRE.MatchString(name) {
		return fmt.Errorf("%w: pool name %q must match %s", ErrInvalid, name, poolNameRE)
	}
	return nil
}

// SetPool creates the named pool or replaces its backends. Backends that
// stay keep their health and counters; new ones are probed at once (bounded
// by the health timeout) and take traffic only if they pass. A new pool has
// weight 0 until SetWeights gives it some. The change is recorded before it
// takes effect.
func (g *Gateway) SetPool(ctx context.Context, name string, backends []string) (PoolState, error) {
	if err := validPoolName(name); err != nil {
		return PoolState{}, err
	}
	g.mu.Lock()
	p, exists := g.pools[name]
	var current []*backend
	if exists {
		current = p.members()
	}
	bs, added, err := parseBackends(backends, current)
	g.mu.Unlock()
	if err != nil {
		return PoolState{}, err
	}
	// Probe new backends before taking the lock: health checks are I/O.
	g.probeAll(ctx, added)

	g.mu.Lock()
	defer g.mu.Unlock()
	p, exists = g.pools[name]
	before := []string{}
	if exists {
		before = urls(p.members())
		// Carry over anything that was added concurrently under the same URL.
		bs = keepCurrent(bs, p.members())
	}
	if err := g.recordLocked(ctx, EventPool, name, map[string]any{"before": before, "after": slices.Clone(backends)}); err != nil {
		return PoolState{}, err
	}
	if !exists {
		p = newPool(name)
		g.pools[name] = p
	}
	p.backends.Store(&bs)
	g.rebuildRouteLocked()
	g.log.InfoContext(ctx, "gateway: pool set", "pool", name, "backends", backends, "actor", ActorFrom(ctx))
	return g.poolStateLocked(p, 0), nil
}

// keepCurrent replaces entries of bs by the current backend with the same
// URL, so counters are never reset by a concurrent SetPool.
func keepCurrent(bs, current []*backend) []*backend {
	cur := make(map[string]*backend, len(current))
	for _, b := range current {
		cur[b.raw] = b
	}
	out := make([]*backend, len(bs))
	for i, b := range bs {
		if c, ok := cur[b.raw]; ok {
			b = c
		}
		out[i] = b
	}
	return out
}

func urls(bs []*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.raw
	}
	return out
}

// State returns a snapshot of pools, health, weights, gate and counters.
func (g *Gateway) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := State{Pools: []PoolState{}, Gate: g.gate, Gated: g.gated.Load(), Unroutable: g.unroutable.Load(), ProxyErrs: g.proxyErrs.Load(), Retried: g.retried.Load()}
	total := 0
	for _, p := range g.pools {
		if p.healthy(nil) {
			total += g.weights[p.name]
		}
	}
	for _, name := range slices.Sorted(maps.Keys(g.pools)) {
		ps := g.poolStateLocked(g.pools[name], total)
		if ps.Weight > 0 && ps.Status != PoolServing {
			st.Degraded = true
		}
		st.Pools = append(st.Pools, ps)
	}
	return st
}

// poolStateLocked describes p; total is the sum of the weights of serving
// pools (0: effective weight not computed). g.mu must be held.
func (g *Gateway) poolStateLocked(p *pool, total int) PoolState {
	ps := PoolState{Name: p.name, Weight: g.weights[p.name], InFlight: p.inFlight.Load(), Forwarded: p.forwarded.Load(),
		Backends: []BackendState{}}
	if ns := p.lastForward.Load(); ns != 0 {
		ps.LastForwardedAt = time.Unix(0, ns).UTC()
	}
	for _, b := range p.members() {
		ps.Backends = append(ps.Backends, b.state())
	}
	switch {
	case len(ps.Backends) == 0:
		ps.Status = PoolEmpty
	case p.healthy(nil):
		ps.Status = PoolServing
	default:
		ps.Status = PoolNoHealthyBackend
	}
	if ps.Status == PoolServing && total > 0 {
		ps.EffectiveWeight = ps.Weight * 100 / total
	}
	return ps
}
