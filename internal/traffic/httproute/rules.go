package httproute

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
	"k8s.io/apimachinery/pkg/runtime"
)

// Everything in this file is pure: it reads and rewrites the unstructured
// spec.rules of an HTTPRoute, so it is tested without an API server.

// ruleKind says what a rule routes to.
type ruleKind int

const (
	otherRule ruleKind = iota // not ours: left exactly as it is
	poolRule                  // every backendRef is a pool Service
	gatedRule                 // every backendRef is the maintenance Service, and it sets RetryAfterHeader
)

func (k ruleKind) String() string {
	return [...]string{"other", "pool", "gated"}[k]
}

// layout is what the router knows of the route's backends.
type layout struct {
	namespace   string
	pools       map[string]Backend // pool → Service
	byService   map[string]string  // Service name → pool
	maintenance Backend
}

func newLayout(namespace string, pools map[string]Backend, maintenance Backend) *layout {
	l := &layout{namespace: namespace, pools: pools, byService: map[string]string{}, maintenance: maintenance}
	for p, b := range pools {
		l.byService[b.Service] = p
	}
	return l
}

func (l *layout) poolNames() []string { return slices.Sorted(maps.Keys(l.pools)) }

// route is a parsed live HTTPRoute: its rules with what each routes to and
// whether it can carry a write.
type route struct {
	rules       []any // spec.rules, as read
	kinds       []ruleKind
	writes      []bool
	annotations map[string]string
}

// parse classifies every rule. A rule mixing pool, maintenance and other
// backends is an error: the router could neither gate nor weigh it without
// changing where the other backends' traffic goes.
func (l *layout) parse(rules []any, annotations map[string]string) (*route, error) {
	rt := &route{rules: rules, annotations: annotations}
	for i, r := range rules {
		rule, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: spec.rules[%d] is a %T, not an object", ErrRouteShape, i, r)
		}
		kind, err := l.kind(i, rule)
		if err != nil {
			return nil, err
		}
		rt.kinds = append(rt.kinds, kind)
		rt.writes = append(rt.writes, carriesWrites(rule))
	}
	return rt, nil
}

// target says where a backendRef points: a pool, the maintenance Service
// or something else.
func (l *layout) target(ref map[string]any) (pool string, maintenance bool) {
	group, _ := ref["group"].(string)
	kind, _ := ref["kind"].(string)
	ns, _ := ref["namespace"].(string)
	name, _ := ref["name"].(string)
	if group != "" || (kind != "" && kind != "Service") || (ns != "" && ns != l.namespace) {
		return "", false
	}
	if name == l.maintenance.Service {
		return "", true
	}
	return l.byService[name], false
}

func (l *layout) kind(i int, rule map[string]any) (ruleKind, error) {
	refs, _ := rule["backendRefs"].([]any)
	var pools, maint, other int
	for _, r := range refs {
		ref, _ := r.(map[string]any)
		switch p, m := l.target(ref); {
		case m:
			maint++
		case p != "":
			pools++
		default:
			other++
		}
	}
	switch {
	case len(refs) == 0 || other == len(refs):
		return otherRule, nil
	case pools == len(refs):
		return poolRule, nil
	case maint == len(refs) && hasRetryHeader(rule):
		return gatedRule, nil
	case maint == len(refs):
		// Routed to the maintenance Service by someone else (say, a
		// status page): not a rule this router gated.
		return otherRule, nil
	}
	return 0, fmt.Errorf("%w: spec.rules[%d] mixes backends (%d pool, %d maintenance, %d other): keep the pools' Services in rules of their own",
		ErrRouteShape, i, pools, maint, other)
}

// carriesWrites reports whether some request the rule matches is a write
// by our gateway's definition (gateway.Gateway gates every request but GET,
// HEAD, OPTIONS and POST /v1/verify). A rule without matches matches
// everything. Only an exact "/v1/verify" match makes a POST a read.
func carriesWrites(rule map[string]any) bool {
	matches, _ := rule["matches"].([]any)
	if len(matches) == 0 {
		return true
	}
	for _, m := range matches {
		match, _ := m.(map[string]any)
		method, _ := match["method"].(string)
		switch method {
		case "GET", "HEAD", "OPTIONS":
			continue
		case "POST":
			path, _ := match["path"].(map[string]any)
			typ, _ := path["type"].(string)
			value, _ := path["value"].(string)
			if typ == "Exact" && value == "/v1/verify" {
				continue
			}
		}
		return true
	}
	return false
}

// refWeight is a backendRef's weight: 1 when unset, as the API defaults it.
func refWeight(ref map[string]any) int64 {
	w, ok := ref["weight"]
	if !ok {
		return 1
	}
	n, ok := asInt(w)
	if !ok {
		return 0
	}
	return n
}

func asInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case float64:
		return int64(n), float64(int64(n)) == n
	}
	return 0, false
}

// ruleWeights is the share, in percent, each pool gets from a pool rule.
func (l *layout) ruleWeights(rule map[string]any) map[string]int {
	raw := make(map[string]int64, len(l.pools))
	for _, p := range l.poolNames() {
		raw[p] = 0
	}
	refs, _ := rule["backendRefs"].([]any)
	for _, r := range refs {
		ref, _ := r.(map[string]any)
		if p, _ := l.target(ref); p != "" {
			raw[p] += refWeight(ref)
		}
	}
	return percent(raw)
}

