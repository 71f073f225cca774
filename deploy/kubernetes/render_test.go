package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// Namespace is where every namespaced object of every overlay lives.
const Namespace = "countersign"

// overlay is one kustomization the repository ships and what it may do.
type overlay struct {
	dir string // relative to this package
	// devSecrets: the overlay writes development-only Secret values
	// (nowhere else may a Secret value appear in the manifests).
	devSecrets bool
	// gatewayAPI: routed by the HTTPRoute (component gateway-api), without
	// our gateway.
	gatewayAPI bool
	// production: sizes and budgets for a real cluster.
	production bool
	// kafka: the queue is Kafka (component kafka), not NATS JetStream.
	kafka bool
}

var overlays = []overlay{
	{dir: "overlays/dev", devSecrets: true},
	{dir: "overlays/testbed", devSecrets: true, gatewayAPI: true},
	{dir: "overlays/production", production: true},
	{dir: "overlays/gateway-api", gatewayAPI: true, production: true},
	{dir: "testdata/pkcs11", production: true},             // component pkcs11 on overlay production
	{dir: "testdata/kafka", production: true, kafka: true}, // component kafka on overlay production
	// components gateway-api and kafka in one overlay, in their order
	{dir: "testdata/kafka-gateway-api", gatewayAPI: true, production: true, kafka: true},
}

// object is one rendered object, decoded as far as every kind allows.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	raw []byte // the document as YAML
}

func (o object) String() string { return o.Kind + " " + o.Metadata.Name }

// rendered is an overlay's output, by kind, each decoded strictly into its
// API type.
type rendered struct {
	overlay
	yaml            []byte
	all             []object
	namespaces      []corev1.Namespace
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	serviceAccounts []corev1.ServiceAccount
	pdbs            []policyv1.PodDisruptionBudget
	netpols         []networkingv1.NetworkPolicy
	roles           []rbacv1.Role
	roleBindings    []rbacv1.RoleBinding
	routes          []gatewayv1.HTTPRoute
	pvcs            []corev1.PersistentVolumeClaim
}

func (r *rendered) deployment(name string) *appsv1.Deployment {
	for i := range r.deployments {
		if r.deployments[i].Name == name {
			return &r.deployments[i]
		}
	}
	return nil
}

func (r *rendered) service(name string) *corev1.Service {
	for i := range r.services {
		if r.services[i].Name == name {
			return &r.services[i]
		}
	}
	return nil
}

func (r *rendered) configMap(name string) *corev1.ConfigMap {
	for i := range r.configMaps {
		if r.configMaps[i].Name == name {
			return &r.configMaps[i]
		}
	}
	return nil
}

// kubectl returns the kubectl binary. The manifests can only be checked as
// rendered, so a missing kubectl fails the test under CI=true.
func kubectl(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/usr/bin/kubectl"); err == nil && !fi.IsDir() {
		return "/usr/bin/kubectl"
	}
	p, err := exec.LookPath("kubectl")
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("kubectl not found at /usr/bin/kubectl nor in PATH (needed for `kubectl kustomize`): %v", err)
	}
	t.Skipf("kubectl not found (needed for `kubectl kustomize`); install it or run under CI=true to make this a failure: %v", err)
	return ""
}

var renderCache struct {
	sync.Mutex
	m map[string]*rendered
}

// render builds o with `kubectl kustomize` once per test binary.
func render(t testing.TB, o overlay) *rendered {
	t.Helper()
	bin := kubectl(t)
	renderCache.Lock()
	defer renderCache.Unlock()
	if r, ok := renderCache.m[o.dir]; ok {
		return r
	}
	cmd := exec.Command(bin, "kustomize", o.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", o.dir, err, stderr.String())
	}
	r, err := decode(o, stdout.Bytes())
	if err != nil {
		t.Fatalf("%s: %v", o.dir, err)
	}
	if renderCache.m == nil {
		renderCache.m = map[string]*rendered{}
	}
	renderCache.m[o.dir] = r
	return r
}

