//go:build kube

package manifests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/kubetest"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

func init() { runTests = kubetest.Main }

// operatorManager is the field manager of the operator's
// `kubectl apply --server-side` (docs/kubernetes.md).
const operatorManager = "countersign-deploy"

var testbedOverlays = []overlay{overlays[0], overlays[1]} // dev, then testbed on top of it

var applied struct {
	once sync.Once
	err  error
}

// testbed applies overlay dev and then overlay testbed (Gateway API CRDs
// first) to the shared cluster, once per test binary, as an operator
// does: server-side, strict field validation, field manager
// countersign-deploy.
func testbed(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Shared(t)
	applied.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := c.InstallGatewayAPI(ctx); err != nil {
			applied.err = fmt.Errorf("install Gateway API CRDs: %w", err)
			return
		}
		// The control plane's claim: the test bed has no provisioner.
		if _, applied.err = c.BindClaim(ctx, Namespace, "countersign-control", "2Gi"); applied.err != nil {
			return
		}
		for _, o := range testbedOverlays {
			if applied.err = applyRendered(ctx, c, render(t, o), false); applied.err != nil {
				return
			}
		}
	})
	if applied.err != nil {
		t.Fatalf("applying the testbed overlay: %v", applied.err)
	}
	return c
}

// applyRendered server-side applies what the manifests test checked (not a
// second rendering) and returns kubectl's error, conflicts included.
func applyRendered(ctx context.Context, c *kubetest.Cluster, r *rendered, force bool, extra ...string) error {
	f, err := os.CreateTemp(c.Dir, "overlay-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(r.yaml); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	args := []string{"apply", "--server-side", "--field-manager=" + operatorManager, "--validate=strict", "-f", f.Name()}
	if force {
		args = append(args, "--force-conflicts")
	}
	args = append(args, extra...)
	if _, err := c.Kubectl(ctx, args...); err != nil {
		return fmt.Errorf("%s: %w", r.dir, err)
	}
	return nil
}

func TestTestbedIsAccepted(t *testing.T) {
	c := testbed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, o := range testbedOverlays {
		r := render(t, o)
		f := filepath.Join(t.TempDir(), "overlay.yaml")
		if err := os.WriteFile(f, r.yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := c.Kubectl(ctx, "get", "-f", f, "-o", "name")
		if err != nil {
			t.Fatalf("%s: objects missing after apply: %v", o.dir, err)
		}
		if got := len(strings.Fields(string(out))); got != len(r.all) {
			t.Errorf("%s: the API server holds %d of the %d objects:\n%s", o.dir, got, len(r.all), out)
		}
	}
	// Re-applying is a no-op, not a conflict: the operator owns what it set.
	if err := applyRendered(ctx, c, render(t, overlays[1]), false); err != nil {
		t.Errorf("re-applying the testbed overlay: %v", err)
	}
}

// TestEveryOverlayIsAccepted: the overlays and test compositions the
// cluster does not run (production, gateway-api, the pkcs11 and kafka
// components) pass the API server's strict validation and admission, as
// a server-side dry run over the applied testbed.
func TestEveryOverlayIsAccepted(t *testing.T) {
	c := testbed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, o := range overlays {
		if slices.ContainsFunc(testbedOverlays, func(x overlay) bool { return x.dir == o.dir }) {
			continue
		}
		t.Run(o.dir, func(t *testing.T) {
			if err := applyRendered(ctx, c, render(t, o), true, "--dry-run=server"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDeploymentsRollOut(t *testing.T) {
	c := testbed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for _, o := range testbedOverlays {
		for _, d := range render(t, o).deployments {
			if seen[d.Name] {
				continue
			}
			seen[d.Name] = true
			if err := waitRolledOut(ctx, c.Client, Namespace, d.Name); err != nil {
				t.Errorf("Deployment %s: %v\n%s", d.Name, err, diagnose(context.WithoutCancel(ctx), c.Client, Namespace))
			}
		}
	}
	// Each node pod carries its release: the annotations reach the pods.
	pods, err := c.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelComponent + "=node"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatal("no node pods")
	}
	for _, p := range pods.Items {
		if p.Annotations[annRelease] == "" || p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: release %q, node %q, phase %s; want a release annotation, scheduled and Running",
				p.Name, p.Annotations[annRelease], p.Spec.NodeName, p.Status.Phase)
		}
	}
}

// TestPodSecurityIsEnforced makes the rollout's evidence count: the
// namespace really refuses a pod below the restricted standard, so the
// pods that rolled out meet it.
func TestPodSecurityIsEnforced(t *testing.T) {
	c := testbed(t)
	// Valid for the API server, but with no securityContext: root allowed,
	// privilege escalation allowed, capabilities kept, no seccomp profile.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unrestricted-probe", Namespace: Namespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "countersign"}}},
	}
	_, err := c.Client.CoreV1().Pods(Namespace).Create(t.Context(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `PodSecurity "restricted`) {
		t.Fatalf("pod without a securityContext in namespace %s: err %v, want Forbidden by PodSecurity \"restricted\"", Namespace, err)
	}
}

// waitRolledOut waits as `kubectl rollout status` does: the controller saw
// the latest spec and every replica is updated, ready and available.
func waitRolledOut(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	var last string
	for {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if done, why := rolledOut(d); done {
				return nil
			} else {
				last = why
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not rolled out: %s", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func rolledOut(d *appsv1.Deployment) (bool, string) {
	want := replicasOf(d.Spec.Replicas)
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return false, fmt.Sprintf("observed generation %d < %d", s.ObservedGeneration, d.Generation)
	case int(s.UpdatedReplicas) != want || int(s.ReadyReplicas) != want || int(s.AvailableReplicas) != want || int(s.Replicas) != want:
		return false, fmt.Sprintf("replicas %d updated %d ready %d available %d, want %d", s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, want)
	}
	return true, ""
}

// diagnose says why pods are missing: ReplicaSet conditions (PodSecurity
// refusals show there) and the namespace's warning events.
func diagnose(ctx context.Context, cs kubernetes.Interface, ns string) string {
	var b strings.Builder
	if rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, rs := range rss.Items {
			for _, c := range rs.Status.Conditions {
				fmt.Fprintf(&b, "ReplicaSet %s: %s %s: %s\n", rs.Name, c.Type, c.Reason, c.Message)
			}
		}
	}
	if evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err == nil {
		for _, e := range evs.Items {
			fmt.Fprintf(&b, "event %s/%s: %s: %s\n", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

// poolPods lists the pods of a pool.
func poolPods(ctx context.Context, cs kubernetes.Interface, pool string) ([]corev1.Pod, error) {
	sel := labels.Set{labelComponent: "node", labelPool: pool}.String()
	l, err := cs.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}
