//go:build kube

package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// controlManager is the control plane's field manager (contract).
const controlManager = "countersign-control"

var httpRoutes = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// asControl returns clients authenticated as the control plane's
// ServiceAccount (a TokenRequest token, as the pod would get).
func asControl(t *testing.T) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	c := testbed(t)
	cfg, _, err := c.ServiceAccountConfig(t.Context(), Namespace, "countersign-control")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, dyn
}

type access struct {
	ns, group, resource, sub, verb string
}

func (a access) String() string {
	r := a.resource
	if a.sub != "" {
		r += "/" + a.sub
	}
	if a.group != "" {
		r = a.group + "/" + r
	}
	ns := a.ns
	if ns == "" {
		ns = "(cluster)"
	}
	return fmt.Sprintf("%s %s in %s", a.verb, r, ns)
}

func can(t *testing.T, cs kubernetes.Interface, a access) bool {
	t.Helper()
	rev, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: a.ns, Group: a.group, Resource: a.resource, Subresource: a.sub, Verb: a.verb,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview %s: %v", a, err)
	}
	return rev.Status.Allowed
}

func TestControlRoleGrantsTheContract(t *testing.T) {
	cs, _ := asControl(t)
	for gr, verbs := range contractRules {
		group, resource, _ := strings.Cut(gr, "/")
		for _, v := range verbs {
			if a := (access{ns: Namespace, group: group, resource: resource, verb: v}); !can(t, cs, a) {
				t.Errorf("the control plane may not %s", a)
			}
		}
	}
	// The API server's own view of the ServiceAccount's rights in the
	// namespace equals the contract, once the rights every ServiceAccount
	// has (self reviews, discovery, cluster trust bundles: those of a
	// ServiceAccount bound to nothing) are set aside.
	baseline, _, err := testbed(t).ServiceAccountConfig(t.Context(), Namespace, "rbac-baseline")
	if err != nil {
		t.Fatal(err)
	}
	bcs, err := kubernetes.NewForConfig(baseline)
	if err != nil {
		t.Fatal(err)
	}
	got, base := effectiveRules(t, cs), effectiveRules(t, bcs)
	for k, verbs := range got {
		got[k] = slices.DeleteFunc(verbs, func(v string) bool { return slices.Contains(base[k], v) })
		if len(got[k]) == 0 {
			delete(got, k)
		}
	}
	if want := sortedContract(); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("effective rules of countersign-control in %s beyond any ServiceAccount's\n got %v\nwant %v", Namespace, got, want)
	}
}

// effectiveRules is what SelfSubjectRulesReview says the client may do in
// the namespace: "group/resource" → sorted verbs.
func effectiveRules(t *testing.T, cs kubernetes.Interface) map[string][]string {
	t.Helper()
	rev, err := cs.AuthorizationV1().SelfSubjectRulesReviews().Create(t.Context(), &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: Namespace},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Status.Incomplete {
		t.Fatalf("SelfSubjectRulesReview incomplete: %s", rev.Status.EvaluationError)
	}
	out := map[string][]string{}
	for _, r := range rev.Status.ResourceRules {
		if len(r.ResourceNames) > 0 {
			t.Errorf("rule %s names resources; the contract never does", mustJSON(r))
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				for _, v := range r.Verbs {
					if !slices.Contains(out[k], v) {
						out[k] = append(out[k], v)
					}
				}
				slices.Sort(out[k])
			}
		}
	}
	return out
}

