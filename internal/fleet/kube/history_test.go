package kube

import (
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/countersign/countersign/internal/fleet"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testRS(owner types.UID, rev int, release string, ann map[string]string) appsv1.ReplicaSet {
	a := map[string]string{annK8sRevision: strconv.Itoa(rev)}
	for k, v := range ann {
		a[k] = v
	}
	return appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: "countersign-node-canary-" + strconv.Itoa(rev), Annotations: a,
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(rev) * time.Minute)),
			OwnerReferences:   []metav1.OwnerReference{{UID: owner, Controller: ptr.To(true), Kind: "Deployment", Name: "countersign-node-canary"}},
		},
		Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{annRelease: release}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "node", Image: "r/c@sha256:" + digestA}}},
		}},
	}
}

// testDep is a Deployment at revision rev whose rollout is complete or
// not.
func testDep(rev int, complete bool) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{UID: "dep-uid", Generation: 5, Annotations: map[string]string{annK8sRevision: strconv.Itoa(rev)}},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 5, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2},
	}
	if !complete {
		d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.AvailableReplicas = 3, 1, 0
	}
	return d
}

func statuses(revs []fleet.Revision) []string {
	var out []string
	for _, r := range revs {
		out = append(out, strconv.Itoa(r.Number)+":"+string(r.Status))
	}
	return out
}

func TestRevisions(t *testing.T) {
	good := map[string]string{annKnownGood: "2026-03-01T12:30:00.000000000Z"}
	failed := map[string]string{annFailed: "2026-03-01T12:40:00Z", annFailedReason: "not ready"}
	foreign := testRS("other-uid", 9, "x", nil)
	noRev := testRS("dep-uid", 1, "x", nil)
	delete(noRev.Annotations, annK8sRevision)
	tests := []struct {
		name string
		dep  *appsv1.Deployment
		rss  []appsv1.ReplicaSet
		want []string
	}{
		{"complete", testDep(2, true),
			[]appsv1.ReplicaSet{testRS("dep-uid", 2, "v2", nil), testRS("dep-uid", 1, "v1", good), foreign, noRev},
			[]string{"1:superseded", "2:current"}},
		{"rolling out", testDep(3, false),
			[]appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil), testRS("dep-uid", 2, "v2", nil), testRS("dep-uid", 3, "v3", nil)},
			[]string{"1:superseded", "2:current", "3:deploying"}},
		{"failed then restoring", testDep(4, false),
			[]appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil), testRS("dep-uid", 3, "bad", failed), testRS("dep-uid", 4, "v1", nil)},
			[]string{"1:current", "3:failed", "4:deploying"}},
		{"failed newest", testDep(2, false),
			[]appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil), testRS("dep-uid", 2, "bad", failed)},
			[]string{"1:current", "2:failed"}},
		{"restored", testDep(3, true),
			[]appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil), testRS("dep-uid", 2, "bad", failed), testRS("dep-uid", 3, "v1", nil)},
			[]string{"1:superseded", "2:failed", "3:current"}},
		{"controller behind", func() *appsv1.Deployment { d := testDep(2, true); d.Status.ObservedGeneration = 4; return d }(),
			[]appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil), testRS("dep-uid", 2, "v2", nil)},
			[]string{"1:current", "2:deploying"}},
		{"drained", func() *appsv1.Deployment {
			d := testDep(1, true)
			d.Spec.Replicas = ptr.To[int32](0)
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: 5} // the API omits zero counts
			return d
		}(), []appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", nil)}, []string{"1:current"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &poolState{pool: "canary", dep: tt.dep, rss: ownedBy(tt.dep.UID, tt.rss)}
			revs := s.revisions()
			if got := statuses(revs); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("statuses = %v, want %v", got, tt.want)
			}
		})
	}
	s := &poolState{pool: "canary", dep: testDep(2, true),
		rss: ownedBy("dep-uid", []appsv1.ReplicaSet{testRS("dep-uid", 1, "v1", good), testRS("dep-uid", 2, "v2", map[string]string{annKnownGood: "by hand"})})}
	revs := s.revisions()
	if !revs[0].Good || !revs[0].MarkedGoodAt.Equal(time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)) || revs[0].Release.ID != "v1" ||
		revs[0].Pool != "canary" || !revs[0].CreatedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("revision 1 = %+v", revs[0])
	}
	if !revs[1].Good || !revs[1].MarkedGoodAt.IsZero() {
		t.Errorf("a mark that is not a time still counts as good, with no time: %+v", revs[1])
	}
	if _, _, err := s.find(3); err == nil {
		t.Error("find(3) found a revision that does not exist")
	}
	if s.maxRevision() != 2 {
		t.Errorf("maxRevision = %d", s.maxRevision())
	}
}

func TestNewerOrdersKnownGood(t *testing.T) {
	a := fleet.Revision{Number: 1, CreatedAt: t0, MarkedGoodAt: t0.Add(time.Second)}
	b := fleet.Revision{Number: 1, CreatedAt: t0, MarkedGoodAt: t0.Add(2 * time.Second)}
	c := fleet.Revision{Number: 2, CreatedAt: t0, MarkedGoodAt: t0.Add(2 * time.Second)}
	d := fleet.Revision{Number: 1, CreatedAt: t0.Add(time.Second)}
	for _, tt := range []struct {
		x, y fleet.Revision
		want bool
	}{{b, a, true}, {a, b, false}, {c, b, true}, {d, c, true}, {c, d, false}} {
		if got := newer(tt.x, tt.y); got != tt.want {
			t.Errorf("newer(%+v, %+v) = %v, want %v", tt.x, tt.y, got, tt.want)
		}
	}
}

func TestClientFromKubeconfig(t *testing.T) {
	p := writeKubeconfig(t)
	_, cfg, err := ClientFromKubeconfig(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:1" || cfg.BearerToken != "t" {
		t.Errorf("rest config host %q token set %v", cfg.Host, cfg.BearerToken != "")
	}
	if _, _, err := ClientFromKubeconfig(p, "no-such-context"); err == nil {
		t.Error("unknown context accepted")
	}
	t.Setenv("KUBECONFIG", p)
	if _, cfg, err := ClientFromKubeconfig("", ""); err != nil || cfg.Host != "https://127.0.0.1:1" {
		t.Errorf("from $KUBECONFIG: %v, %v", cfg, err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}
