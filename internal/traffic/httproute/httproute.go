// Package httproute is a traffic.Router over a Gateway API HTTPRoute, for
// clusters whose routing is a Gateway API implementation rather than our
// gateway.
//
// Weights are the backendRefs[].weight of the rules that route to the
// pools' Services (percent, so they sum to 100). The maintenance gate sends
// every rule that can carry a write (by our gateway's definition: all but
// GET, HEAD, OPTIONS and POST /v1/verify) to the maintenance Service only,
// with a RequestHeaderModifier setting Countersign-Retry-After, so the
// maintenance backend (`countersign maintenance`) answers 503 with that
// Retry-After. Both are Gateway API core features; telling reads from
// writes by method is an extended one (docs/design/traffic.md).
//
// Invariant: evidence first. Every change is handed to the Recorder before
// it is applied; if the Recorder fails, nothing is applied. State always
// reads the live object from the API server, never a cache.
//
// The router writes with server-side apply under its own field manager
// (Force: it takes ownership of spec.rules, an atomic list, and of its
// annotations), conditioned on the resourceVersion it read, so a rule
// edited between the read and the write is never silently overwritten. It
// needs only get and patch on httproutes.
package httproute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// Resource is the Gateway API HTTPRoute resource the router reads and
// applies.
var Resource = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// Annotations the router keeps on the HTTPRoute.
const (
	// AnnotationWeights holds the weights, JSON pool → percent, always
	// current; while every pool rule is gated, it is what gate off restores.
	AnnotationWeights = "countersign.dev/weights"
	// AnnotationGate holds the gate as last set, JSON gateway.Gate.
	AnnotationGate = "countersign.dev/gate"

	annotationIncident    = "countersign.dev/incident"
	annotationRunID       = "countersign.dev/run-id"
	annotationStep        = "countersign.dev/step"
	annotationActor       = "countersign.dev/actor"
	annotationChangeCause = "kubernetes.io/change-cause"
)

// Defaults for Config fields left zero.
const (
	DefaultNamespace    = "countersign"
	DefaultRoute        = "countersign"
	DefaultFieldManager = "countersign-control"
)

// DefaultMaintenance is the maintenance Service of the manifests.
var DefaultMaintenance = Backend{Service: "countersign-maintenance", Port: 8080}

// DefaultPools returns the pools of the manifests: stable and canary, each
// the Service countersign-node-<pool> on port 7300.
func DefaultPools() map[string]Backend {
	return map[string]Backend{
		"stable": {Service: "countersign-node-stable", Port: 7300},
		"canary": {Service: "countersign-node-canary", Port: 7300},
	}
}

// maxAttempts bounds re-reads after the object changed between read and
// apply (a Gateway controller writing status changes the resourceVersion).
const maxAttempts = 5

var (
	// ErrRouteShape marks an HTTPRoute the router cannot drive: no rule
	// routes to the pools, a rule mixes pool and other backends, or an
	// annotation it keeps is malformed.
	ErrRouteShape = errors.New("httproute: route cannot be driven")
	// ErrInconsistent marks a route whose pool rules split traffic
	// differently, so it has no one set of weights.
	ErrInconsistent = errors.New("httproute: pool rules disagree")
)

// Backend is a Service a route sends traffic to.
type Backend struct {
	Service string
	Port    int32
}

// Config configures a Router.
type Config struct {
	// Client reaches the API server. Required.
	Client dynamic.Interface
	// Namespace and Route name the HTTPRoute (defaults DefaultNamespace,
	// DefaultRoute). Backend Services live in the same namespace.
	Namespace string
	Route     string
	// Pools maps each pool to its Service (e.g. "canary" →
	// countersign-node-canary:7300); default DefaultPools().
	Pools map[string]Backend
	// Maintenance is the Service that answers gated requests; default
	// DefaultMaintenance.
	Maintenance Backend
	// Recorder receives every change before it is applied. Required.
	Recorder gateway.Recorder
	// FieldManager is the server-side apply field manager (default
	// DefaultFieldManager).
	FieldManager string
	// DefaultRetryAfter is the gate's Retry-After when turned on without
	// one (seconds, default gateway.DefaultRetryAfter).
	DefaultRetryAfter int
	// Now is the clock (default time.Now); Logger, default slog.Default().
	Now    func() time.Time
	Logger *slog.Logger
}

