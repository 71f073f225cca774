//go:build kube

package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// digest0 is the image the manifests start the pools with.
var digest0 = strings.Repeat("0f", 32)

// contractRole is the control plane's Role of the Kubernetes contract,
// verb for verb: the fleet must work with exactly this.
var contractRole = []rbacv1.PolicyRule{
	{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "patch"}},
	{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get", "list", "watch", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "patch"}},
	{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes"}, Verbs: []string{"get", "list", "watch", "patch"}},
}

// env is one test's namespace with the pools the manifests would create
// and a client authenticated as the control plane's ServiceAccount.
type env struct {
	c     *kubetest.Cluster
	ns    string
	admin kubernetes.Interface
	sa    kubernetes.Interface // bound to contractRole only
}

func setup(t *testing.T, pools ...string) *env {
	t.Helper()
	c := kubetest.Shared(t)
	ns := c.Namespace(t, "fleet")
	ctx := t.Context()
	e := &env{c: c, ns: ns, admin: c.Client}
	for _, pool := range pools {
		if _, err := e.admin.AppsV1().Deployments(ns).Create(ctx, poolDeployment(ns, pool), metav1.CreateOptions{FieldManager: "manifests"}); err != nil {
			t.Fatal(err)
		}
	}
	rbac := e.admin.RbacV1()
	if _, err := rbac.Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "countersign-control"}, Rules: contractRole}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign-control"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "countersign-control"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "countersign-control", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, kubeconfig, err := c.ServiceAccountConfig(ctx, ns, "countersign-control")
	if err != nil {
		t.Fatal(err)
	}
	// The CLI's path: a kubeconfig file.
	if e.sa, _, err = ClientFromKubeconfig(kubeconfig, ""); err != nil {
		t.Fatal(err)
	}
	// RBAC reaches the authorizer through an informer: wait for the grant.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := e.sa.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("the ServiceAccount cannot list Deployments: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And nothing more: the fleet must never need create on Deployments.
	_, err = e.sa.AppsV1().Deployments(ns).Create(ctx, poolDeployment(ns, "extra"), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the ServiceAccount may create Deployments (err %v): the test would not prove the Role suffices", err)
	}
	return e
}

// poolDeployment is a pool as the manifests create it: rolling updates
// that keep every old pod until a new one is available.
func poolDeployment(ns, pool string) *appsv1.Deployment {
	labels := map[string]string{
		"app.kubernetes.io/name": "countersign", "app.kubernetes.io/part-of": "countersign",
		"app.kubernetes.io/component": "node", labelPool: pool,
	}
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign-node-" + pool, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](0),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{
				"app.kubernetes.io/name": "countersign", "app.kubernetes.io/component": "node", labelPool: pool,
			}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name: "node", Image: "registry.example/countersign@sha256:" + digest0, Args: []string{"node"},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: Port}},
					}},
				},
			},
		},
	}
}

// fleetFor is a fleet acting as the ServiceAccount.
func (e *env) fleetFor(t *testing.T, readyTimeout time.Duration, customize func(string, fleet.Release, *corev1ac.PodTemplateSpecApplyConfiguration) error) *Fleet {
	t.Helper()
	f, err := New(Config{
		Client: e.sa, Namespace: e.ns, ReadyTimeout: readyTimeout, PollInterval: 100 * time.Millisecond,
		Endpoint:  func(pool string) string { return "http://" + pool + ".test:7300" },
		Customize: customize,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// release is a release of a made-up image pinned by digest, with a flags
// file when flags is not empty.
func release(t *testing.T, id, digest, flags string) fleet.Release {
	rel := fleet.Release{
		ID: id, Artifact: "registry.example/countersign@sha256:" + digest, SHA256: digest,
		Args: []string{"node", "--pool={{.Pool}}", "--instance={{.Instance}}", "--flags={{.FlagsFile}}"},
		Env:  []string{"LOG_LEVEL=info"}, SchemaMin: 1, SchemaMax: 2,
	}
	if flags != "" {
		rel.FlagsFile = filepath.Join(t.TempDir(), id+".flagd.json")
		if err := os.WriteFile(rel.FlagsFile, []byte(flags), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return rel
}

func (e *env) deployment(t *testing.T, pool string) *appsv1.Deployment {
	t.Helper()
	d, err := e.admin.AppsV1().Deployments(e.ns).Get(t.Context(), "countersign-node-"+pool, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pods returns the pool's pods.
func (e *env) pods(t *testing.T, pool string) []corev1.Pod {
	t.Helper()
	l, err := e.admin.CoreV1().Pods(e.ns).List(t.Context(), metav1.ListOptions{LabelSelector: labelPool + "=" + pool})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// versions maps every Deployment, ReplicaSet and ConfigMap of the
// namespace to its resourceVersion.
func (e *env) versions(t *testing.T) map[string]string {
	t.Helper()
	ctx, out := t.Context(), map[string]string{}
	deps, err := e.admin.AppsV1().Deployments(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		out["Deployment/"+d.Name] = written(&d.ObjectMeta) + fmt.Sprintf(" replicas=%v", *d.Spec.Replicas)
	}
	rss, err := e.admin.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rss.Items {
		out["ReplicaSet/"+r.Name] = written(&r.ObjectMeta)
	}
	cms, err := e.admin.CoreV1().ConfigMaps(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cms.Items {
		out["ConfigMap/"+c.Name] = c.ResourceVersion
	}
	return out
}

// written is what a write of ours to a Deployment or ReplicaSet changes:
// its generation (the spec), labels, annotations and our field manager's
// entries. Not the resourceVersion: the controllers keep updating status
// (observedGeneration, conditions, replica counts) after a rollout, which
// made "nothing changed" checks flaky.
func written(m *metav1.ObjectMeta) string {
	var ours []string
	for _, f := range m.ManagedFields {
		if f.Manager == DefaultFieldManager {
			ours = append(ours, fmt.Sprintf("%s@%v", f.Operation, f.Time))
		}
	}
	return fmt.Sprintf("gen=%d labels=%v annotations=%v managed=%v", m.Generation, m.Labels, m.Annotations, ours)
}

// revisionN returns revision n of a history.
func revisionN(t *testing.T, h []fleet.Revision, n int) fleet.Revision {
	t.Helper()
	for _, r := range h {
		if r.Number == n {
			return r
		}
	}
	t.Fatalf("no revision %d in %+v", n, h)
	return fleet.Revision{}
}

// replicaSet returns the pool's ReplicaSet of revision n.
func (e *env) replicaSet(t *testing.T, pool string, n int) *appsv1.ReplicaSet {
	t.Helper()
	f := e.fleetFor(t, time.Second, nil)
	s, err := f.load(t.Context(), pool)
	if err != nil {
		t.Fatal(err)
	}
	_, rs, err := s.find(n)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func withCause(ctx context.Context, step string) context.Context {
	return fleet.WithCause(ctx, fleet.Cause{Incident: "INC-42", RunID: "run-1", Step: step, Actor: "alice"})
}
