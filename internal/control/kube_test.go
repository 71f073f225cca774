//go:build kube

package control_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/fleet/kube"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/kubetest"
	"github.com/countersign/countersign/internal/kubetest/podrun"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
	"github.com/countersign/countersign/internal/traffic"
	"github.com/countersign/countersign/internal/traffic/httproute"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// The dev overlay's passphrase Secret (deploy/kubernetes/overlays/dev): the
// installation is made with it so the pods' soft keys open.
const devPassphrase = "countersign-dev-passphrase-not-secret"

const ns = "countersign"

var httpRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// TestKubeRollbackDrill runs the rollback playbook against a real
// Kubernetes control plane with the testbed manifests applied, PostgreSQL
// as the store and the dev machine's NATS as the queue: v1 stable, v2 into
// the canary with a fault that forges signatures, detection by the probes,
// containment, the playbook's 12 steps (the canary Deployment drained to 0
// with its pods gone, a rollback to v1's revision, HTTPRoute weights
// stepped 1 → 10 → 50 → 100 and read back), all as the control plane's
// ServiceAccount, whose Role denies everything else.
func TestKubeRollbackDrill(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	c := kubetest.Shared(t)
	if err := c.InstallGatewayAPI(ctx); err != nil {
		t.Fatal(err)
	}
	pg := pgtest.MustSchemaURL(t, "cs_kube")
	resetQueue(t)
	t.Setenv(install.PassphraseEnv, devPassphrase)

	// The installation: PostgreSQL store, dev tenant, probe identity (made
	// before the keys become the nodes' Secret).
	dir := t.TempDir()
	if _, err := install.Init(ctx, dir, install.Options{Store: pg, Dev: true, Passphrase: soft.NewPassphrase([]byte(devPassphrase)), ScryptN: 1 << 10}); err != nil {
		t.Fatal(err)
	}
	inst, err := install.Open(ctx, dir, install.OpenOptions{Migrate: true, Release: "test", Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := control.EnsureProbeIdentity(ctx, inst); err != nil {
		t.Fatal(err)
	}
	inst.Close()

	bin := buildBinary(t)
	applyManifests(t, ctx, c, dir, pg)

	// podrun runs the node pods KWOK marks Running.
	run, err := podrun.Start(ctx, podrun.Config{Client: c.Client, Namespace: ns,
		Selector:  "app.kubernetes.io/name=countersign,app.kubernetes.io/component=node",
		PoolLabel: "countersign.dev/pool", Binary: bin, Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop() })
	eps := map[string]string{}
	for _, p := range []string{control.PoolStable, control.PoolCanary} {
		if eps[p], err = run.ServiceURL(p); err != nil {
			t.Fatal(err)
		}
	}
	image := "countersign.test/countersign@sha256:" + run.Digest()

	// The control plane acts as its ServiceAccount only.
	saCfg, saKubeconfig, err := c.ServiceAccountConfig(ctx, ns, "countersign-control")
	if err != nil {
		t.Fatal(err)
	}
	saClient, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	saDyn, err := dynamic.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	checkRBAC(t, ctx, saClient)

	f, err := kube.New(kube.Config{Client: saClient, Namespace: ns, ReadyTimeout: 90 * time.Second,
		Endpoint: func(pool string) string { return eps[pool] }, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pools := map[string]httproute.Backend{
		control.PoolStable: {Service: "countersign-node-stable", Port: kube.Port},
		control.PoolCanary: {Service: "countersign-node-canary", Port: kube.Port},
	}
	// The manifests' own v1 pods, with the image pinned to the binary:
	// stable first, then the canary (its revision is the newest known good
	// one, so the rollback returns the canary to its own v1 revision).
	for _, p := range []string{control.PoolStable, control.PoolCanary} {
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"countersign.dev/artifact-sha256":%q}},"spec":{"containers":[{"name":"node","image":%q}]}}}}`, run.Digest(), image)
		if b, err := c.Kubectl(ctx, "patch", "deployment", "countersign-node-"+p, "-n", ns, "--type=strategic", "-p", patch); err != nil {
			t.Fatalf("pin the image of %s: %v\n%s", p, err, b)
		}
		kubeWait(t, ctx, "v1 serving in "+p, func() bool { return ready(eps[p]) })
		time.Sleep(1100 * time.Millisecond) // creation times one second apart
	}
	w, err := control.Start(ctx, control.Config{Dir: dir, ControlListen: "127.0.0.1:0", Drill: true,
		ProbeInterval: 200 * time.Millisecond, QueueURL: nats.DefaultURL, Logger: testLogger(t),
		Params: map[string]string{"canary_hold": "1s", "retry_after": "30s"},
		Fleet:  f,
		Router: func(rec gateway.Recorder) (traffic.Router, error) {
			return httproute.New(httproute.Config{Client: saDyn, Namespace: ns, Route: "countersign", Pools: pools,
				Maintenance: httproute.Backend{Service: "countersign-maintenance", Port: 8080}, Recorder: rec})
		},
		Pods: &control.PodSpec{Image: image},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close() // Close is idempotent: the CLI part closes it first

	// v1 known good in both pools; then v2 into the canary at 10%.
	st0, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st0 {
		if p.Release.ID != "v1" || p.Ready == 0 {
			t.Fatalf("pool %s = %+v, want v1 ready", p.Pool, p)
		}
		if err := f.MarkGood(ctx, p.Pool, p.Revision); err != nil {
			t.Fatal(err)
		}
	}
	// The probes may catch v2 before Deploy sets its weight: then the
	// weight stays at 0, where containment put it.
	v2, err := w.Deploy(ctx, control.ReleaseSpec{ID: "v2", Pool: control.PoolCanary, Weight: 10, Fault: "invalid-signatures"})
	if err != nil {
		t.Fatalf("deploy v2: %v", err)
	}

	// Detection and containment: the probes see forged signatures.
	var inc control.Incident
	kubeWait(t, ctx, "an incident on v2", func() bool {
		for _, i := range w.Incidents() {
			if i.Release == "v2" {
				inc = i
				return true
			}
		}
		return false
	})
	routeWeights(t, ctx, c, map[string]int{control.PoolStable: 100, control.PoolCanary: 0})

	// The plan names the exact API changes and changes nothing.
	before := canaryDeployment(t, ctx, c).ResourceVersion
	plan, err := w.PlanPlaybook(ctx, inc.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	planned := planLines(plan)
	for _, want := range []string{
		"Deployment countersign/countersign-node-canary spec.replicas: 1 → 0",
		"HTTPRoute countersign/countersign",
	} {
		if !slices.ContainsFunc(planned, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("plan lacks %q; plan:\n%s", want, strings.Join(planned, "\n"))
		}
	}
	if after := canaryDeployment(t, ctx, c).ResourceVersion; after != before {
		t.Errorf("planning changed the canary Deployment (resourceVersion %s → %s)", before, after)
	}

	// Watch the canary's pods while the playbook runs: isolate must leave none.
	podsGone := make(chan bool, 1)
	go watchDrain(ctx, c, podsGone)

	runID, err := w.StartPlaybook(ctx, inc.ID, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st playbook.Status
	kubeWait(t, ctx, "the rollback run to end", func() bool {
		st, err = w.Engine().Status(ctx, runID)
		return err == nil && (st.State == playbook.RunSucceeded || st.State == playbook.RunFailed || st.State == playbook.RunAborted || st.State == playbook.RunPaused)
	})
	if st.State != playbook.RunSucceeded {
		b, _ := json.MarshalIndent(st, "", "  ")
		t.Fatalf("run %s ended %s:\n%s", runID, st.State, b)
	}
	if len(st.Steps) != 12 {
		t.Errorf("run has %d steps, want 12", len(st.Steps))
	}
	select {
	case gone := <-podsGone:
		if !gone {
			t.Error("the canary's v2 pods were never all gone")
		}
	default:
		t.Error("the canary was never drained to 0 pods")
	}

	// Every change names its incident, run and step on the object.
	ann := canaryDeployment(t, ctx, c).Annotations
	if ann["countersign.dev/incident"] != inc.ID || ann["countersign.dev/run-id"] != runID || ann["countersign.dev/step"] == "" {
		t.Errorf("canary Deployment annotations %v, want incident %s and run %s", ann, inc.ID, runID)
	}
	// Rolled back to v1's revision of the canary, as a new revision.
	hist, err := f.History(ctx, control.PoolCanary)
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if last.Release.ID != "v1" || last.RollbackOf == 0 || last.Number <= v2.Number || !last.Good {
		t.Errorf("canary's last revision = %+v, want a good rollback to v1 after revision %d", last, v2.Number)
	}
	// The canary stages, read back from the HTTPRoute at each step, are in
	// the audit log in order; the route ends at canary 100.
	if got := canaryStages(t, ctx, w.Installation().Store); !slices.Equal(got, []int{1, 10, 50, 100}) {
		t.Errorf("canary weights recorded by the playbook = %v, want [1 10 50 100]", got)
	}
	routeWeights(t, ctx, c, map[string]int{control.PoolStable: 0, control.PoolCanary: 100})
	t.Logf("run %s: %d steps in %.1fs; canary history %d revisions", runID, len(st.Steps), st.ElapsedSeconds, len(hist))

	// The CLI drives the same cluster with a control plane of its own, as
	// the ServiceAccount (with the in-cluster one at 0 replicas, as
	// docs/kubernetes.md says), and its plan lists the API changes.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cli := []string{"playbook", "plan", "rollback", "--fleet", "kube", "--kubeconfig", saKubeconfig, "--namespace", ns,
		"--data", dir, "--image", image, "--nats", nats.DefaultURL, "--incident", inc.ID,
		"--pool-endpoint", "stable=" + eps[control.PoolStable], "--pool-endpoint", "canary=" + eps[control.PoolCanary]}
	// The control plane's pod waits for its volume: the test bed has no
	// provisioner, so give its claim one to bind (KWOK then runs the pod
	// as Ready without starting a container).
	pv, err := c.BindClaim(ctx, ns, "countersign-control", "2Gi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().PersistentVolumes().Delete(context.Background(), pv, metav1.DeleteOptions{})
	})
	// While the in-cluster control plane is ready, the CLI refuses to start
	// a second one beside it (two control planes would fight over the
	// pools and the route).
	waitControlReady(t, ctx, c, "a ready replica", func(n int32) bool { return n > 0 })
	out, err := exec.CommandContext(ctx, bin, cli...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "countersign-control has 1 ready replica(s)") {
		t.Errorf("CLI beside a ready in-cluster control plane: err %v, want a refusal naming it\n%s", err, out)
	}
	if b, err := c.Kubectl(ctx, "scale", "deployment", "countersign-control", "-n", ns, "--replicas=0"); err != nil {
		t.Fatalf("scale the in-cluster control plane to 0: %v\n%s", err, b)
	}
	waitControlReady(t, ctx, c, "no ready replica", func(n int32) bool { return n == 0 })
	out, err = exec.CommandContext(ctx, bin, cli...).CombinedOutput()
	if err != nil {
		t.Fatalf("countersign %s: %v\n%s", strings.Join(cli, " "), err, out)
	}
	for _, want := range []string{"plan of playbook rollback", "HTTPRoute countersign/countersign spec.rules[0].backendRefs"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("CLI plan lacks %q:\n%s", want, out)
		}
	}
}

// waitControlReady waits (60 s) until the in-cluster control plane's
// Deployment reports ready replicas that ok accepts.
func waitControlReady(t *testing.T, ctx context.Context, c *kubetest.Cluster, what string, ok func(int32) bool) {
	t.Helper()
	var last int32 = -1
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "countersign-control", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if last = d.Status.ReadyReplicas; ok(last) {
			return
		}
	}
	t.Fatalf("Deployment countersign-control: want %s, still %d ready after 60 s", what, last)
}

// checkRBAC proves the ServiceAccount holds the playbook's verbs and
// nothing else that matters.
func checkRBAC(t *testing.T, ctx context.Context, c kubernetes.Interface) {
	t.Helper()
	type check struct {
		group, resource, verb, namespace string
		allowed                          bool
	}
	checks := []check{
		{"apps", "deployments", "patch", ns, true},
		{"apps", "replicasets", "patch", ns, true},
		{"", "pods", "list", ns, true},
		{"", "configmaps", "create", ns, true},
		{"gateway.networking.k8s.io", "httproutes", "patch", ns, true},
		{"apps", "deployments", "delete", ns, false},
		{"apps", "deployments", "create", ns, false},
		{"", "pods", "delete", ns, false},
		{"", "pods", "create", ns, false},
		{"", "secrets", "get", ns, false},
		{"", "configmaps", "delete", ns, false},
		{"", "services", "patch", ns, false},
		{"rbac.authorization.k8s.io", "roles", "create", ns, false},
		{"rbac.authorization.k8s.io", "rolebindings", "create", ns, false},
		{"gateway.networking.k8s.io", "httproutes", "delete", ns, false},
		{"apps", "deployments", "patch", "default", false},
		{"", "namespaces", "create", "", false},
		{"", "nodes", "list", "", false},
	}
	for _, ck := range checks {
		r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authv1.ResourceAttributes{Group: ck.group, Resource: ck.resource, Verb: ck.verb, Namespace: ck.namespace}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != ck.allowed {
			t.Errorf("ServiceAccount countersign-control: %s %s/%s in %q allowed=%v, want %v", ck.verb, ck.group, ck.resource, ck.namespace, r.Status.Allowed, ck.allowed)
		}
	}
	// And for real: a denied call is refused by the API server.
	if err := c.AppsV1().Deployments(ns).Delete(ctx, "countersign-node-canary", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err == nil {
		t.Error("the ServiceAccount could delete a Deployment")
	}
}

// applyManifests renders the testbed overlay and applies it server-side,
// with the installation as the ConfigMap and Secret the pods mount and the
// store URL pointing at the test's PostgreSQL schema.
func applyManifests(t *testing.T, ctx context.Context, c *kubetest.Cluster, dir, pg string) {
	t.Helper()
	root := repoRoot(t)
	out, err := exec.CommandContext(ctx, "kubectl", "kustomize", filepath.Join(root, "deploy/kubernetes/overlays/testbed")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	rendered := filepath.Join(t.TempDir(), "testbed.yaml")
	if err := os.WriteFile(rendered, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := c.Kubectl(ctx, "apply", "--server-side", "-f", rendered); err != nil {
		t.Fatalf("apply testbed overlay: %v\n%s", err, b)
	}
	inst := []string{"create", "configmap", "countersign-install", "-n", ns}
	for _, f := range []string{install.ConfigFile, "ca.pem", "log.vkey"} {
		inst = append(inst, "--from-file="+filepath.Join(dir, f))
	}
	steps := [][]string{
		{"delete", "configmap", "countersign-install", "-n", ns, "--ignore-not-found"},
		inst,
		{"create", "secret", "generic", "countersign-soft-keys", "-n", ns, "--from-file=" + filepath.Join(dir, "keys")},
		{"patch", "configmap", "countersign-config", "-n", ns, "--type=merge", "-p", fmt.Sprintf(`{"data":{"store-url":%q}}`, pg)},
	}
	// The dev overlay's NATS Secret (a generated name) points at the dev
	// machine's server.
	secs, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secs.Items {
		if strings.HasPrefix(sec.Name, "countersign-nats") {
			steps = append(steps, []string{"patch", "secret", sec.Name, "-n", ns, "--type=merge", "-p", fmt.Sprintf(`{"stringData":{"url":%q}}`, nats.DefaultURL)})
		}
	}
	for _, s := range steps {
		if b, err := c.Kubectl(ctx, s...); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(s[:2], " "), err, b)
		}
	}
}

func canaryDeployment(t *testing.T, ctx context.Context, c *kubetest.Cluster) *metav1.ObjectMeta {
	t.Helper()
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "countersign-node-canary", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &d.ObjectMeta
}

// watchDrain reports whether the canary Deployment was seen at 0 replicas
// with no pod left.
func watchDrain(ctx context.Context, c *kubetest.Cluster, gone chan<- bool) {
	sel := "app.kubernetes.io/component=node,countersign.dev/pool=canary"
	for ctx.Err() == nil {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "countersign-node-canary", metav1.GetOptions{})
		if err == nil && d.Spec.Replicas != nil && *d.Spec.Replicas == 0 {
			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err == nil && len(pods.Items) == 0 {
				gone <- true
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routeWeights waits until the HTTPRoute (read with admin rights) routes
// by want.
func routeWeights(t *testing.T, ctx context.Context, c *kubetest.Cluster, want map[string]int) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	kubeWait(t, ctx, fmt.Sprintf("HTTPRoute weights %v", want), func() bool {
		u, err := dyn.Resource(httpRouteGVR).Namespace(ns).Get(ctx, "countersign", metav1.GetOptions{})
		if err != nil {
			return false
		}
		got = map[string]int{}
		rules, _, _ := unstructuredSlice(u.Object, "spec", "rules")
		for _, r := range rules {
			refs, _, _ := unstructuredSlice(r.(map[string]any), "backendRefs")
			for _, ref := range refs {
				m := ref.(map[string]any)
				name, _ := m["name"].(string)
				w, _ := m["weight"].(int64)
				if pool, ok := strings.CutPrefix(name, "countersign-node-"); ok {
					got[pool] = int(w)
				}
			}
			break // the first rule carries the writes
		}
		if len(got) == 0 {
			// Gated: the write rule routes to the maintenance backend only,
			// and the weights wait in the annotation for the gate to open.
			json.Unmarshal([]byte(u.GetAnnotations()[httproute.AnnotationWeights]), &got)
		}
		return got[control.PoolStable] == want[control.PoolStable] && got[control.PoolCanary] == want[control.PoolCanary]
	})
}

func unstructuredSlice(obj map[string]any, path ...string) ([]any, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	s, ok := cur.([]any)
	return s, ok, nil
}

// canaryStages lists the canary weights the playbook set, from the audit
// log, in order.
func canaryStages(t *testing.T, ctx context.Context, st store.Store) []int {
	t.Helper()
	size, err := st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.AuditEvents(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, ev := range evs {
		if ev.Type != gateway.EventWeights || !strings.Contains(ev.Actor, "/canary") {
			continue
		}
		var e struct {
			Details struct {
				After map[string]int `json:"after"`
			} `json:"details"`
		}
		if err := json.Unmarshal(ev.Entry, &e); err != nil {
			t.Fatalf("event %d: %v", ev.Index, err)
		}
		out = append(out, e.Details.After[control.PoolCanary])
	}
	return out
}

func planLines(rep playbook.PlanReport) []string {
	var out []string
	for _, s := range rep.Steps {
		for _, ch := range s.Plan.Changes {
			out = append(out, fmt.Sprintf("%s: %s %s: %s → %s", s.ID, ch.Target, ch.Field, ch.From, ch.To))
		}
	}
	return out
}

func kubeWait(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// resetQueue removes the default work stream from the dev machine's NATS,
// so jobs of earlier runs are not worked here; and after the test.
func resetQueue(t *testing.T) {
	t.Helper()
	del := func() error {
		nc, err := nats.Connect(nats.DefaultURL)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := nc.JetStream()
		if err != nil {
			return err
		}
		if err := js.DeleteStream(jetstream.DefaultStream); err != nil && err != nats.ErrStreamNotFound {
			return err
		}
		return nil
	}
	if err := del(); err != nil {
		t.Fatalf("NATS at %s: %v", nats.DefaultURL, err)
	}
	t.Cleanup(func() { del() })
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// ready reports whether a node answers /readyz through its Service.
func ready(base string) bool {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
