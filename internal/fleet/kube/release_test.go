package kube

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

var (
	digestA = strings.Repeat("a1", 32)
	digestB = strings.Repeat("b2", 32)
)

func testRelease() fleet.Release {
	return fleet.Release{
		ID: "v1.4.2", Artifact: "registry.example/countersign@sha256:" + digestA, SHA256: digestA,
		Args:      []string{"node", "--pool", "{{.Pool}}", "--instance", "{{.Instance}}", "--data", "{{.DataDir}}"},
		Env:       []string{"LOG_LEVEL=debug", "COUNTERSIGN_POOL=override"},
		SchemaMin: 3, SchemaMax: 5, Labels: map[string]string{"commit": "abc123"},
	}
}

func testFleet(t *testing.T) *Fleet {
	t.Helper()
	// The pure parts make no request: the client points at an address
	// nothing listens on.
	c, _, err := ClientFromKubeconfig(writeKubeconfig(t), "")
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Client: c, Namespace: "ns1"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// writeKubeconfig writes a kubeconfig for an address nothing listens on.
func writeKubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: "t"}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: other}}]
current-context: x
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyArtifact(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*fleet.Release)
		checksum bool // want *fleet.ChecksumError
		invalid  bool // want fleet.ErrInvalid
	}{
		{"pinned", func(*fleet.Release) {}, false, false},
		{"other digest", func(r *fleet.Release) { r.Artifact = "registry.example/countersign@sha256:" + digestB }, true, false},
		{"tag only", func(r *fleet.Release) { r.Artifact = "registry.example/countersign:v1" }, false, true},
		{"tag and digest", func(r *fleet.Release) { r.Artifact = "registry.example/countersign:v1@sha256:" + digestA }, false, false},
		{"no repository", func(r *fleet.Release) { r.Artifact = "@sha256:" + digestA }, false, true},
		{"short digest", func(r *fleet.Release) { r.Artifact = "r/c@sha256:abcd" }, false, true},
		{"upper-case digest", func(r *fleet.Release) { r.Artifact = "r/c@sha256:" + strings.ToUpper(digestA) }, false, true},
		{"invalid release", func(r *fleet.Release) { r.ID = "" }, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRelease()
			tt.mod(&r)
			err := verifyArtifact(r)
			var ce *fleet.ChecksumError
			if got := errors.As(err, &ce); got != tt.checksum {
				t.Fatalf("verifyArtifact() = %v, want ChecksumError %v", err, tt.checksum)
			}
			if tt.checksum && (ce.Want != digestA || ce.Got != digestB) {
				t.Errorf("ChecksumError = %+v, want Want %s Got %s", ce, digestA, digestB)
			}
			if got := errors.Is(err, fleet.ErrInvalid); got != tt.invalid {
				t.Fatalf("verifyArtifact() = %v, want ErrInvalid %v", err, tt.invalid)
			}
		})
	}
}

