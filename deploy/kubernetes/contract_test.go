package manifests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/store"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Labels and names of the Kubernetes contract (issue 8).
const (
	labelName      = "app.kubernetes.io/name"
	labelPartOf    = "app.kubernetes.io/part-of"
	labelComponent = "app.kubernetes.io/component"
	labelPool      = "countersign.dev/pool"

	annRelease        = "countersign.dev/release"
	annSchemaMin      = "countersign.dev/schema-min"
	annSchemaMax      = "countersign.dev/schema-max"
	annArtifactSHA256 = "countersign.dev/artifact-sha256"
	annFlagsConfigMap = "countersign.dev/flags-configmap"
	annFlagsSHA256    = "countersign.dev/flags-sha256"
	annWeights        = "countersign.dev/weights"
	annGate           = "countersign.dev/gate"

	flagsKey      = "flags.flagd.json"
	flagsVolume   = "countersign-flags"
	flagsMountDir = "/etc/countersign/flags"
)

var (
	components = []string{"node", "gateway", "control", "maintenance"}
	pools      = []string{"stable", "canary"}
)

func TestLabels(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			for _, obj := range r.all {
				l := obj.Metadata.Labels
				if l[labelName] != "countersign" || l[labelPartOf] != "countersign" {
					t.Errorf("%s: labels %v, want %s=countersign and %s=countersign", obj, l, labelName, labelPartOf)
				}
				c, ok := l[labelComponent]
				if ok && !slices.Contains(components, c) {
					t.Errorf("%s: %s=%q, want one of %v", obj, labelComponent, c, components)
				}
				switch obj.Kind {
				case "Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding", "HTTPRoute", "PersistentVolumeClaim":
					if !ok {
						t.Errorf("%s: no %s label", obj, labelComponent)
					}
				}
			}
			for _, d := range r.deployments {
				tl, sel := d.Spec.Template.Labels, d.Spec.Selector.MatchLabels
				if tl[labelName] != "countersign" || tl[labelPartOf] != "countersign" || tl[labelComponent] != d.Labels[labelComponent] {
					t.Errorf("Deployment %s: pod template labels %v miss the shared ones", d.Name, tl)
				}
				want := map[string]string{labelName: "countersign", labelComponent: d.Labels[labelComponent]}
				if p, ok := d.Labels[labelPool]; ok {
					want[labelPool] = p
				}
				if !maps.Equal(sel, want) || len(d.Spec.Selector.MatchExpressions) > 0 {
					t.Errorf("Deployment %s: selector %v, want %v", d.Name, sel, want)
				}
			}
		})
	}
}

// flagsConfigMapName is the contract's per-release ConfigMap name.
func flagsConfigMapName(release string) string {
	return "countersign-flags-" + regexp.MustCompile(`[^a-z0-9-]`).ReplaceAllString(strings.ToLower(release), "-")
}

var digestRE = regexp.MustCompile(`^[^@\s]+@sha256:([0-9a-f]{64})$`)

func TestNodePools(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			for _, pool := range pools {
				name := "countersign-node-" + pool
				d := r.deployment(name)
				if d == nil {
					t.Fatalf("no Deployment %s", name)
				}
				wantSel := map[string]string{labelName: "countersign", labelComponent: "node", labelPool: pool}
				if d.Labels[labelPool] != pool || !maps.Equal(d.Spec.Selector.MatchLabels, wantSel) {
					t.Errorf("Deployment %s: labels %v selector %v, want pool %s and selector %v", name, d.Labels, d.Spec.Selector.MatchLabels, pool, wantSel)
				}
				checkNodeTemplate(t, r, d)
				s := r.service(name)
				if s == nil {
					t.Fatalf("no Service %s", name)
				}
				if !maps.Equal(s.Spec.Selector, wantSel) || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 7300 ||
					s.Spec.Ports[0].Name != "http" || s.Spec.Ports[0].TargetPort.StrVal != "http" {
					t.Errorf("Service %s: selector %v ports %s, want selector %v and port 7300 (http) → http", name, s.Spec.Selector, mustJSON(s.Spec.Ports), wantSel)
				}
			}
			// The pools differ in name, pool and size only.
			st, ca := r.deployment("countersign-node-stable"), r.deployment("countersign-node-canary")
			if st != nil && ca != nil {
				a := poolShape(t, *st, "stable")
				b := poolShape(t, *ca, "canary")
				if a != b {
					t.Errorf("Deployments countersign-node-stable and -canary differ beyond name, pool and replicas:\n%s\n%s", a, b)
				}
			}
		})
	}
}

