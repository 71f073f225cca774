package kube

import (
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/countersign/countersign/internal/fleet"
)

func TestDiffObjectsDeployment(t *testing.T) {
	before := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign-node-canary", ResourceVersion: "10", Generation: 3,
			Annotations: map[string]string{annChangeCause: "old"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annRelease: "v1"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "node", Image: "r/c@sha256:" + digestA, Args: []string{"node", "--a"},
					Env: []corev1.EnvVar{{Name: "COUNTERSIGN_RELEASE", Value: "v1"}, {Name: "KEEP", Value: "k"}}},
				{Name: "sidecar", Image: "s:1"},
			}},
		}},
		Status: appsv1.DeploymentStatus{Replicas: 3},
	}
	after := before.DeepCopy()
	after.ResourceVersion, after.Generation, after.Status.Replicas = "11", 4, 0 // server-kept: not changes
	after.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "countersign-control"}}
	after.Annotations[annChangeCause] = "new"
	after.Annotations[annIncident] = "INC-1"
	after.Spec.Replicas = ptr.To[int32](0)
	after.Spec.Template.Annotations[annRelease] = "v2"
	c := &after.Spec.Template.Spec.Containers[0]
	c.Image, c.Args, c.Env[0].Value = "r/c@sha256:"+digestB, []string{"node", "--b"}, "v2"

	got, err := diffObjects("Deployment", "ns1", before.Name, before, after)
	if err != nil {
		t.Fatal(err)
	}
	ch := func(field, from, to string) fleet.Change {
		return fleet.Change{Kind: "Deployment", Namespace: "ns1", Name: "countersign-node-canary", Field: field, From: from, To: to}
	}
	want := []fleet.Change{
		ch("metadata.annotations[countersign.dev/incident]", "", "INC-1"),
		ch("metadata.annotations[kubernetes.io/change-cause]", "old", "new"),
		ch("spec.replicas", "3", "0"),
		ch("spec.template.metadata.annotations[countersign.dev/release]", "v1", "v2"),
		ch("spec.template.spec.containers[node].args", `["node","--a"]`, `["node","--b"]`),
		ch("spec.template.spec.containers[node].env[COUNTERSIGN_RELEASE].value", "v1", "v2"),
		ch("spec.template.spec.containers[node].image", "r/c@sha256:"+digestA, "r/c@sha256:"+digestB),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff:\n%v\nwant\n%v", got, want)
	}
	if same, err := diffObjects("Deployment", "ns1", before.Name, before, before.DeepCopy()); err != nil || len(same) != 0 {
		t.Errorf("diff of equal objects = %v, %v", same, err)
	}
}

func TestDiffObjectsNewConfigMap(t *testing.T) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "countersign-flags-v2", Annotations: map[string]string{annRelease: "v2"}},
		Data:       map[string]string{flagsKey: `{"flags":{}}`},
		Immutable:  ptr.To(true),
	}
	got, err := diffObjects("ConfigMap", "ns1", cm.Name, nilIfAbsent(nil), cm)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, c := range got {
		if c.From != "" {
			t.Errorf("new object has a From: %v", c)
		}
		fields = append(fields, c.Field+"="+c.To)
	}
	want := []string{
		"data[flags.flagd.json]=sha256:" + sha256Hex([]byte(`{"flags":{}}`)) + " (12 bytes)",
		"immutable=true",
		"metadata.annotations[countersign.dev/release]=v2",
	}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("fields %q\nwant %q", fields, want)
	}
}

func TestFlattenLists(t *testing.T) {
	out := map[string]string{}
	flatten("", "", map[string]any{
		"dup":    []any{map[string]any{"name": "a", "v": "1"}, map[string]any{"name": "a", "v": "2"}},
		"empty":  []any{},
		"nested": []any{[]any{"x"}},
		"obj":    map[string]any{},
		"null":   nil,
	}, out)
	want := map[string]string{"dup[0].name": "a", "dup[0].v": "1", "dup[1].name": "a", "dup[1].v": "2",
		"empty": "[]", "nested[0]": `["x"]`, "obj": "{}"}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("flatten = %v, want %v", out, want)
	}
}
