//go:build kube

package kube

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

var digestC = strings.Repeat("c3", 32)

// has fails t unless changes hold exactly that change.
func has(t *testing.T, changes []fleet.Change, kind, name, field, from, to string) {
	t.Helper()
	for _, c := range changes {
		if c.Kind == kind && c.Name == name && c.Field == field {
			if c.From != from || c.To != to {
				t.Errorf("%s %s %s: %q → %q, want %q → %q", kind, name, field, c.From, c.To, from, to)
			}
			return
		}
	}
	t.Errorf("no change of %s %s %s in %v", kind, name, field, changes)
}

// realChanges is what op changed in the pool's Deployment, as a plan would
// list it; the revision annotation the deployment controller maintains is
// not the operation's change.
func (e *env) realChanges(t *testing.T, pool string, op func() error) []fleet.Change {
	t.Helper()
	before := e.deployment(t, pool)
	if err := op(); err != nil {
		t.Fatal(err)
	}
	after := e.deployment(t, pool)
	ch, err := diffObjects("Deployment", e.ns, before.Name, before, after)
	if err != nil {
		t.Fatal(err)
	}
	var out []fleet.Change
	for _, c := range ch {
		if c.Field != "metadata.annotations["+annK8sRevision+"]" {
			out = append(out, c)
		}
	}
	return out
}

