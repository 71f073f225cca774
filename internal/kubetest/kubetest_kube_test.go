//go:build kube

package kubetest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/countersign/countersign/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// eventually polls cond every 100 ms for up to d; it fails t with the last
// state cond described.
func eventually(t *testing.T, d time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	last := ""
	for {
		ok, state, err := cond(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s; last state: %s", what, d, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestDeploymentPodsRunReadyThenScaleToZero(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "deploy")
	ctx := t.Context()
	labels := map[string]string{"app.kubernetes.io/name": "countersign", "countersign.dev/pool": "stable"}
	replicas := int32(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign-node-stable", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "node",
					Image: "registry.example/countersign@sha256:" + strings.Repeat("ab", 32),
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 7300}},
				}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	selector := "countersign.dev/pool=stable"
	eventually(t, 60*time.Second, "2 Running+Ready pods", func(ctx context.Context) (bool, string, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, "", err
		}
		ready := 0
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s:%s/ready=%t/node=%s", p.Name, p.Status.Phase, podReady(&p), p.Spec.NodeName))
			if p.Status.Phase == corev1.PodRunning && podReady(&p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == 2 && len(pods.Items) == 2, strings.Join(states, " "), nil
	})
	// kubectl (1.32, skewed against 1.37) must agree with the client.
	out, err := c.Kubectl(ctx, "-n", ns, "rollout", "status", "deployment/countersign-node-stable", "--timeout=60s")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "successfully rolled out") {
		t.Errorf("rollout status = %q, want successfully rolled out", out)
	}

	if _, err := c.Kubectl(ctx, "-n", ns, "scale", "deployment/countersign-node-stable", "--replicas=0"); err != nil {
		t.Fatal(err)
	}
	// .status.replicas is omitted at 0: wait for the pods to be gone instead.
	eventually(t, 60*time.Second, "pods gone after scale to 0", func(ctx context.Context) (bool, string, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, "", err
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items)), nil
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func TestGatewayAPIHTTPRouteWeightPatch(t *testing.T) {
	c := kubetest.Shared(t)
	ctx := t.Context()
	if err := c.InstallGatewayAPI(ctx); err != nil {
		t.Fatal(err)
	}
	ns := c.Namespace(t, "route")
	gw, err := gatewayclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	weight := func(w int32) *int32 { return &w }
	backend := func(name string, w int32) gatewayv1.HTTPBackendRef {
		port := gatewayv1.PortNumber(7300)
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: &port},
			Weight:                 weight(w),
		}}
	}
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				backend("countersign-node-stable", 100), backend("countersign-node-canary", 0),
			}}},
		},
	}
	if _, err := gw.GatewayV1().HTTPRoutes(ns).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`[{"op":"test","path":"/spec/rules/0/backendRefs/1/name","value":"countersign-node-canary"},
		{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":90},
		{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":10}]`)
	if _, err := gw.GatewayV1().HTTPRoutes(ns).Patch(ctx, "countersign", types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := gw.GatewayV1().HTTPRoutes(ns).Get(ctx, "countersign", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int32{"countersign-node-stable": 90, "countersign-node-canary": 10}
	refs := got.Spec.Rules[0].BackendRefs
	if len(refs) != 2 {
		t.Fatalf("backendRefs = %+v, want 2", refs)
	}
	for _, r := range refs {
		if r.Weight == nil || *r.Weight != want[string(r.Name)] {
			t.Errorf("backendRef %s weight = %v, want %d", r.Name, r.Weight, want[string(r.Name)])
		}
	}
	// A second install on the same cluster is a no-op.
	if err := c.InstallGatewayAPI(ctx); err != nil {
		t.Errorf("second InstallGatewayAPI: %v", err)
	}
}

func TestServiceAccountRBAC(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "rbac")
	ctx := t.Context()
	cfg, kubeconfig, err := c.ServiceAccountConfig(ctx, ns, "reader")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("list pods without a Role: err = %v, want Forbidden", err)
	}

	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}},
	}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}},
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The RBAC authorizer reads Roles through an informer: allow it a moment.
	eventually(t, 10*time.Second, "list pods allowed by the Role", func(ctx context.Context) (bool, string, error) {
		_, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsForbidden(err) {
			return false, "", err
		}
		return err == nil, fmt.Sprint(err), nil
	})

	// The kubeconfig file authenticates as the same ServiceAccount, and the
	// Role grants nothing beyond pods.
	fileCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := kubernetes.NewForConfig(fileCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fromFile.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list pods with %s: %v", kubeconfig, err)
	}
	if _, err := fromFile.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list deployments with %s: err = %v, want Forbidden", kubeconfig, err)
	}
	if _, err := fromFile.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list pods in another namespace: err = %v, want Forbidden", err)
	}
}
