//go:build kube

package kube

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/countersign/countersign/internal/fleet"
)

func TestDeployStatusGoodDrainRollback(t *testing.T) {
	e := setup(t, "canary", "stable")
	f := e.fleetFor(t, 60*time.Second, nil)
	ctx := t.Context()
	v1 := release(t, "v1.0.0", digestA, `{"flags":{"v":{"state":"ENABLED"}}}`)
	v2 := release(t, "v2.0.0", digestB, "")

	// v1 to stable: the manifests' revision 1, then ours.
	rev, err := f.Deploy(withCause(ctx, "deploy-stable"), "stable", v1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Number != 2 || rev.Status != fleet.StatusCurrent || !reflect.DeepEqual(rev.Release, v1) || rev.Pool != "stable" {
		t.Fatalf("Deploy v1 = %+v", rev)
	}
	dep := e.deployment(t, "stable")
	for k, want := range map[string]string{annIncident: "INC-42", annRunID: "run-1", annStep: "deploy-stable", annActor: "alice",
		annChangeCause: "countersign: deploy v1.0.0 to stable with 2 replicas (incident INC-42, run run-1, step deploy-stable, by alice)"} {
		if got := dep.Annotations[k]; got != want {
			t.Errorf("Deployment annotation %s = %q, want %q", k, got, want)
		}
	}
	cm, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(ctx, "countersign-flags-v1-0-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[flagsKey] != `{"flags":{"v":{"state":"ENABLED"}}}` || cm.Immutable == nil || !*cm.Immutable || cm.Annotations[annIncident] != "INC-42" {
		t.Errorf("flags ConfigMap = %+v", cm)
	}
	pods := e.pods(t, "stable")
	if len(pods) != 2 {
		t.Fatalf("stable has %d pods, want 2", len(pods))
	}
	for _, p := range pods {
		c := nodeContainer(&p.Spec)
		wantArgs := []string{"node", "--pool=stable", "--instance=$(POD_NAME)", "--flags=" + flagsPath, "--listen", "0.0.0.0:7300"}
		if c.Image != v1.Artifact || !reflect.DeepEqual(c.Args, wantArgs) || p.Status.Phase != "Running" {
			t.Errorf("pod %s: image %s args %q phase %s", p.Name, c.Image, c.Args, p.Status.Phase)
		}
	}

	if _, err := f.Deploy(ctx, "canary", v2, 1); err != nil {
		t.Fatal(err)
	}
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []fleet.PoolStatus{
		{Pool: "canary", Revision: 2, Release: v2, Desired: 1, Ready: 1, Endpoints: []string{"http://canary.test:7300"}},
		{Pool: "stable", Revision: 2, Release: v1, Desired: 2, Ready: 2, Endpoints: []string{"http://stable.test:7300"}},
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("Status:\n got %+v\nwant %+v", st, want)
	}

	// Known good, from ReplicaSet annotations.
	if _, err := f.LastKnownGood(ctx); !errors.Is(err, fleet.ErrNoKnownGood) {
		t.Fatalf("LastKnownGood before any mark: %v", err)
	}
	if err := f.MarkGood(withCause(ctx, "verify"), "stable", 2); err != nil {
		t.Fatal(err)
	}
	mark := e.replicaSet(t, "stable", 2).Annotations[annKnownGood]
	if err := f.MarkGood(ctx, "stable", 2); err != nil {
		t.Fatal(err)
	}
	rs := e.replicaSet(t, "stable", 2)
	if rs.Annotations[annKnownGood] != mark || !strings.Contains(rs.Annotations[annKnownGoodCause], `"step":"verify"`) {
		t.Errorf("MarkGood is not idempotent or lost its cause: %v", rs.Annotations)
	}
	lkg, err := f.LastKnownGood(ctx)
	if err != nil || lkg.Pool != "stable" || lkg.Number != 2 || lkg.Release.ID != "v1.0.0" || !lkg.Good {
		t.Fatalf("LastKnownGood = %+v, %v", lkg, err)
	}
	if err := f.MarkGood(ctx, "canary", 2); err != nil {
		t.Fatal(err)
	}
	if lkg, err = f.LastKnownGood(ctx); err != nil || lkg.Pool != "canary" || lkg.Release.ID != "v2.0.0" {
		t.Fatalf("LastKnownGood after marking canary = %+v, %v", lkg, err)
	}
	if err := f.MarkGood(ctx, "canary", 9); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("MarkGood of a missing revision: %v", err)
	}

	// Scale keeps the release (server-side apply must not drop the
	// template fields it owns) and makes no revision.
	if err := f.Scale(ctx, "stable", 3); err != nil {
		t.Fatal(err)
	}
	if n := len(e.pods(t, "stable")); n != 3 {
		t.Errorf("stable has %d pods after Scale(3)", n)
	}
	if h, _ := f.History(ctx, "stable"); len(h) != 2 || nodeContainer(&e.deployment(t, "stable").Spec.Template.Spec).Image != v1.Artifact {
		t.Errorf("Scale changed the template: history %+v", h)
	}

	// Drain canary: every pod gone, current revision kept, Scale brings it back.
	drep, err := f.Drain(ctx, "canary")
	if err != nil {
		t.Fatal(err)
	}
	if drep.Pool != "canary" || drep.Stopped != 1 || drep.Killed != 0 || drep.Duration <= 0 {
		t.Errorf("Drain = %+v", drep)
	}
	if n := len(e.pods(t, "canary")); n != 0 {
		t.Errorf("canary has %d pods after Drain", n)
	}
	st, _ = f.Status(ctx)
	if st[0].Desired != 0 || st[0].Ready != 0 || len(st[0].Endpoints) != 0 || st[0].Revision != 2 {
		t.Errorf("canary after Drain: %+v", st[0])
	}
	if err := f.Scale(ctx, "canary", 1); err != nil {
		t.Fatal(err)
	}
	if p := e.pods(t, "canary"); len(p) != 1 || nodeContainer(&p[0].Spec).Image != v2.Artifact {
		t.Errorf("canary after Scale(1): %d pods", len(p))
	}

	// Promote v2 to stable, then roll back to v1's revision: a new
	// revision whose template is v1's.
	if rev, err = f.Deploy(ctx, "stable", v2, 3); err != nil || rev.Number != 3 {
		t.Fatalf("Deploy v2 to stable = %+v, %v", rev, err)
	}
	rev, err = f.Rollback(withCause(ctx, "rollback"), "stable", 2)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Number != 4 || rev.RollbackOf != 2 || rev.Status != fleet.StatusCurrent || !reflect.DeepEqual(rev.Release, v1) {
		t.Fatalf("Rollback = %+v", rev)
	}
	old, fresh := e.replicaSet(t, "stable", 2).Spec.Template, e.replicaSet(t, "stable", 4).Spec.Template
	for _, k := range []string{annRollbackOf, annRevision} {
		delete(old.Annotations, k)
		delete(fresh.Annotations, k)
	}
	delete(old.Labels, labelHash)
	delete(fresh.Labels, labelHash)
	if !equality.Semantic.DeepEqual(old, fresh) {
		t.Errorf("revision 4's template differs from revision 2's:\n%+v\n%+v", fresh, old)
	}
	h, err := f.History(ctx, "stable")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range h {
		got = append(got, r.Release.ID+":"+string(r.Status))
	}
	if want := []string{":superseded", "v1.0.0:superseded", "v2.0.0:superseded", "v1.0.0:current"}; !reflect.DeepEqual(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	if !revisionN(t, h, 2).Good || revisionN(t, h, 4).Good {
		t.Error("the good mark did not stay on revision 2 alone")
	}
	for _, p := range e.pods(t, "stable") {
		if img := nodeContainer(&p.Spec).Image; img != v1.Artifact {
			t.Errorf("pod %s runs %s after the rollback", p.Name, img)
		}
	}
	if _, err := f.Rollback(ctx, "stable", 42); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("Rollback to a missing revision: %v", err)
	}

	// A rollback applied the whole template; the next deploy applies only
	// the release's fields, and the manifests' fields must survive it.
	if rev, err = f.Deploy(ctx, "stable", v2, 1); err != nil || rev.Number != 5 {
		t.Fatalf("Deploy after the rollback = %+v, %v", rev, err)
	}
	tmpl := e.deployment(t, "stable").Spec.Template
	c := nodeContainer(&tmpl.Spec)
	if c.Image != v2.Artifact || len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != Port ||
		*tmpl.Spec.TerminationGracePeriodSeconds != 5 || tmpl.Labels[labelPool] != "stable" || tmpl.Annotations[annRollbackOf] != "" {
		t.Errorf("template after rollback and deploy: %+v", tmpl)
	}
	if len(tmpl.Spec.Volumes) != 0 || len(c.VolumeMounts) != 0 {
		t.Errorf("v1's flags volume stayed for v2, which has no flags: %+v %+v", tmpl.Spec.Volumes, c.VolumeMounts)
	}
}