// poolShape is d as JSON with its pool's name, label and size taken out
// (resources stay: production sizes both pools alike).
func poolShape(t *testing.T, d appsv1.Deployment, pool string) string {
	t.Helper()
	d.Spec.Replicas = nil
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), pool, "POOL")
}

func checkNodeTemplate(t *testing.T, r *rendered, d *appsv1.Deployment) {
	t.Helper()
	tpl := d.Spec.Template
	if len(tpl.Spec.Containers) != 1 || tpl.Spec.Containers[0].Name != "node" {
		t.Fatalf("Deployment %s: want one container named node", d.Name)
	}
	c := tpl.Spec.Containers[0]
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 7300 {
		t.Errorf("Deployment %s: container ports %s, want 7300 named http", d.Name, mustJSON(c.Ports))
	}
	a := tpl.Annotations
	for _, k := range []string{annRelease, annSchemaMin, annSchemaMax, annArtifactSHA256, annFlagsConfigMap, annFlagsSHA256} {
		if a[k] == "" {
			t.Errorf("Deployment %s: pod template annotation %s missing", d.Name, k)
		}
	}
	lo, errLo := strconv.Atoi(a[annSchemaMin])
	hi, errHi := strconv.Atoi(a[annSchemaMax])
	if errLo != nil || errHi != nil || lo < 1 || lo > hi {
		t.Errorf("Deployment %s: schema range [%q,%q], want integers 1 <= min <= max", d.Name, a[annSchemaMin], a[annSchemaMax])
	} else if store.SchemaVersion < lo || store.SchemaVersion > hi {
		// The manifests' release is this commit's binary.
		t.Errorf("Deployment %s: schema range [%d,%d] excludes this binary's schema %d", d.Name, lo, hi, store.SchemaVersion)
	}
	m := digestRE.FindStringSubmatch(c.Image)
	if m == nil {
		t.Errorf("Deployment %s: image %q is not pinned by digest (repo@sha256:<hex>)", d.Name, c.Image)
	} else if a[annArtifactSHA256] != m[1] {
		t.Errorf("Deployment %s: %s=%s, but the image digest is %s", d.Name, annArtifactSHA256, a[annArtifactSHA256], m[1])
	}
	cm := flagsConfigMapName(a[annRelease])
	if a[annFlagsConfigMap] != cm {
		t.Errorf("Deployment %s: %s=%q, want %q for release %q", d.Name, annFlagsConfigMap, a[annFlagsConfigMap], cm, a[annRelease])
	}
	if got := r.configMap(cm); got == nil || got.Data[flagsKey] == "" {
		t.Errorf("Deployment %s: ConfigMap %s with key %s is missing", d.Name, cm, flagsKey)
	}
	// What runs is what the annotations say (the control plane reads a
	// revision's release back from them).
	if got := envValue(c, "COUNTERSIGN_RELEASE"); got != a[annRelease] {
		t.Errorf("Deployment %s: COUNTERSIGN_RELEASE=%q, annotation %s=%q", d.Name, got, annRelease, a[annRelease])
	}
	if got, want := envValue(c, "COUNTERSIGN_POOL"), d.Labels[labelPool]; got != want {
		t.Errorf("Deployment %s: COUNTERSIGN_POOL=%q, want %q", d.Name, got, want)
	}
	for flag, ann := range map[string]string{"--schema-min": annSchemaMin, "--schema-max": annSchemaMax} {
		if got := argValue(c.Args, flag); got != a[ann] {
			t.Errorf("Deployment %s: %s=%q, annotation %s=%q", d.Name, flag, got, ann, a[ann])
		}
	}
	if cmap := r.configMap(cm); cmap != nil {
		sum := sha256.Sum256([]byte(cmap.Data[flagsKey]))
		if got := a[annFlagsSHA256]; got != hex.EncodeToString(sum[:]) {
			t.Errorf("Deployment %s: %s=%s, but ConfigMap %s holds %x", d.Name, annFlagsSHA256, got, cm, sum)
		}
	}
	// The flags volume is where and how the control plane mounts a
	// release's flags (internal/fleet/kube), so its apply merges with this.
	if got := argValue(c.Args, "--flags"); got != flagsMountDir+"/"+flagsKey {
		t.Errorf("Deployment %s: --flags=%q, want %s/%s", d.Name, got, flagsMountDir, flagsKey)
	}
	mountedAt := ""
	for _, m := range c.VolumeMounts {
		if m.Name == flagsVolume {
			mountedAt = m.MountPath
		}
	}
	if mountedAt != flagsMountDir || !slices.ContainsFunc(tpl.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == flagsVolume && v.ConfigMap != nil && v.ConfigMap.Name == cm
	}) {
		t.Errorf("Deployment %s: want volume %s (ConfigMap %s) mounted at %s", d.Name, flagsVolume, cm, flagsMountDir)
	}
}