// percent turns backendRef weights (proportions, not percentages) into
// percentages summing to 100, by largest remainder with ties to the pool
// name that sorts first. All zero stays all zero: nothing is routed.
func percent(raw map[string]int64) map[string]int {
	var sum int64
	for _, w := range raw {
		sum += w
	}
	out := make(map[string]int, len(raw))
	if sum == 0 {
		for p := range raw {
			out[p] = 0
		}
		return out
	}
	names := slices.Sorted(maps.Keys(raw))
	left := 100
	rem := make(map[string]int64, len(raw))
	for _, p := range names {
		out[p] = int(raw[p] * 100 / sum)
		rem[p] = raw[p] * 100 % sum
		left -= out[p]
	}
	slices.SortStableFunc(names, func(a, b string) int {
		switch {
		case rem[a] > rem[b]:
			return -1
		case rem[a] < rem[b]:
			return 1
		}
		return 0
	})
	for i := 0; left > 0; i, left = i+1, left-1 {
		out[names[i%len(names)]]++
	}
	return out
}

// state reads the gate and the weights from the rules; the annotations only
// add what rules cannot hold (the gate's reason and time, and the weights
// while every pool rule is gated).
func (l *layout) state(rt *route) (traffic.State, error) {
	var st traffic.State
	first := -1
	var gated, writePool, anyPool bool
	for i, k := range rt.kinds {
		switch k {
		case poolRule:
			anyPool = true
			writePool = writePool || rt.writes[i]
			w := l.ruleWeights(rt.rules[i].(map[string]any))
			if first < 0 {
				first, st.Weights = i, w
			} else if !maps.Equal(w, st.Weights) {
				return traffic.State{}, fmt.Errorf("%w: spec.rules[%d] splits %s but spec.rules[%d] splits %s",
					ErrInconsistent, first, fmtWeights(st.Weights), i, fmtWeights(w))
			}
		case gatedRule:
			gated = true
		}
	}
	if !anyPool && !gated {
		return traffic.State{}, fmt.Errorf("%w: no rule routes to the pools' Services (%s) or to the maintenance Service %s",
			ErrRouteShape, l.services(), l.maintenance.Service)
	}
	ann, err := annotatedGate(rt.annotations)
	if err != nil {
		return traffic.State{}, err
	}
	if st.Weights == nil {
		if st.Weights, err = l.annotatedWeights(rt.annotations); err != nil {
			return traffic.State{}, err
		}
	}
	// The gate is on when no rule that can carry a write reaches a pool:
	// that, not the annotation, is what keeps writes out.
	if gated && !writePool {
		st.Gate = gateway.Gate{On: true, BlockReads: !anyPool}
		for i, k := range rt.kinds {
			if k == gatedRule {
				st.Gate.RetryAfter = retryAfterOf(rt.rules[i].(map[string]any))
				break
			}
		}
		if ann.On {
			st.Gate.Reason, st.Gate.Since = ann.Reason, ann.Since
			if st.Gate.RetryAfter == 0 {
				st.Gate.RetryAfter = ann.RetryAfter
			}
		}
	}
	return st, nil
}

func (l *layout) services() string {
	var s []string
	for _, p := range l.poolNames() {
		s = append(s, l.pools[p].Service)
	}
	return strings.Join(s, ", ")
}

// annotatedWeights reads AnnotationWeights, every pool present.
func (l *layout) annotatedWeights(ann map[string]string) (map[string]int, error) {
	v, ok := ann[AnnotationWeights]
	if !ok {
		return nil, fmt.Errorf("%w: every pool rule is gated and the %s annotation is missing: the weights are unknown", ErrRouteShape, AnnotationWeights)
	}
	var w map[string]int
	if err := json.Unmarshal([]byte(v), &w); err != nil {
		return nil, fmt.Errorf("%w: annotation %s: %w", ErrRouteShape, AnnotationWeights, err)
	}
	out, err := traffic.CheckWeights(l.poolNames(), w)
	if err != nil {
		return nil, fmt.Errorf("%w: annotation %s: %w", ErrRouteShape, AnnotationWeights, err)
	}
	return out, nil
}

func annotatedGate(ann map[string]string) (gateway.Gate, error) {
	var g gateway.Gate
	v, ok := ann[AnnotationGate]
	if !ok {
		return g, nil
	}
	if err := json.Unmarshal([]byte(v), &g); err != nil {
		return g, fmt.Errorf("%w: annotation %s: %w", ErrRouteShape, AnnotationGate, err)
	}
	return g, nil
}

// withWeights returns the rules with every pool rule split by w (percent).
// Pool refs keep their other fields; a pool without a ref in a rule gets
// one. Gated and other rules are unchanged: weights never move the gate.
func (l *layout) withWeights(rt *route, w map[string]int) []any {
	out := make([]any, len(rt.rules))
	for i, r := range rt.rules {
		rule := runtime.DeepCopyJSONValue(r).(map[string]any)
		if rt.kinds[i] == poolRule {
			l.setWeights(rule, w)
		}
		out[i] = rule
	}
	return out
}

func (l *layout) setWeights(rule map[string]any, w map[string]int) {
	refs, _ := rule["backendRefs"].([]any)
	seen := map[string]bool{}
	for _, r := range refs {
		ref := r.(map[string]any)
		if p, _ := l.target(ref); p != "" {
			ref["weight"] = int64(w[p])
			seen[p] = true
		}
	}
	for _, p := range l.poolNames() {
		if !seen[p] {
			refs = append(refs, l.poolRef(p, w[p]))
		}
	}
	rule["backendRefs"] = refs
}

func (l *layout) poolRef(pool string, weight int) map[string]any {
	b := l.pools[pool]
	return map[string]any{"name": b.Service, "port": int64(b.Port), "weight": int64(weight)}
}

func fmtWeights(w map[string]int) string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", p, w[p]))
	}
	return strings.Join(parts, ",")
}