func TestPlansAreExactAndChangeNothing(t *testing.T) {
	e := setup(t, "canary", "stable")
	f := e.fleetFor(t, 30*time.Second, nil)
	clock := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	f.cfg.Now = func() time.Time { return clock }
	ctx := t.Context()
	v1 := release(t, "v1", digestA, "")
	v2 := release(t, "v2", digestB, "")
	if _, err := f.Deploy(ctx, "stable", v1, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deploy(ctx, "canary", v2, 1); err != nil {
		t.Fatal(err)
	}
	v3 := release(t, "v3", digestC, `{"flags":{"new":{"state":"ENABLED"}}}`)
	pctx := withCause(ctx, "plan")

	before := e.versions(t)
	pd, err := f.PlanDeploy(pctx, "canary", v3, 2)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := f.PlanScale(pctx, "stable", 3)
	if err != nil {
		t.Fatal(err)
	}
	pdr, err := f.PlanDrain(pctx, "canary")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := f.PlanRollback(pctx, "stable", 1)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := f.PlanMarkGood(pctx, "stable", 2)
	if err != nil {
		t.Fatal(err)
	}
	if after := e.versions(t); !reflect.DeepEqual(before, after) {
		t.Fatalf("plans changed objects:\nbefore %v\nafter  %v", before, after)
	}
	if _, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(ctx, "countersign-flags-v3", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("PlanDeploy left the flags ConfigMap: %v", err)
	}

	canary, stable := "countersign-node-canary", "countersign-node-stable"
	flagsData := `{"flags":{"new":{"state":"ENABLED"}}}`
	has(t, pd, "ConfigMap", "countersign-flags-v3", "data[flags.flagd.json]", "", fmt.Sprintf("sha256:%s (%d bytes)", sha256Hex([]byte(flagsData)), len(flagsData)))
	has(t, pd, "ConfigMap", "countersign-flags-v3", "immutable", "", "true")
	has(t, pd, "Deployment", canary, "spec.replicas", "1", "2")
	has(t, pd, "Deployment", canary, "spec.template.spec.containers[node].image", v2.Artifact, v3.Artifact)
	has(t, pd, "Deployment", canary, "spec.template.metadata.annotations[countersign.dev/release]", "v2", "v3")
	has(t, pd, "Deployment", canary, "spec.template.metadata.annotations[countersign.dev/revision]", "2", "3")
	has(t, pd, "Deployment", canary, "spec.template.metadata.annotations[countersign.dev/flags-configmap]", "", "countersign-flags-v3")
	has(t, pd, "Deployment", canary, "spec.template.spec.volumes[countersign-flags].configMap.name", "", "countersign-flags-v3")
	has(t, pd, "Deployment", canary, "metadata.annotations[countersign.dev/step]", "", "plan")
	has(t, ps, "Deployment", stable, "spec.replicas", "2", "3")
	has(t, pdr, "Deployment", canary, "spec.replicas", "1", "0")
	has(t, pr, "Deployment", stable, "spec.template.spec.containers[node].image", v1.Artifact, "registry.example/countersign@sha256:"+digest0)
	has(t, pr, "Deployment", stable, "spec.template.metadata.annotations[countersign.dev/rollback-of]", "", "1")
	has(t, pm, "ReplicaSet", e.replicaSet(t, "stable", 2).Name, "metadata.annotations[countersign.dev/known-good]", "", "2026-05-01T09:00:00.000000000Z")
	for _, c := range append(ps, pdr...) {
		if c.Field != "spec.replicas" && !strings.HasPrefix(c.Field, "metadata.annotations[") {
			t.Errorf("a scale plan changes %s", c)
		}
	}

	// Each plan is what the operation then does, field for field.
	if got := e.realChanges(t, "stable", func() error { return f.MarkGood(pctx, "stable", 2) }); len(got) != 0 {
		t.Errorf("MarkGood changed the Deployment: %v", got)
	}
	rs := e.replicaSet(t, "stable", 2)
	if rs.Annotations[annKnownGood] != "2026-05-01T09:00:00.000000000Z" {
		t.Errorf("known-good = %q", rs.Annotations[annKnownGood])
	}
	steps := []struct {
		name string
		pool string
		plan func() ([]fleet.Change, error)
		op   func() error
	}{
		{"deploy", "canary", func() ([]fleet.Change, error) { return f.PlanDeploy(pctx, "canary", v3, 2) },
			func() error { _, err := f.Deploy(pctx, "canary", v3, 2); return err }},
		{"scale", "stable", func() ([]fleet.Change, error) { return f.PlanScale(pctx, "stable", 3) },
			func() error { return f.Scale(pctx, "stable", 3) }},
		{"rollback", "stable", func() ([]fleet.Change, error) { return f.PlanRollback(pctx, "stable", 1) },
			func() error { _, err := f.Rollback(pctx, "stable", 1); return err }},
		{"drain", "canary", func() ([]fleet.Change, error) { return f.PlanDrain(pctx, "canary") },
			func() error { _, err := f.Drain(pctx, "canary"); return err }},
	}
	for _, s := range steps {
		plan, err := s.plan()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var want []fleet.Change
		for _, c := range plan {
			if c.Kind == "Deployment" {
				want = append(want, c)
			}
		}
		got := e.realChanges(t, s.pool, s.op)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s changed\n%v\nplan said\n%v", s.name, got, want)
		}
		if s.name == "deploy" {
			cm, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(ctx, "countersign-flags-v3", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			real, _ := diffObjects("ConfigMap", e.ns, cm.Name, nil, cm)
			var planned []fleet.Change
			for _, c := range plan {
				if c.Kind == "ConfigMap" {
					planned = append(planned, c)
				}
			}
			if !reflect.DeepEqual(real, planned) {
				t.Errorf("ConfigMap\n%v\nplan said\n%v", real, planned)
			}
		}
	}
}

func TestNeverReadyRestoresPrevious(t *testing.T) {
	e := setup(t, "stable")
	// KWOK plays the kubelet and readiness always passes; a pod no node
	// may take stays Pending, as an image that never pulls would.
	never := func(pool string, rel fleet.Release, tmpl *corev1ac.PodTemplateSpecApplyConfiguration) error {
		if rel.ID == "v-never" {
			tmpl.Spec.WithNodeSelector(map[string]string{"countersign.dev/test-no-such-node": "true"})
		}
		return nil
	}
	f := e.fleetFor(t, 4*time.Second, never)
	ctx := t.Context()
	v1 := release(t, "v1", digestA, "")
	if _, err := f.Deploy(ctx, "stable", v1, 2); err != nil {
		t.Fatal(err)
	}
	bad := release(t, "v-never", digestB, "")
	began := time.Now()
	rev, err := f.Deploy(withCause(ctx, "deploy-never"), "stable", bad, 2)
	if !errors.Is(err, fleet.ErrNotReady) || !strings.Contains(err.Error(), "not scheduled") ||
		!strings.Contains(err.Error(), "revision 3 failed") || !strings.Contains(err.Error(), "revision 2 restored as revision 4") {
		t.Fatalf("Deploy of a release that never gets ready = %+v, %v", rev, err)
	}
	t.Logf("failed deploy and restore took %s: %v", time.Since(began).Round(time.Millisecond), err)
	h, err := f.History(ctx, "stable")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range h {
		got = append(got, r.Release.ID+":"+string(r.Status))
	}
	if want := []string{":superseded", "v1:superseded", "v-never:failed", "v1:current"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	if r := revisionN(t, h, 4); r.RollbackOf != 2 {
		t.Errorf("restored revision = %+v, want rollback of 2", r)
	}
	if rs := e.replicaSet(t, "stable", 3); !strings.Contains(rs.Annotations[annFailedReason], "not ready") || rs.Annotations[annFailed] == "" {
		t.Errorf("failed ReplicaSet annotations %v", rs.Annotations)
	}
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Revision != 4 || st[0].Release.ID != "v1" || st[0].Ready != 2 || st[0].Desired != 2 {
		t.Errorf("Status = %+v", st)
	}
	for _, p := range e.pods(t, "stable") {
		if img := nodeContainer(&p.Spec).Image; img != v1.Artifact || p.Status.Phase != "Running" {
			t.Errorf("pod %s: %s %s", p.Name, img, p.Status.Phase)
		}
	}
	if err := f.MarkGood(ctx, "stable", 3); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("MarkGood of the failed revision: %v", err)
	}

	// A cancelled caller does not leave the pool half rolled out: the
	// restore still runs.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := f.Deploy(cctx, "stable", bad, 2); !errors.Is(err, fleet.ErrNotReady) {
		t.Fatalf("Deploy with a short deadline: %v", err)
	}
	if st, _ := f.Status(ctx); st[0].Revision != 6 || st[0].Release.ID != "v1" || st[0].Ready != 2 {
		t.Errorf("after a cancelled deploy: %+v", st[0])
	}
}