// Router drives one HTTPRoute. It implements traffic.Router.
type Router struct {
	cfg Config
	l   *layout
	res dynamic.ResourceInterface
	log *slog.Logger

	mu sync.Mutex // serializes changes: evidence order is apply order
}

var _ traffic.Router = (*Router)(nil)

var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// New returns a Router over the HTTPRoute cfg names. It does no I/O.
// Errors wrap gateway.ErrInvalid.
func New(cfg Config) (*Router, error) {
	if cfg.Client == nil || cfg.Recorder == nil {
		return nil, fmt.Errorf("%w: httproute: a Client and a Recorder are required", gateway.ErrInvalid)
	}
	if len(cfg.Pools) == 0 {
		cfg.Pools = DefaultPools()
	}
	if cfg.Maintenance == (Backend{}) {
		cfg.Maintenance = DefaultMaintenance
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Route == "" {
		cfg.Route = DefaultRoute
	}
	if cfg.FieldManager == "" {
		cfg.FieldManager = DefaultFieldManager
	}
	if cfg.DefaultRetryAfter <= 0 {
		cfg.DefaultRetryAfter = gateway.DefaultRetryAfter
	}
	if cfg.DefaultRetryAfter > traffic.MaxRetryAfter {
		return nil, fmt.Errorf("%w: httproute: DefaultRetryAfter %d is over %d", gateway.ErrInvalid, cfg.DefaultRetryAfter, traffic.MaxRetryAfter)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	services := map[string]string{}
	check := func(what string, b Backend) error {
		if b.Service == "" || b.Port < 1 || b.Port > 65535 {
			return fmt.Errorf("%w: httproute: %s needs a Service name and a port in 1..65535, got %q:%d", gateway.ErrInvalid, what, b.Service, b.Port)
		}
		if other, dup := services[b.Service]; dup {
			return fmt.Errorf("%w: httproute: %s and %s are both Service %s", gateway.ErrInvalid, other, what, b.Service)
		}
		services[b.Service] = what
		return nil
	}
	if err := check("the maintenance backend", cfg.Maintenance); err != nil {
		return nil, err
	}
	for p, b := range cfg.Pools {
		if !poolNameRE.MatchString(p) {
			return nil, fmt.Errorf("%w: httproute: pool name %q must match %s", gateway.ErrInvalid, p, poolNameRE)
		}
		if err := check("pool "+p, b); err != nil {
			return nil, err
		}
	}
	cfg.Pools = maps.Clone(cfg.Pools)
	return &Router{cfg: cfg, l: newLayout(cfg.Namespace, cfg.Pools, cfg.Maintenance),
		res: cfg.Client.Resource(Resource).Namespace(cfg.Namespace), log: cfg.Logger}, nil
}

// NewForConfig returns a Router whose Client is made from rc (the
// control plane's kubeconfig or in-cluster ServiceAccount).
func NewForConfig(rc *rest.Config, cfg Config) (*Router, error) {
	c, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("httproute: client: %w", err)
	}
	cfg.Client = c
	return New(cfg)
}

// String names the route: "HTTPRoute countersign/countersign".
func (r *Router) String() string { return "HTTPRoute " + r.cfg.Namespace + "/" + r.cfg.Route }

// read gets the live object and parses it.
func (r *Router) read(ctx context.Context) (*unstructured.Unstructured, *route, error) {
	obj, err := r.res.Get(ctx, r.cfg.Route, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: get: %w", r, err)
	}
	rules, _, err := unstructured.NestedSlice(obj.Object, "spec", "rules")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: spec.rules: %w", r, err)
	}
	rt, err := r.l.parse(rules, obj.GetAnnotations())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r, err)
	}
	return obj, rt, nil
}