// decode splits kustomize's output into documents and decodes each into
// its API type, refusing unknown fields and unknown kinds.
func decode(o overlay, out []byte) (*rendered, error) {
	r := &rendered{overlay: o, yaml: out}
	for i, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var obj object
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj.raw = doc
		var err error
		switch obj.APIVersion + " " + obj.Kind {
		case "v1 Namespace":
			r.namespaces, err = appendStrict(r.namespaces, doc)
		case "apps/v1 Deployment":
			r.deployments, err = appendStrict(r.deployments, doc)
		case "v1 Service":
			r.services, err = appendStrict(r.services, doc)
		case "v1 ConfigMap":
			r.configMaps, err = appendStrict(r.configMaps, doc)
		case "v1 Secret":
			r.secrets, err = appendStrict(r.secrets, doc)
		case "v1 ServiceAccount":
			r.serviceAccounts, err = appendStrict(r.serviceAccounts, doc)
		case "policy/v1 PodDisruptionBudget":
			r.pdbs, err = appendStrict(r.pdbs, doc)
		case "networking.k8s.io/v1 NetworkPolicy":
			r.netpols, err = appendStrict(r.netpols, doc)
		case "rbac.authorization.k8s.io/v1 Role":
			r.roles, err = appendStrict(r.roles, doc)
		case "rbac.authorization.k8s.io/v1 RoleBinding":
			r.roleBindings, err = appendStrict(r.roleBindings, doc)
		case "v1 PersistentVolumeClaim":
			r.pvcs, err = appendStrict(r.pvcs, doc)
		case "gateway.networking.k8s.io/v1 HTTPRoute":
			r.routes, err = appendStrict(r.routes, doc)
		default:
			// Every kind shipped is checked by some test; a new one needs
			// its checks first (ClusterRoles, for instance, never).
			return nil, fmt.Errorf("%s: kind %s %s is not one the manifests may ship", obj, obj.APIVersion, obj.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", obj, err)
		}
		r.all = append(r.all, obj)
	}
	if len(r.all) == 0 {
		return nil, fmt.Errorf("kustomize rendered no objects")
	}
	return r, nil
}

func appendStrict[T any](list []T, doc []byte) ([]T, error) {
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		return list, err
	}
	return append(list, v), nil
}

func TestEveryOverlayIsTested(t *testing.T) {
	dirs, err := filepath.Glob("overlays/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no overlays/*/kustomization.yaml found")
	}
	for _, k := range dirs {
		dir := filepath.ToSlash(filepath.Dir(k))
		if !slices.ContainsFunc(overlays, func(o overlay) bool { return o.dir == dir }) {
			t.Errorf("overlay %s is not in this package's overlays table, so nothing checks it", dir)
		}
	}
	comps, err := filepath.Glob("components/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range comps {
		name := filepath.Base(filepath.Dir(k))
		used := false
		for _, o := range overlays {
			b, err := os.ReadFile(filepath.Join(o.dir, "kustomization.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			used = used || bytes.Contains(b, []byte("../../components/"+name))
		}
		if !used {
			t.Errorf("component %s is rendered by no overlay in the table", name)
		}
	}
}

func TestOverlaysRender(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			for _, obj := range r.all {
				switch {
				case obj.Kind == "Namespace":
					if obj.Metadata.Name != Namespace {
						t.Errorf("%s: want only namespace %s", obj, Namespace)
					}
				case obj.Metadata.Namespace != Namespace:
					t.Errorf("%s: namespace %q, want %q", obj, obj.Metadata.Namespace, Namespace)
				}
				if strings.Contains(string(obj.raw), "$(") && obj.Kind != "Deployment" {
					t.Errorf("%s: unexpanded $(...) outside a container's args", obj)
				}
			}
			if len(r.namespaces) != 1 {
				t.Errorf("%d Namespace objects, want 1", len(r.namespaces))
			}
		})
	}
}

// mustJSON is for messages.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