// envValue is the literal value of the container's variable name.
func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// argValue is the value of --flag=value in args.
func argValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func TestFlagsConfigMapIsTheDefaultFile(t *testing.T) {
	want, err := os.ReadFile("../../internal/flags/default.flagd.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("base/flags.flagd.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("base/flags.flagd.json differs from internal/flags/default.flagd.json (the default every release starts from); copy it over")
	}
}

func TestEdgeObjects(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			type port struct {
				name string
				num  int32
			}
			want := map[string][]port{
				"countersign-maintenance": {{"http", 8080}},
				"countersign-control":     {{"http", 7402}},
			}
			if !o.gatewayAPI {
				want["countersign-gateway"] = []port{{"http", 7400}, {"admin", 7401}}
			} else if r.deployment("countersign-gateway") != nil || r.service("countersign-gateway") != nil {
				t.Errorf("overlay routed by the HTTPRoute still ships our gateway: two routers would split clients between releases")
			}
			for name, ports := range want {
				d, s := r.deployment(name), r.service(name)
				if d == nil || s == nil {
					t.Errorf("Deployment and Service %s: want both", name)
					continue
				}
				c := d.Spec.Template.Spec.Containers[0]
				if sub := strings.TrimPrefix(name, "countersign-"); len(c.Args) == 0 || c.Args[0] != sub {
					t.Errorf("Deployment %s: args %v, want `countersign %s ...`", name, c.Args, sub)
				}
				var gotC, gotS []port
				for _, p := range c.Ports {
					gotC = append(gotC, port{p.Name, p.ContainerPort})
				}
				for _, p := range s.Spec.Ports {
					gotS = append(gotS, port{p.Name, p.Port})
					if p.TargetPort.StrVal != p.Name {
						t.Errorf("Service %s: port %s targets %s, want the container port of the same name", name, p.Name, p.TargetPort.String())
					}
				}
				if !slices.Equal(gotC, ports) || !slices.Equal(gotS, ports) {
					t.Errorf("%s: container ports %v, Service ports %v, want %v", name, gotC, gotS, ports)
				}
			}
			checkControlTraffic(t, r)
			if o.gatewayAPI {
				checkRoute(t, r)
			} else if len(r.routes) > 0 {
				t.Errorf("HTTPRoute shipped in an overlay whose control plane routes through our gateway")
			}
		})
	}
}