// State reads the gate and the weights back from the live HTTPRoute.
func (r *Router) State(ctx context.Context) (traffic.State, error) {
	_, rt, err := r.read(ctx)
	if err != nil {
		return traffic.State{}, err
	}
	st, err := r.l.state(rt)
	if err != nil {
		return traffic.State{}, fmt.Errorf("%s: %w", r, err)
	}
	return st, nil
}

// change is one intended change, computed from a read of the route.
type change struct {
	typ         string
	rules       []any
	annotations map[string]string // AnnotationWeights and AnnotationGate
	before      any
	after       any
	summary     string // for kubernetes.io/change-cause
	changes     []fleet.Change
}

// build computes a change from the live route and its state.
type build func(rt *route, st traffic.State) (*change, error)

// SetWeights sets every pool's share of the pool rules and
// AnnotationWeights. Gated rules stay gated; gate off restores them with
// these weights.
func (r *Router) SetWeights(ctx context.Context, weights map[string]int) error {
	w, err := traffic.CheckWeights(r.l.poolNames(), weights)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err = r.apply(ctx, r.weightsChange(w), false)
	return err
}

// SetGate turns the gate on or off (see the package doc) and records it in
// AnnotationGate. RetryAfter must be at most traffic.MaxRetryAfter.
func (r *Router) SetGate(ctx context.Context, g gateway.Gate) (gateway.Gate, error) {
	g, err := traffic.NormalizeGate(g, r.cfg.DefaultRetryAfter)
	if err != nil {
		return gateway.Gate{}, err
	}
	g.Since = r.cfg.Now().UTC().Truncate(time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.apply(ctx, r.gateChange(g), false); err != nil {
		return gateway.Gate{}, err
	}
	return g, nil
}

// PlanWeights reports the fields SetWeights would change; the API server
// validates the result with a dry run, so a plan that passes applies.
func (r *Router) PlanWeights(ctx context.Context, weights map[string]int) ([]fleet.Change, error) {
	w, err := traffic.CheckWeights(r.l.poolNames(), weights)
	if err != nil {
		return nil, err
	}
	return r.apply(ctx, r.weightsChange(w), true)
}

// PlanGate reports the fields SetGate would change (AnnotationGate shown
// without its time, which SetGate sets), validated by a dry run.
func (r *Router) PlanGate(ctx context.Context, g gateway.Gate) ([]fleet.Change, error) {
	g, err := traffic.NormalizeGate(g, r.cfg.DefaultRetryAfter)
	if err != nil {
		return nil, err
	}
	return r.apply(ctx, r.gateChange(g), true)
}

func (r *Router) weightsChange(w map[string]int) build {
	return func(rt *route, st traffic.State) (*change, error) {
		rules := r.l.withWeights(rt, w)
		gate, ok := rt.annotations[AnnotationGate]
		if !ok {
			gate = gateJSON(st.Gate)
		}
		return &change{typ: gateway.EventWeights, rules: rules,
			annotations: map[string]string{AnnotationWeights: weightsJSON(w), AnnotationGate: gate},
			before:      st.Weights, after: w, summary: "weights " + fmtWeights(w)}, nil
	}
}

func (r *Router) gateChange(g gateway.Gate) build {
	return func(rt *route, st traffic.State) (*change, error) {
		rules := r.l.withGate(rt, g, st.Weights)
		summary := "gate off"
		if g.On {
			summary = fmt.Sprintf("gate on, Retry-After %d s", g.RetryAfter)
			if g.BlockReads {
				summary += ", reads blocked too"
			}
		}
		return &change{typ: gateway.EventGate, rules: rules,
			annotations: map[string]string{AnnotationWeights: weightsJSON(st.Weights), AnnotationGate: gateJSON(g)},
			before:      traffic.GateDetails(st.Gate), after: traffic.GateDetails(g), summary: summary}, nil
	}
}