func TestRenderArgs(t *testing.T) {
	d := argData{Listen: "0.0.0.0:7300", Port: 7300, Pool: "canary", Instance: "$(POD_NAME)", Release: "v2", DataDir: "/data", FlagsFile: "/f"}
	listen := []string{"--listen", "{{.Listen}}"}
	tests := []struct {
		name    string
		args    []string
		want    []string
		invalid bool
	}{
		{"listen appended", []string{"node", "--pool={{.Pool}}"}, []string{"node", "--pool=canary", "--listen", "0.0.0.0:7300"}, false},
		{"port mentioned", []string{"node", "--port={{.Port}}", "{{.Instance}}"}, []string{"node", "--port=7300", "$(POD_NAME)"}, false},
		{"all fields", []string{"{{.Listen}} {{.Release}} {{.DataDir}} {{.FlagsFile}}"}, []string{"0.0.0.0:7300 v2 /data /f"}, false},
		{"no replica index in kube", []string{"{{.Replica}}"}, nil, true},
		{"parse error", []string{"{{.Pool"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fleet.RenderArgs(tt.args, listen, d)
			if (err != nil) != tt.invalid || (err != nil && !errors.Is(err, fleet.ErrInvalid)) {
				t.Fatalf("fleet.RenderArgs() error = %v, want invalid %v", err, tt.invalid)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fleet.RenderArgs() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReleaseEnv(t *testing.T) {
	rel := testRelease()
	env, err := releaseEnv("canary", rel, flagsPath)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range env {
		if e.ValueFrom != nil {
			got = append(got, *e.Name+"<-"+*e.ValueFrom.FieldRef.FieldPath)
			continue
		}
		got = append(got, *e.Name+"="+*e.Value)
	}
	want := []string{"POD_NAME<-metadata.name", "COUNTERSIGN_RELEASE=v1.4.2", "COUNTERSIGN_INSTANCE=$(POD_NAME)",
		"COUNTERSIGN_POOL=override", "COUNTERSIGN_LISTEN=0.0.0.0:7300", "COUNTERSIGN_FLAGS_FILE=" + flagsPath, "LOG_LEVEL=debug"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env = %q\nwant %q", got, want)
	}
	rel.Env = []string{"NOVALUE"}
	if _, err := releaseEnv("canary", rel, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("env entry without = : err %v, want ErrInvalid", err)
	}
}

func TestFlagsConfigMapName(t *testing.T) {
	for id, want := range map[string]string{
		"v1.4.2":         "countersign-flags-v1-4-2",
		"Release_2026.1": "countersign-flags-release-2026-1",
		"v1.":            "countersign-flags-v1",
		"ok-name":        "countersign-flags-ok-name",
	} {
		if got := flagsConfigMapName(id); got != want {
			t.Errorf("flagsConfigMapName(%q) = %q, want %q", id, got, want)
		}
	}
	if got := flagsConfigMapName(strings.Repeat("x", 300)); len(got) != 253 {
		t.Errorf("long id gives a name of %d characters, want 253", len(got))
	}
}

func TestReadFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "flags.json")
	if err := os.WriteFile(good, []byte(`{"flags":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, maxFlagsBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(dir, "bin.json")
	if err := os.WriteFile(binary, []byte{0xff, 0xfe}, 0o600); err != nil {
		t.Fatal(err)
	}
	rel := testRelease()
	if fl, err := readFlags(rel); fl != nil || err != nil {
		t.Fatalf("no flags file: %v, %v", fl, err)
	}
	rel.FlagsFile = good
	fl, err := readFlags(rel)
	if err != nil {
		t.Fatal(err)
	}
	if fl.name != "countersign-flags-v1-4-2" || fl.data != `{"flags":{}}` || fl.sha256 != sha256Hex([]byte(`{"flags":{}}`)) {
		t.Errorf("readFlags = %+v", fl)
	}
	for _, p := range []string{big, binary} {
		rel.FlagsFile = p
		if _, err := readFlags(rel); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", filepath.Base(p), err)
		}
	}
	rel.FlagsFile = filepath.Join(dir, "missing")
	if _, err := readFlags(rel); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err %v, want not exist", err)
	}
}

// podTemplate turns an apply configuration into the object the API server
// would store (without defaults), the way a ReplicaSet carries it.
func podTemplate(t *testing.T, ac *corev1ac.PodTemplateSpecApplyConfiguration) *corev1.PodTemplateSpec {
	t.Helper()
	b, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	var out corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestReleaseTemplateRoundTrip(t *testing.T) {
	f := testFleet(t)
	var customized string
	f.cfg.Customize = func(pool string, rel fleet.Release, tmpl *corev1ac.PodTemplateSpecApplyConfiguration) error {
		customized = pool + "/" + rel.ID
		tmpl.Spec.WithNodeSelector(map[string]string{"zone": "z1"})
		return nil
	}
	rel := testRelease()
	rel.FlagsFile = "/control/flags/v1.json"
	flags := &flagsConfigMap{name: flagsConfigMapName(rel.ID), data: "{}", sha256: sha256Hex([]byte("{}"))}
	ac, err := f.releaseTemplate("canary", rel, flags, 7)
	if err != nil {
		t.Fatal(err)
	}
	if customized != "canary/v1.4.2" {
		t.Errorf("Customize saw %q", customized)
	}
	tmpl := podTemplate(t, ac)
	c := nodeContainer(&tmpl.Spec)
	if c == nil {
		t.Fatalf("no container %q in %+v", containerName, tmpl.Spec)
	}
	wantArgs := []string{"node", "--pool", "canary", "--instance", "$(POD_NAME)", "--data", DefaultDataDir, "--listen", "0.0.0.0:7300"}
	if c.Image != rel.Artifact || !reflect.DeepEqual(c.Args, wantArgs) {
		t.Errorf("container image %q args %q, want %q %q", c.Image, c.Args, rel.Artifact, wantArgs)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != flagsMountDir || len(tmpl.Spec.Volumes) != 1 ||
		tmpl.Spec.Volumes[0].ConfigMap == nil || tmpl.Spec.Volumes[0].ConfigMap.Name != "countersign-flags-v1-4-2" {
		t.Errorf("flags mount %+v volumes %+v", c.VolumeMounts, tmpl.Spec.Volumes)
	}
	if tmpl.Spec.NodeSelector["zone"] != "z1" {
		t.Errorf("Customize's node selector lost: %v", tmpl.Spec.NodeSelector)
	}
	for k, want := range map[string]string{annRelease: "v1.4.2", annSchemaMin: "3", annSchemaMax: "5", annArtifact: digestA,
		annFlagsCM: "countersign-flags-v1-4-2", annFlagsSHA: flags.sha256, annRevision: "7"} {
		if got := tmpl.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}
	if got := releaseFromTemplate(tmpl); !reflect.DeepEqual(got, rel) {
		t.Errorf("decoded release\n got %+v\nwant %+v", got, rel)
	}
}

func TestReleaseFromForeignTemplate(t *testing.T) {
	// The manifests' first revision: no annotations of ours.
	tmpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "node", Image: "r/c@sha256:" + digestB, Args: []string{"node"},
		Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "P", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
	}}}}
	got := releaseFromTemplate(tmpl)
	want := fleet.Release{Artifact: "r/c@sha256:" + digestB, SHA256: digestB, Args: []string{"node"}, Env: []string{"A=1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestTemplateApplyCopiesAndStamps(t *testing.T) {
	rs := &appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{}}}
	rs.Spec.Template.Labels = map[string]string{"app.kubernetes.io/name": "countersign", labelHash: "abc"}
	rs.Spec.Template.Annotations = map[string]string{annRelease: "v1", annRollbackOf: "1"}
	grace := int64(20)
	rs.Spec.Template.Spec = corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{
		Name: "node", Image: "r/c@sha256:" + digestA, Args: []string{"a"},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 7300, Protocol: corev1.ProtocolTCP}},
	}}}
	ac, err := templateApply(&rs.Spec.Template, 2, 9)
	if err != nil {
		t.Fatal(err)
	}
	got := podTemplate(t, ac)
	want := rs.Spec.Template.DeepCopy()
	delete(want.Labels, labelHash)
	want.Annotations[annRollbackOf], want.Annotations[annRevision] = "2", "9"
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("templateApply\n got %+v\nwant %+v", got, want)
	}
	if rs.Spec.Template.Labels[labelHash] != "abc" || rs.Spec.Template.Annotations[annRollbackOf] != "1" {
		t.Error("templateApply changed the ReplicaSet it copied")
	}
}

func TestCauseAnnotations(t *testing.T) {
	got := causeAnnotations(fleet.Cause{Incident: "INC-7", RunID: "r1", Actor: "alice"}, "drain canary")
	want := map[string]string{
		annIncident: "INC-7", annRunID: "r1", annActor: "alice",
		annChangeCause: "countersign: drain canary (incident INC-7, run r1, by alice)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("causeAnnotations = %v, want %v", got, want)
	}
	if got := causeAnnotations(fleet.Cause{}, "scale stable to 2"); len(got) != 1 || got[annChangeCause] != "countersign: scale stable to 2" {
		t.Errorf("no cause: %v", got)
	}
}

func TestNewDefaults(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("New without client: %v, want ErrInvalid", err)
	}
	f := testFleet(t)
	if got := f.cfg.Endpoint("canary"); got != "http://countersign-node-canary.ns1.svc:7300" {
		t.Errorf("default endpoint %q", got)
	}
	if f.cfg.FieldManager != "countersign-control" || f.cfg.ReadyTimeout != DefaultReadyTimeout {
		t.Errorf("defaults: %+v", f.cfg)
	}
}