func checkControlTraffic(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployment("countersign-control")
	if d == nil {
		t.Fatal("no Deployment countersign-control")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("Deployment countersign-control: want 1 replica and strategy Recreate (one control plane at a time)")
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	want := "--traffic=gateway-admin"
	if r.gatewayAPI {
		want = "--traffic=httproute"
	}
	if !slices.Contains(args, want) {
		t.Errorf("control args %v, want %s", args, want)
	}
	if hasAdmin := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--gateway-admin=") }); hasAdmin == r.gatewayAPI {
		t.Errorf("control args %v: --gateway-admin must be given exactly when routing through our gateway", args)
	}
	if d.Spec.Template.Spec.ServiceAccountName != "countersign-control" {
		t.Errorf("control runs as %q, want countersign-control", d.Spec.Template.Spec.ServiceAccountName)
	}
	// Releases run the pools' image, in pools of the stable pool's size.
	c := d.Spec.Template.Spec.Containers[0]
	if st := r.deployment("countersign-node-stable"); st != nil {
		if got, want := envValue(c, "COUNTERSIGN_IMAGE"), st.Spec.Template.Spec.Containers[0].Image; got != want {
			t.Errorf("control COUNTERSIGN_IMAGE=%q (its --image), want the pools' image %q", got, want)
		}
		if got, want := envValue(c, "COUNTERSIGN_REPLICAS"), strconv.Itoa(replicasOf(st.Spec.Replicas)); got != want {
			t.Errorf("control COUNTERSIGN_REPLICAS=%q (its --replicas), want the stable pool's %s", got, want)
		}
	}
	// Its state outlives the pod, on a volume only it mounts.
	claims := 0
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims++
			if !slices.ContainsFunc(r.pvcs, func(p corev1.PersistentVolumeClaim) bool {
				return p.Name == v.PersistentVolumeClaim.ClaimName && slices.Equal(p.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce})
			}) {
				t.Errorf("control volume %s: claim %s is not a ReadWriteOnce PersistentVolumeClaim of the manifests", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	if claims != 1 || len(r.pvcs) != 1 {
		t.Errorf("control: %d claimed volumes, %d claims in the manifests; want its one state volume", claims, len(r.pvcs))
	}
	if envValue(c, "COUNTERSIGN_IN_CLUSTER_CONTROL") != "1" {
		t.Error("control: COUNTERSIGN_IN_CLUSTER_CONTROL=1 missing (it marks the in-cluster control plane)")
	}
}

func checkRoute(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.routes) != 1 || r.routes[0].Name != "countersign" {
		t.Fatalf("want exactly the HTTPRoute countersign, got %d routes", len(r.routes))
	}
	rt := r.routes[0]
	if len(rt.Spec.ParentRefs) == 0 {
		t.Error("HTTPRoute countersign: no parentRefs")
	}
	if len(rt.Spec.Rules) != 1 {
		t.Fatalf("HTTPRoute countersign: %d rules, want 1", len(rt.Spec.Rules))
	}
	got := map[string]int{}
	for _, b := range rt.Spec.Rules[0].BackendRefs {
		pool, ok := strings.CutPrefix(string(b.Name), "countersign-node-")
		if !ok || b.Port == nil || *b.Port != 7300 || b.Weight == nil || (b.Kind != nil && *b.Kind != "Service") {
			t.Errorf("HTTPRoute countersign: backendRef %s, want a node Service on port 7300 with a weight", mustJSON(b))
			continue
		}
		got[pool] = int(*b.Weight)
	}
	if want := map[string]int{"stable": 100, "canary": 0}; !maps.Equal(got, want) {
		t.Errorf("HTTPRoute countersign: weights %v, want %v", got, want)
	}
	var ann map[string]int
	if err := json.Unmarshal([]byte(rt.Annotations[annWeights]), &ann); err != nil || !maps.Equal(ann, got) {
		t.Errorf("HTTPRoute countersign: %s=%q, want the JSON of the backend weights %v (err %v)", annWeights, rt.Annotations[annWeights], got, err)
	}
	var g gateway.Gate
	dec := json.NewDecoder(strings.NewReader(rt.Annotations[annGate]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil || g.On {
		t.Errorf("HTTPRoute countersign: %s=%q, want a gateway.Gate that is off (err %v)", annGate, rt.Annotations[annGate], err)
	}
}

func TestSecretsOnlyInDev(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			if !o.devSecrets && len(r.secrets) > 0 {
				t.Errorf("Secrets %v written in the manifests; outside overlay dev, Secrets come from your secret manager",
					names(r.secrets, func(s corev1.Secret) string { return s.Name }))
			}
			for _, s := range r.secrets {
				if s.Labels["countersign.dev/dev-only"] != "true" {
					t.Errorf("Secret %s: a development Secret must be labelled countersign.dev/dev-only=true", s.Name)
				}
			}
		})
	}
}

func names[T any](list []T, name func(T) string) []string {
	var out []string
	for _, x := range list {
		out = append(out, name(x))
	}
	return out
}