func TestControlRoleDeniesEverythingElse(t *testing.T) {
	cs, _ := asControl(t)
	other := testbed(t).Namespace(t, "rbac-other")
	ns := Namespace
	denied := []access{
		// Workloads: move between revisions, never create or destroy.
		{ns, "apps", "deployments", "", "create"}, {ns, "apps", "deployments", "", "delete"},
		{ns, "apps", "deployments", "", "update"}, {ns, "apps", "deployments", "", "deletecollection"},
		{ns, "apps", "deployments", "scale", "update"}, {ns, "apps", "deployments", "scale", "patch"},
		{ns, "apps", "replicasets", "", "create"}, {ns, "apps", "replicasets", "", "delete"}, {ns, "apps", "replicasets", "", "update"},
		{ns, "apps", "statefulsets", "", "create"}, {ns, "apps", "daemonsets", "", "create"}, {ns, "batch", "jobs", "", "create"},
		// Pods: observe only; no exec, logs, eviction or deletion.
		{ns, "", "pods", "", "create"}, {ns, "", "pods", "", "delete"}, {ns, "", "pods", "", "patch"},
		{ns, "", "pods", "", "update"}, {ns, "", "pods", "", "deletecollection"},
		{ns, "", "pods", "exec", "create"}, {ns, "", "pods", "attach", "create"}, {ns, "", "pods", "portforward", "create"},
		{ns, "", "pods", "log", "get"}, {ns, "", "pods", "eviction", "create"}, {ns, "", "pods", "ephemeralcontainers", "patch"},
		// Secrets and identities.
		{ns, "", "secrets", "", "get"}, {ns, "", "secrets", "", "list"}, {ns, "", "secrets", "", "watch"},
		{ns, "", "secrets", "", "create"}, {ns, "", "secrets", "", "patch"},
		{ns, "", "serviceaccounts", "", "get"}, {ns, "", "serviceaccounts", "token", "create"},
		{ns, "", "serviceaccounts", "", "impersonate"},
		// Config it does not own.
		{ns, "", "configmaps", "", "delete"}, {ns, "", "configmaps", "", "update"}, {ns, "", "configmaps", "", "deletecollection"},
		{ns, "", "services", "", "patch"}, {ns, "", "services", "", "update"}, {ns, "", "services", "", "create"}, {ns, "", "services", "", "delete"},
		{ns, "", "endpoints", "", "patch"}, {ns, "discovery.k8s.io", "endpointslices", "", "patch"},
		{ns, "networking.k8s.io", "networkpolicies", "", "patch"}, {ns, "networking.k8s.io", "networkpolicies", "", "delete"},
		{ns, "policy", "poddisruptionbudgets", "", "patch"}, {ns, "policy", "poddisruptionbudgets", "", "delete"},
		{ns, "", "events", "", "create"},
		// Routing: move weights on the existing route, nothing more.
		{ns, "gateway.networking.k8s.io", "httproutes", "", "create"}, {ns, "gateway.networking.k8s.io", "httproutes", "", "delete"},
		{ns, "gateway.networking.k8s.io", "httproutes", "", "update"}, {ns, "gateway.networking.k8s.io", "gateways", "", "patch"},
		{ns, "gateway.networking.k8s.io", "gateways", "", "get"}, {ns, "gateway.networking.k8s.io", "referencegrants", "", "create"},
		// No escalation through RBAC.
		{ns, "rbac.authorization.k8s.io", "roles", "", "create"}, {ns, "rbac.authorization.k8s.io", "roles", "", "patch"},
		{ns, "rbac.authorization.k8s.io", "roles", "", "escalate"}, {ns, "rbac.authorization.k8s.io", "roles", "", "bind"},
		{ns, "rbac.authorization.k8s.io", "rolebindings", "", "create"}, {ns, "rbac.authorization.k8s.io", "rolebindings", "", "patch"},
		// Nothing cluster-scoped.
		{"", "", "nodes", "", "list"}, {"", "", "nodes", "", "get"}, {"", "", "namespaces", "", "get"}, {"", "", "namespaces", "", "list"},
		{"", "", "namespaces", "", "create"}, {"", "", "namespaces", "", "delete"}, {"", "", "persistentvolumes", "", "list"},
		{"", "rbac.authorization.k8s.io", "clusterroles", "", "create"}, {"", "rbac.authorization.k8s.io", "clusterroles", "", "bind"},
		{"", "rbac.authorization.k8s.io", "clusterroles", "", "escalate"}, {"", "rbac.authorization.k8s.io", "clusterrolebindings", "", "create"},
		{"", "apiextensions.k8s.io", "customresourcedefinitions", "", "get"}, {"", "apiextensions.k8s.io", "customresourcedefinitions", "", "create"},
		{"", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "create"},
		{"", "certificates.k8s.io", "certificatesigningrequests", "", "create"},
		{"", "", "users", "", "impersonate"}, {"", "", "groups", "", "impersonate"},
		// Every contract verb across all namespaces at once.
		{"", "apps", "deployments", "", "list"}, {"", "", "pods", "", "list"}, {"", "", "configmaps", "", "list"},
	}
	// Every contract verb in any other namespace.
	for _, n := range []string{other, "default", "kube-system"} {
		for gr, verbs := range contractRules {
			group, resource, _ := strings.Cut(gr, "/")
			for _, v := range verbs {
				denied = append(denied, access{n, group, resource, "", v})
			}
		}
	}
	for _, a := range denied {
		if can(t, cs, a) {
			t.Errorf("the control plane may %s; the contract denies it", a)
		}
	}
	// And real calls are refused, not only reviews.
	ctx := t.Context()
	for what, call := range map[string]func() error{
		"delete Deployment countersign-node-canary": func() error {
			return cs.AppsV1().Deployments(ns).Delete(ctx, "countersign-node-canary", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		},
		"list Secrets": func() error { _, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err },
		"create Pod": func() error {
			_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"patch Service countersign-node-stable": func() error {
			_, err := cs.CoreV1().Services(ns).Patch(ctx, "countersign-node-stable", types.MergePatchType,
				[]byte(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"create RoleBinding": func() error {
			_, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "countersign-control", Namespace: ns}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		},
		"list Deployments in another namespace": func() error {
			_, err := cs.AppsV1().Deployments(other).List(ctx, metav1.ListOptions{})
			return err
		},
		"list Nodes": func() error { _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); return err },
	} {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("as the control plane, %s: err %v, want Forbidden", what, err)
		}
	}
}

// TestControlCanDoItsJob makes the calls the control plane makes, as its
// ServiceAccount: ship a release into the canary pool by server-side apply
// (field manager countersign-control, force), create the release's flags
// ConfigMap, mark the new ReplicaSet good, move HTTPRoute weights. Then
// the operator's re-apply conflicts on exactly what the control plane
// took, as docs/kubernetes.md says, until the operator forces it back.
func TestControlCanDoItsJob(t *testing.T) {
	c := testbed(t)
	cs, dyn := asControl(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	apply := metav1.ApplyOptions{FieldManager: controlManager, Force: true}

	if _, err := cs.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("list Deployments: %v", err)
	}
	w, err := cs.CoreV1().Pods(Namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch Pods: %v", err)
	}
	w.Stop()

	const release, digest = "v2.0.0-rc.1", "2222222222222222222222222222222222222222222222222222222222222222"
	cm := flagsConfigMapName(release)
	if _, err := cs.CoreV1().ConfigMaps(Namespace).Apply(ctx, corev1ac.ConfigMap(cm, Namespace).
		WithLabels(map[string]string{labelName: "countersign", labelPartOf: "countersign", labelComponent: "node"}).
		WithData(map[string]string{flagsKey: `{"flags":{}}`}), apply); err != nil {
		t.Fatalf("create ConfigMap %s by server-side apply: %v", cm, err)
	}
	cause := map[string]string{"countersign.dev/incident": "INC-1", "countersign.dev/run-id": "run-1",
		"countersign.dev/step": "canary", "countersign.dev/actor": "rbac-test", "kubernetes.io/change-cause": "rbac test: ship " + release}
	dep := appsv1ac.Deployment("countersign-node-canary", Namespace).WithAnnotations(cause).
		WithSpec(appsv1ac.DeploymentSpec().WithReplicas(1).WithTemplate(corev1ac.PodTemplateSpec().
			WithAnnotations(map[string]string{annRelease: release, annSchemaMin: "3", annSchemaMax: "3",
				annArtifactSHA256: digest, annFlagsConfigMap: cm}).
			WithSpec(corev1ac.PodSpec().
				WithContainers(corev1ac.Container().WithName("node").WithImage("registry.example.com/countersign@sha256:" + digest)).
				WithVolumes(corev1ac.Volume().WithName("flags").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(cm))))))
	if _, err := cs.AppsV1().Deployments(Namespace).Apply(ctx, dep, apply); err != nil {
		t.Fatalf("ship %s into the canary pool by server-side apply: %v", release, err)
	}
	if err := waitRolledOut(ctx, cs, Namespace, "countersign-node-canary"); err != nil {
		t.Fatalf("canary rollout: %v\n%s", err, diagnose(context.WithoutCancel(ctx), c.Client, Namespace))
	}
	rss, err := cs.AppsV1().ReplicaSets(Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelComponent + "=node," + labelPool + "=canary"})
	if err != nil {
		t.Fatalf("list ReplicaSets: %v", err)
	}
	var newRS string
	for _, rs := range rss.Items {
		if rs.Spec.Template.Annotations[annRelease] == release && replicasOf(rs.Spec.Replicas) == 1 {
			newRS = rs.Name
		}
	}
	if newRS == "" {
		t.Fatalf("no canary ReplicaSet runs %s", release)
	}
	good := fmt.Sprintf(`{"metadata":{"annotations":{"countersign.dev/known-good":%q}}}`, time.Now().UTC().Format(time.RFC3339))
	if _, err := cs.AppsV1().ReplicaSets(Namespace).Patch(ctx, newRS, types.MergePatchType, []byte(good), metav1.PatchOptions{FieldManager: controlManager}); err != nil {
		t.Fatalf("mark ReplicaSet %s good: %v", newRS, err)
	}
	pods, err := poolPods(ctx, cs, "canary")
	if err != nil || len(pods) == 0 {
		t.Fatalf("canary pods: %d, %v", len(pods), err)
	}

	route := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": "countersign", "namespace": Namespace, "annotations": map[string]any{
			annWeights: `{"canary":10,"stable":90}`, "countersign.dev/step": "canary"}},
		"spec": map[string]any{"parentRefs": []any{map[string]any{"name": "countersign"}}, "rules": []any{map[string]any{"backendRefs": []any{
			map[string]any{"name": "countersign-node-stable", "port": int64(7300), "weight": int64(90)},
			map[string]any{"name": "countersign-node-canary", "port": int64(7300), "weight": int64(10)},
		}}}},
	}}
	if _, err := dyn.Resource(httpRoutes).Namespace(Namespace).Apply(ctx, "countersign", route, apply); err != nil {
		t.Fatalf("move HTTPRoute weights: %v", err)
	}
	back, err := dyn.Resource(httpRoutes).Namespace(Namespace).Get(ctx, "countersign", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(back.Object["spec"])
	if !strings.Contains(string(b), `"name":"countersign-node-canary","port":7300,"weight":10`) {
		t.Errorf("HTTPRoute spec after the weight change: %s", b)
	}

	// The operator's re-apply now conflicts on the fields the control plane
	// owns, instead of silently rolling the release back.
	err = applyRendered(ctx, c, render(t, overlays[1]), false)
	if err == nil || !strings.Contains(err.Error(), "conflict") || !strings.Contains(err.Error(), controlManager) {
		t.Fatalf("operator re-apply after a control-plane release: err %v, want a conflict with manager %s", err, controlManager)
	}
	// Re-applying everything but the pools is how the operator changes the
	// rest (docs/kubernetes.md): no conflict, and the release stays.
	if err := applyRendered(ctx, c, render(t, overlays[1]), false, "--selector=countersign.dev/control-managed!=true"); err != nil {
		t.Fatalf("operator re-apply without the control-managed pools: %v", err)
	}
	if d, err := c.Client.AppsV1().Deployments(Namespace).Get(ctx, "countersign-node-canary", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if got := d.Spec.Template.Annotations[annRelease]; got != release {
		t.Fatalf("canary runs %q after the operator's re-apply, want the control plane's %s", got, release)
	}
	// Forcing takes them back (and re-deploys the manifests' release).
	if err := applyRendered(ctx, c, render(t, overlays[1]), true); err != nil {
		t.Fatalf("operator re-apply with --force-conflicts: %v", err)
	}
	if err := waitRolledOut(ctx, c.Client, Namespace, "countersign-node-canary"); err != nil {
		t.Fatalf("canary back on the manifests' release: %v", err)
	}
}
