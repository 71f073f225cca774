//go:build kube

package httproute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/kubetest"
	"github.com/countersign/countersign/internal/traffic"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// kubeRecorder records each event with the route as the API server held it
// during Record (read with admin credentials): a change recorded before it
// is applied sees the old route. hook, when set, runs inside Record.
type kubeRecorder struct {
	admin *Router
	fail  atomic.Bool
	hook  func(ctx context.Context)

	mu  sync.Mutex
	evs []kubeEvent
}

type kubeEvent struct {
	typ     string
	details map[string]any
	stateAt traffic.State
}

func (r *kubeRecorder) Record(ctx context.Context, typ, _ string, details map[string]any) error {
	if r.fail.Load() {
		return errors.New("audit log unavailable")
	}
	st, err := r.admin.State(ctx)
	if err != nil {
		return err
	}
	if r.hook != nil {
		r.hook(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, kubeEvent{typ: typ, details: details, stateAt: st})
	return nil
}

func (r *kubeRecorder) events() []kubeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

// env is a namespace with the HTTPRoute as the manifests create it, a
// Router authenticated as a ServiceAccount holding only the contract's
// httproutes verbs, and an admin client to look at the object.
type env struct {
	ns     string
	router *Router
	rec    *kubeRecorder
	admin  dynamic.ResourceInterface
}

func setup(t *testing.T) *env {
	t.Helper()
	c := kubetest.Shared(t)
	ctx := t.Context()
	if err := c.InstallGatewayAPI(ctx); err != nil {
		t.Fatal(err)
	}
	ns := c.Namespace(t, "traffic")
	if out, err := c.Kubectl(ctx, "apply", "-n", ns, "-f", "testdata/route.yaml"); err != nil {
		t.Fatalf("kubectl apply the route: %v\n%s", err, out)
	}

	const sa = "countersign-control"
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes"},
		Verbs: []string{"get", "list", "watch", "patch"}}}}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := c.ServiceAccountConfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	saClient, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	adminClient, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	refuse := &kubeRecorder{}
	refuse.fail.Store(true)
	adminRouter, err := New(Config{Client: adminClient, Namespace: ns, Pools: testPools, Maintenance: testMaintenance, Recorder: refuse})
	if err != nil {
		t.Fatal(err)
	}
	rec := &kubeRecorder{admin: adminRouter}
	r, err := New(Config{Client: saClient, Namespace: ns, Pools: testPools, Maintenance: testMaintenance, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	// RBAC takes effect asynchronously: wait until the ServiceAccount can read.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := r.State(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the ServiceAccount cannot read the route: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &env{ns: ns, router: r, rec: rec, admin: adminClient.Resource(Resource).Namespace(ns)}
}

func (e *env) get(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	obj, err := e.admin.Get(t.Context(), "countersign", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// refWeights reads spec.rules[i].backendRefs as name → weight.
func refWeights(t *testing.T, obj *unstructured.Unstructured, i int) map[string]int64 {
	t.Helper()
	rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
	out := map[string]int64{}
	for _, r := range rules[i].(map[string]any)["backendRefs"].([]any) {
		ref := r.(map[string]any)
		out[ref["name"].(string)] = ref["weight"].(int64)
	}
	return out
}

func cause(step string) context.Context {
	return fleet.WithCause(context.Background(), fleet.Cause{Incident: "INC-8", RunID: "run-k", Step: step, Actor: "playbook"})
}

func TestKubeWeightSteps(t *testing.T) {
	e := setup(t)
	prev := map[string]int{"stable": 100, "canary": 0}
	for _, canary := range []int{1, 10, 50, 100} {
		w := map[string]int{"stable": 100 - canary, "canary": canary}
		ctx := cause("canary")
		rv := e.get(t).GetResourceVersion()
		plan, err := e.router.PlanWeights(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		wantField := fmt.Sprintf("HTTPRoute %s/countersign spec.rules[0].backendRefs[countersign-node-canary].weight %d → %d", e.ns, prev["canary"], canary)
		if got := plan[0].Object() + " " + plan[0].Field + " " + plan[0].From + " → " + plan[0].To; got != wantField {
			t.Fatalf("plan[0] = %q, want %q (plan %v)", got, wantField, plan)
		}
		if got := e.get(t).GetResourceVersion(); got != rv {
			t.Fatalf("PlanWeights changed the route (resourceVersion %s → %s)", rv, got)
		}

		if err := e.router.SetWeights(ctx, w); err != nil {
			t.Fatal(err)
		}
		st, err := e.router.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(st.Weights, w) || st.Gate.On {
			t.Fatalf("State after %v: %+v", w, st)
		}
		obj := e.get(t)
		for i := range 2 {
			want := map[string]int64{"countersign-node-stable": int64(100 - canary), "countersign-node-canary": int64(canary)}
			if got := refWeights(t, obj, i); !maps.Equal(got, want) {
				t.Fatalf("spec.rules[%d] weights %v, want %v", i, got, want)
			}
		}
		ann := obj.GetAnnotations()
		if ann[AnnotationWeights] != weightsJSON(w) || ann[annotationIncident] != "INC-8" || ann[annotationRunID] != "run-k" ||
			ann[annotationStep] != "canary" || ann[annotationActor] != "playbook" || !strings.Contains(ann[annotationChangeCause], "incident INC-8") {
			t.Fatalf("annotations %v", ann)
		}
		prev = w
	}

	// Four changes, each recorded while the route still held the previous
	// weights, with the exact fields.
	evs := e.rec.events()
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	before := map[string]int{"stable": 100, "canary": 0}
	for i, ev := range evs {
		if ev.typ != gateway.EventWeights || !reflect.DeepEqual(ev.stateAt.Weights, before) || !reflect.DeepEqual(ev.details["before"], before) {
			t.Errorf("event %d: %s, route held %v, details %v; want weights recorded while the route held %v", i, ev.typ, ev.stateAt.Weights, ev.details, before)
		}
		if ev.details["incident"] != "INC-8" || ev.details["actor"] != "playbook" || len(ev.details["changes"].([]fleet.Change)) == 0 {
			t.Errorf("event %d details %v", i, ev.details)
		}
		before = ev.details["after"].(map[string]int)
	}

	// The router owns the fields it set, under its field manager.
	owned := false
	for _, mf := range e.get(t).GetManagedFields() {
		if mf.Manager == DefaultFieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			owned = strings.Contains(string(mf.FieldsV1.Raw), `"f:rules"`)
		}
	}
	if !owned {
		t.Fatalf("no Apply entry of %s owning spec.rules in managedFields", DefaultFieldManager)
	}
}

func TestKubeGateRoundTrip(t *testing.T) {
	e := setup(t)
	ctx := cause("block-ingress")
	w := map[string]int{"stable": 90, "canary": 10}
	if err := e.router.SetWeights(ctx, w); err != nil {
		t.Fatal(err)
	}
	weighted := e.get(t)

	g, err := e.router.SetGate(ctx, gateway.Gate{On: true, RetryAfter: 120, Reason: "rollback"})
	if err != nil || !g.On || g.RetryAfter != 120 || g.Since.IsZero() {
		t.Fatalf("SetGate = %+v, %v", g, err)
	}
	st, err := e.router.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Gate.On || st.Gate.BlockReads || st.Gate.RetryAfter != 120 || st.Gate.Reason != "rollback" || !reflect.DeepEqual(st.Weights, w) {
		t.Fatalf("State with writes gated: %+v", st)
	}
	obj := e.get(t)
	if got := refWeights(t, obj, 1); !maps.Equal(got, map[string]int64{"countersign-maintenance": 1}) {
		t.Fatalf("write rule backends %v, want the maintenance Service only", got)
	}
	if got := refWeights(t, obj, 0); !maps.Equal(got, map[string]int64{"countersign-node-stable": 90, "countersign-node-canary": 10}) {
		t.Fatalf("read rule backends %v changed", got)
	}
	header, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
	if ra := retryAfterOf(header[1].(map[string]any)); ra != 120 {
		t.Fatalf("write rule sets Retry-After %d, want 120", ra)
	}

	// Reads too: every rule goes to maintenance; the weights live on in
	// the annotation.
	if _, err := e.router.SetGate(ctx, gateway.Gate{On: true, RetryAfter: 30, BlockReads: true}); err != nil {
		t.Fatal(err)
	}
	if st, err = e.router.State(ctx); err != nil || !st.Gate.On || !st.Gate.BlockReads || st.Gate.RetryAfter != 30 || !reflect.DeepEqual(st.Weights, w) {
		t.Fatalf("State with reads gated: %+v, %v", st, err)
	}
	if got := refWeights(t, e.get(t), 0); !maps.Equal(got, map[string]int64{"countersign-maintenance": 1}) {
		t.Fatalf("read rule backends %v, want the maintenance Service only", got)
	}

	// Off: the pool backends come back with the weights.
	if _, err := e.router.SetGate(cause("readmit"), gateway.Gate{}); err != nil {
		t.Fatal(err)
	}
	if st, err = e.router.State(ctx); err != nil || st.Gate.On || !reflect.DeepEqual(st.Weights, w) {
		t.Fatalf("State after gate off: %+v, %v", st, err)
	}
	restored := e.get(t)
	keys := []string{AnnotationWeights}
	wr, _, _ := unstructured.NestedSlice(weighted.Object, "spec", "rules")
	rr, _, _ := unstructured.NestedSlice(restored.Object, "spec", "rules")
	if d := diff("HTTPRoute", e.ns, "countersign", flatten(wr, weighted.GetAnnotations(), keys), flatten(rr, restored.GetAnnotations(), keys)); len(d) != 0 {
		t.Fatalf("gate off left differences from the weighted route: %v", d)
	}
	if restored.GetAnnotations()[annotationStep] != "readmit" {
		t.Fatalf("step annotation %q, want readmit", restored.GetAnnotations()[annotationStep])
	}

	evs := e.rec.events()
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4", len(evs))
	}
	wantOn := []bool{false, false, true, true} // the gate as the route held it when each change was recorded
	for i, ev := range evs {
		if ev.stateAt.Gate.On != wantOn[i] {
			t.Errorf("event %d (%s) recorded while the gate was on=%v, want %v", i, ev.typ, ev.stateAt.Gate.On, wantOn[i])
		}
	}
	if evs[1].typ != gateway.EventGate || evs[1].details["after"].(map[string]any)["retry_after"] != 120 {
		t.Errorf("gate event %v", evs[1].details)
	}
}

func TestKubeRecorderFailureAppliesNothing(t *testing.T) {
	e := setup(t)
	rv := e.get(t).GetResourceVersion()
	e.rec.fail.Store(true)
	ctx := cause("canary")
	if err := e.router.SetWeights(ctx, map[string]int{"stable": 50, "canary": 50}); !errors.Is(err, gateway.ErrNotRecorded) {
		t.Fatalf("SetWeights = %v, want ErrNotRecorded", err)
	}
	if _, err := e.router.SetGate(ctx, gateway.Gate{On: true}); !errors.Is(err, gateway.ErrNotRecorded) {
		t.Fatalf("SetGate = %v, want ErrNotRecorded", err)
	}
	if got := e.get(t).GetResourceVersion(); got != rv {
		t.Fatalf("the route changed (resourceVersion %s → %s) although nothing was recorded", rv, got)
	}
}

// A write between the router's read and its apply is never overwritten:
// the apply is conditioned on the resourceVersion read, the router reads
// again, and records again only if what it applies changed.
func TestKubeConcurrentEdit(t *testing.T) {
	e := setup(t)
	ctx := cause("canary")
	edits := 0
	edit := func(patch string) func(context.Context) {
		return func(ctx context.Context) {
			if edits > 0 {
				return
			}
			edits++
			if _, err := e.admin.Patch(ctx, "countersign", types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "someone"}); err != nil {
				t.Errorf("concurrent edit: %v", err)
			}
		}
	}

	// A label: the change is the same, recorded once.
	e.rec.hook = edit(`{"metadata":{"labels":{"edited":"yes"}}}`)
	if err := e.router.SetWeights(ctx, map[string]int{"stable": 90, "canary": 10}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.rec.events()); n != 1 {
		t.Fatalf("%d events for one change, want 1", n)
	}
	obj := e.get(t)
	if obj.GetLabels()["edited"] != "yes" || refWeights(t, obj, 1)["countersign-node-canary"] != 10 {
		t.Fatalf("after a concurrent label edit: labels %v, weights %v", obj.GetLabels(), refWeights(t, obj, 1))
	}

	// The rules themselves: re-read, recorded again, and the edit kept.
	edits = 0
	rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
	rules[1].(map[string]any)["matches"] = []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/v1"}}}
	patch := fmt.Sprintf(`{"spec":{"rules":%s}}`, mustJSON(t, rules))
	e.rec.hook = edit(patch)
	if err := e.router.SetWeights(ctx, map[string]int{"stable": 50, "canary": 50}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.rec.events()); n != 3 {
		t.Fatalf("%d events, want 3: the change was recorded again after the rules changed", n)
	}
	obj = e.get(t)
	rules, _, _ = unstructured.NestedSlice(obj.Object, "spec", "rules")
	path, _, _ := unstructured.NestedString(rules[1].(map[string]any)["matches"].([]any)[0].(map[string]any), "path", "value")
	if path != "/v1" || refWeights(t, obj, 1)["countersign-node-canary"] != 50 {
		t.Fatalf("after a concurrent rules edit: path %q, weights %v", path, refWeights(t, obj, 1))
	}
}

// The ServiceAccount holds exactly the contract's verbs: it cannot update,
// delete or create routes, so the router cannot do more than patch.
func TestKubeServiceAccountVerbs(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	sa := e.router.res
	obj := e.get(t)
	if _, err := sa.Update(ctx, obj, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("update as the ServiceAccount: %v, want forbidden", err)
	}
	if err := sa.Delete(ctx, "countersign", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("delete as the ServiceAccount: %v, want forbidden", err)
	}
	if _, err := sa.List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list as the ServiceAccount: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