func TestChecksumMismatchAndMissingPool(t *testing.T) {
	e := setup(t, "canary")
	f := e.fleetFor(t, 30*time.Second, nil)
	ctx := t.Context()
	bad := release(t, "v9", digestA, `{"flags":{}}`)
	bad.SHA256 = digestB
	before := e.versions(t)
	var ce *fleet.ChecksumError
	if _, err := f.Deploy(ctx, "canary", bad, 1); !errors.As(err, &ce) || ce.Got != digestA || ce.Want != digestB {
		t.Fatalf("Deploy with a wrong digest: %v", err)
	}
	if _, err := f.PlanDeploy(ctx, "canary", bad, 1); !errors.As(err, &ce) {
		t.Fatalf("PlanDeploy with a wrong digest: %v", err)
	}
	if after := e.versions(t); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused deploy changed objects:\n%v\n%v", before, after)
	}
	if h, _ := f.History(ctx, "canary"); len(h) != 1 {
		t.Errorf("history after a refused deploy: %+v", h)
	}

	good := release(t, "v1", digestA, "")
	_, err := f.Deploy(ctx, "nosuch", good, 1)
	if !errors.Is(err, fleet.ErrNotFound) || !strings.Contains(err.Error(), "manifests create pool Deployments") {
		t.Errorf("Deploy into a missing pool: %v", err)
	}
	if _, err := f.History(ctx, "nosuch"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("History of a missing pool: %v", err)
	}

	// A release's flags never change under the same id.
	v1 := release(t, "v1", digestA, `{"flags":{"a":{}}}`)
	if _, err := f.Deploy(ctx, "canary", v1, 1); err != nil {
		t.Fatal(err)
	}
	// The same release again: a new revision, the ConfigMap kept (its
	// data is immutable) and annotated with the new cause.
	if rev, err := f.Deploy(withCause(ctx, "again"), "canary", v1, 1); err != nil || rev.Number != 3 {
		t.Fatalf("Deploy of the same release again = %+v, %v", rev, err)
	}
	cm, err := e.admin.CoreV1().ConfigMaps(e.ns).Get(ctx, "countersign-flags-v1", metav1.GetOptions{})
	if err != nil || cm.Annotations[annStep] != "again" || cm.Data[flagsKey] != `{"flags":{"a":{}}}` {
		t.Fatalf("flags ConfigMap after a second deploy: %+v, %v", cm, err)
	}
	v1b := release(t, "v1", digestA, `{"flags":{"b":{}}}`)
	before = e.versions(t)
	if _, err := f.Deploy(ctx, "canary", v1b, 1); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("Deploy of other flags under the same release id: %v", err)
	}
	if after := e.versions(t); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused deploy changed objects")
	}
}
