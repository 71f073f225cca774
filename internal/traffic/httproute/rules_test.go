package httproute

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var testPools = map[string]Backend{
	"stable": {Service: "countersign-node-stable", Port: 7300},
	"canary": {Service: "countersign-node-canary", Port: 7300},
}

var testMaintenance = Backend{Service: "countersign-maintenance", Port: 8080}

func testLayout() *layout { return newLayout("countersign", testPools, testMaintenance) }

// loadRoute reads a route as the API server returns it (integers int64).
func loadRoute(t *testing.T, file string) *unstructured.Unstructured {
	t.Helper()
	y, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return decodeRoute(t, string(y))
}

func decodeRoute(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	m["apiVersion"], m["kind"] = "gateway.networking.k8s.io/v1", "HTTPRoute"
	if j, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

func parseRoute(t *testing.T, l *layout, u *unstructured.Unstructured) *route {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(u.Object, "spec", "rules")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := l.parse(rules, u.GetAnnotations())
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// step applies rules and annotations as the API server would store them.
func step(t *testing.T, l *layout, rt *route, rules []any, ann map[string]string) *route {
	t.Helper()
	merged := maps.Clone(rt.annotations)
	maps.Copy(merged, ann)
	next, err := l.parse(rules, merged)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

func mustState(t *testing.T, l *layout, rt *route) traffic.State {
	t.Helper()
	st, err := l.state(rt)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestParseCanonicalRoute(t *testing.T) {
	l := testLayout()
	rt := parseRoute(t, l, loadRoute(t, "testdata/route.yaml"))
	if !reflect.DeepEqual(rt.kinds, []ruleKind{poolRule, poolRule}) || !reflect.DeepEqual(rt.writes, []bool{false, true}) {
		t.Fatalf("kinds %v writes %v, want two pool rules, the second carrying writes", rt.kinds, rt.writes)
	}
	st := mustState(t, l, rt)
	if st.Gate.On || !reflect.DeepEqual(st.Weights, map[string]int{"stable": 100, "canary": 0}) {
		t.Fatalf("state %+v", st)
	}
}

func TestCarriesWrites(t *testing.T) {
	tests := []struct {
		name  string
		rule  string
		write bool
	}{
		{"no matches", `{}`, true},
		{"path only", `{matches: [{path: {type: PathPrefix, value: /}}]}`, true},
		{"safe methods", `{matches: [{method: GET}, {method: HEAD}, {method: OPTIONS}]}`, false},
		{"verify", `{matches: [{method: POST, path: {type: Exact, value: /v1/verify}}]}`, false},
		{"verify prefix", `{matches: [{method: POST, path: {type: PathPrefix, value: /v1/verify}}]}`, true},
		{"post", `{matches: [{method: POST, path: {type: Exact, value: /v1/sign}}]}`, true},
		{"delete", `{matches: [{method: DELETE}]}`, true},
		{"one write among reads", `{matches: [{method: GET}, {method: PUT}]}`, true},
		{"headers do not make a read", `{matches: [{headers: [{name: X-Read, value: "1"}]}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := decodeRoute(t, "spec: {rules: ["+tt.rule+"]}")
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			if got := carriesWrites(rules[0].(map[string]any)); got != tt.write {
				t.Fatalf("carriesWrites = %v, want %v", got, tt.write)
			}
		})
	}
}

func TestWeightsRoundTrip(t *testing.T) {
	l := testLayout()
	rt := parseRoute(t, l, loadRoute(t, "testdata/route.yaml"))
	keys := []string{AnnotationWeights, AnnotationGate}
	for _, canary := range []int{1, 10, 50, 100} {
		w := map[string]int{"stable": 100 - canary, "canary": canary}
		before := mustState(t, l, rt)
		rules := l.withWeights(rt, w)
		ann := map[string]string{AnnotationWeights: weightsJSON(w)}
		changes := diff("HTTPRoute", "countersign", "countersign", flatten(rt.rules, rt.annotations, keys), flatten(rules, ann, keys))
		rt = step(t, l, rt, rules, ann)
		st := mustState(t, l, rt)
		if !reflect.DeepEqual(st.Weights, w) {
			t.Fatalf("after weights %v, state reads %v", w, st.Weights)
		}
		want := []fleet.Change{}
		for i := range 2 {
			for _, p := range []string{"canary", "stable"} {
				if before.Weights[p] != w[p] {
					want = append(want, fleet.Change{Kind: "HTTPRoute", Namespace: "countersign", Name: "countersign",
						Field: "spec.rules[" + strconv.Itoa(i) + "].backendRefs[countersign-node-" + p + "].weight",
						From:  strconv.Itoa(before.Weights[p]), To: strconv.Itoa(w[p])})
				}
			}
		}
		want = append(want, fleet.Change{Kind: "HTTPRoute", Namespace: "countersign", Name: "countersign",
			Field: "metadata.annotations[countersign.dev/weights]", From: weightsJSON(before.Weights), To: weightsJSON(w)})
		if !reflect.DeepEqual(changes, want) {
			t.Fatalf("canary %d: changes\n%v\nwant\n%v", canary, changes, want)
		}
	}
	// The first step's plan names the exact field, as playbook plan shows it.
	rt = parseRoute(t, l, loadRoute(t, "testdata/route.yaml"))
	c := diff("HTTPRoute", "countersign", "countersign", flatten(rt.rules, nil, nil), flatten(l.withWeights(rt, map[string]int{"stable": 90, "canary": 10}), nil, nil))
	if got := c[0].Object() + " " + c[0].Field + " " + c[0].From + " → " + c[0].To; got != "HTTPRoute countersign/countersign spec.rules[0].backendRefs[countersign-node-canary].weight 0 → 10" {
		t.Fatalf("first change %q", got)
	}
}

func TestGateRoundTrip(t *testing.T) {
	l := testLayout()
	orig := parseRoute(t, l, loadRoute(t, "testdata/route.yaml"))
	w := map[string]int{"stable": 90, "canary": 10}
	rt := step(t, l, orig, l.withWeights(orig, w), map[string]string{AnnotationWeights: weightsJSON(w)})
	weighted := rt

	tests := []struct {
		name      string
		gate      gateway.Gate
		wantKinds []ruleKind
	}{
		{"writes", gateway.Gate{On: true, RetryAfter: 120, Reason: "rollback"}, []ruleKind{poolRule, gatedRule}},
		{"reads too", gateway.Gate{On: true, RetryAfter: 7, BlockReads: true}, []ruleKind{gatedRule, gatedRule}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := mustState(t, l, weighted)
			on := step(t, l, weighted, l.withGate(weighted, tt.gate, st.Weights), map[string]string{AnnotationGate: gateJSON(tt.gate)})
			if !reflect.DeepEqual(on.kinds, tt.wantKinds) {
				t.Fatalf("kinds %v, want %v", on.kinds, tt.wantKinds)
			}
			got := mustState(t, l, on)
			if !got.Gate.On || got.Gate.RetryAfter != tt.gate.RetryAfter || got.Gate.BlockReads != tt.gate.BlockReads || got.Gate.Reason != tt.gate.Reason {
				t.Fatalf("gate read back %+v, want %+v", got.Gate, tt.gate)
			}
			if !reflect.DeepEqual(got.Weights, w) {
				t.Fatalf("weights while gated %v, want %v", got.Weights, w)
			}
			if !tt.gate.BlockReads && !reflect.DeepEqual(on.rules[0], weighted.rules[0]) {
				t.Fatal("gating writes changed the read rule")
			}
			gated := on.rules[1].(map[string]any)
			refs := gated["backendRefs"].([]any)
			if len(refs) != 1 || refs[0].(map[string]any)["name"] != "countersign-maintenance" || retryAfterOf(gated) != tt.gate.RetryAfter {
				t.Fatalf("gated write rule %v", gated)
			}

			off := step(t, l, on, l.withGate(on, gateway.Gate{}, got.Weights), map[string]string{AnnotationGate: gateJSON(gateway.Gate{})})
			if st := mustState(t, l, off); st.Gate.On || !reflect.DeepEqual(st.Weights, w) {
				t.Fatalf("after gate off %+v", st)
			}
			// Backend order aside (refs are rendered sorted by pool), the
			// rules are back as they were: the plan sees no difference.
			keys := []string{AnnotationWeights}
			if d := diff("HTTPRoute", "", "r", flatten(weighted.rules, weighted.annotations, keys), flatten(off.rules, off.annotations, keys)); len(d) != 0 {
				t.Fatalf("gate off did not restore the rules: %v", d)
			}
		})
	}
}

func TestGateKeepsOtherHeadersAndRules(t *testing.T) {
	l := testLayout()
	rt := parseRoute(t, l, decodeRoute(t, `
metadata: {annotations: {countersign.dev/weights: '{"canary":0,"stable":100}'}}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: /static}}]
    backendRefs: [{name: assets, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /status}}]
    backendRefs: [{name: countersign-maintenance, port: 8080}]
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Env, value: prod}]
    backendRefs:
    - {name: countersign-node-stable, port: 7300, weight: 100}
`))
	if !reflect.DeepEqual(rt.kinds, []ruleKind{otherRule, otherRule, poolRule}) {
		t.Fatalf("kinds %v: a maintenance rule without the Retry-After header is not the gate's", rt.kinds)
	}
	g := gateway.Gate{On: true, RetryAfter: 60}
	on := step(t, l, rt, l.withGate(rt, g, mustState(t, l, rt).Weights), nil)
	if !reflect.DeepEqual(on.rules[:2], rt.rules[:2]) {
		t.Fatal("the gate changed rules that do not route to the pools")
	}
	f := headerFilter(on.rules[2].(map[string]any))
	if set := f["set"].([]any); len(set) != 2 || set[0].(map[string]any)["name"] != "X-Env" {
		t.Fatalf("header filter while gated: %v", f)
	}
	off := step(t, l, on, l.withGate(on, gateway.Gate{}, map[string]int{"stable": 100, "canary": 0}), nil)
	f = headerFilter(off.rules[2].(map[string]any))
	if set := f["set"].([]any); len(set) != 1 || set[0].(map[string]any)["value"] != "prod" {
		t.Fatalf("header filter after gate off: %v", f)
	}
}

func TestRouteShapeErrors(t *testing.T) {
	l := testLayout()
	tests := []struct {
		name, yaml string
		parse      bool // the error comes from parse, not state
		want       error
	}{
		{"mixed", `spec: {rules: [{backendRefs: [{name: countersign-node-stable, port: 7300}, {name: other, port: 80}]}]}`, true, ErrRouteShape},
		{"no pool rule", `spec: {rules: [{backendRefs: [{name: other, port: 80}]}]}`, false, ErrRouteShape},
		{"disagree", `spec: {rules: [
			{matches: [{method: GET}], backendRefs: [{name: countersign-node-stable, port: 7300, weight: 90}, {name: countersign-node-canary, port: 7300, weight: 10}]},
			{backendRefs: [{name: countersign-node-stable, port: 7300, weight: 100}]}]}`, false, ErrInconsistent},
		{"all gated, no annotation", `spec: {rules: [{backendRefs: [{name: countersign-maintenance, port: 8080}],
			filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Countersign-Retry-After, value: "5"}]}}]}]}`, false, ErrRouteShape},
		{"bad gate annotation", `{metadata: {annotations: {countersign.dev/gate: "{"}}, spec: {rules: [{backendRefs: [{name: countersign-node-stable, port: 7300}]}]}}`, false, ErrRouteShape},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := decodeRoute(t, tt.yaml)
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			rt, err := l.parse(rules, u.GetAnnotations())
			if !tt.parse {
				if err != nil {
					t.Fatal(err)
				}
				_, err = l.state(rt)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		raw  map[string]int64
		want map[string]int
	}{
		{map[string]int64{"a": 90, "b": 10}, map[string]int{"a": 90, "b": 10}},
		{map[string]int64{"a": 1, "b": 1}, map[string]int{"a": 50, "b": 50}},
		{map[string]int64{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 34, "b": 33, "c": 33}},
		{map[string]int64{"a": 1, "b": 2}, map[string]int{"a": 33, "b": 67}},
		{map[string]int64{"a": 0, "b": 0}, map[string]int{"a": 0, "b": 0}},
		{map[string]int64{"a": 1000000, "b": 1}, map[string]int{"a": 100, "b": 0}},
	}
	for _, tt := range tests {
		if got := percent(tt.raw); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("percent(%v) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}

func TestGatePlanFields(t *testing.T) {
	l := testLayout()
	rt := parseRoute(t, l, loadRoute(t, "testdata/route.yaml"))
	g := gateway.Gate{On: true, RetryAfter: 120}
	keys := []string{AnnotationWeights, AnnotationGate}
	ann := map[string]string{AnnotationWeights: `{"canary":0,"stable":100}`, AnnotationGate: gateJSON(g)}
	var got []string
	for _, c := range diff("HTTPRoute", "countersign", "countersign", flatten(rt.rules, rt.annotations, keys), flatten(l.withGate(rt, g, mustState(t, l, rt).Weights), ann, keys)) {
		got = append(got, c.String())
	}
	want := []string{
		`HTTPRoute countersign/countersign spec.rules[1].backendRefs[countersign-maintenance]: "" → "port=8080 weight=1"`,
		`HTTPRoute countersign/countersign spec.rules[1].backendRefs[countersign-node-canary]: "port=7300 weight=0" → ""`,
		`HTTPRoute countersign/countersign spec.rules[1].backendRefs[countersign-node-stable]: "port=7300 weight=100" → ""`,
		`HTTPRoute countersign/countersign spec.rules[1].filters[RequestHeaderModifier].set[Countersign-Retry-After]: "" → "120"`,
		`HTTPRoute countersign/countersign metadata.annotations[countersign.dev/gate]: "" → "{\"on\":true,\"retry_after\":120}"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("plan\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The route the deploy manifests ship is one the router can drive: it reads
// back the manifests' weights, and gating it leaves no rule that carries
// writes on a pool.
func TestDrivesManifestRoute(t *testing.T) {
	l := testLayout()
	rt := parseRoute(t, l, loadRoute(t, "../../../deploy/kubernetes/components/gateway-api/httproute.yaml"))
	st := mustState(t, l, rt)
	if st.Gate.On || !reflect.DeepEqual(st.Weights, map[string]int{"stable": 100, "canary": 0}) {
		t.Fatalf("state of the manifests' route: %+v", st)
	}
	g := gateway.Gate{On: true, RetryAfter: 30}
	on := step(t, l, rt, l.withGate(rt, g, st.Weights), map[string]string{AnnotationGate: gateJSON(g)})
	readsPass := false
	for i, k := range on.kinds {
		if k == poolRule && on.writes[i] {
			t.Fatalf("spec.rules[%d] carries writes to the pools with the gate on", i)
		}
		readsPass = readsPass || k == poolRule
	}
	got := mustState(t, l, on)
	if !got.Gate.On || got.Gate.BlockReads == readsPass {
		t.Fatalf("gated state %+v (reads still routed to pools: %v)", got.Gate, readsPass)
	}
}
