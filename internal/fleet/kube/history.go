package kube

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/countersign/countersign/internal/fleet"
)

// nodeSelector selects the pool Deployments and everything they own.
const nodeSelector = "app.kubernetes.io/name=countersign,app.kubernetes.io/component=node"

// poolState is a pool's Deployment and its ReplicaSets as read at one
// moment.
type poolState struct {
	pool string
	dep  *appsv1.Deployment
	rss  []*appsv1.ReplicaSet // owned by dep, with a revision, oldest first
}

// getDeployment reads the pool's Deployment; a missing one is
// fleet.ErrNotFound with the reason.
func (f *Fleet) getDeployment(ctx context.Context, pool string) (*appsv1.Deployment, error) {
	name := f.cfg.DeploymentName(pool)
	dep, err := f.c.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: pool %q: Deployment %s/%s does not exist; the manifests create pool Deployments, the control plane only changes them",
			fleet.ErrNotFound, pool, f.ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: get Deployment %s/%s: %w", f.ns, name, err)
	}
	return dep, nil
}

// load reads the pool's Deployment and ReplicaSets.
func (f *Fleet) load(ctx context.Context, pool string) (*poolState, error) {
	dep, err := f.getDeployment(ctx, pool)
	if err != nil {
		return nil, err
	}
	sel, err := podSelector(dep)
	if err != nil {
		return nil, err
	}
	list, err := f.c.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: list ReplicaSets of %s/%s: %w", f.ns, dep.Name, err)
	}
	return &poolState{pool: pool, dep: dep, rss: ownedBy(dep.UID, list.Items)}, nil
}

// ownedBy returns the ReplicaSets whose controller is the Deployment uid
// and that carry a revision number, oldest first.
func ownedBy(uid types.UID, items []appsv1.ReplicaSet) []*appsv1.ReplicaSet {
	var out []*appsv1.ReplicaSet
	for i := range items {
		rs := &items[i]
		ref := metav1.GetControllerOf(rs)
		if ref == nil || ref.UID != uid || revisionOf(rs) == 0 {
			continue
		}
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b *appsv1.ReplicaSet) int { return cmp.Compare(revisionOf(a), revisionOf(b)) })
	return out
}

func revisionOf(rs *appsv1.ReplicaSet) int { return intAnnotation(rs.Annotations, annK8sRevision) }

// rolloutComplete is "kubectl rollout status" succeeding, read from the
// Deployment's status alone: the controller saw the latest spec, every
// desired replica is updated and available, and no old replica remains.
func rolloutComplete(dep *appsv1.Deployment) bool {
	st := dep.Status
	return st.ObservedGeneration >= dep.Generation &&
		st.UpdatedReplicas == desired(dep) &&
		st.Replicas == st.UpdatedReplicas &&
		st.AvailableReplicas == st.UpdatedReplicas
}

// desired is spec.replicas, which the API server defaults to 1.
func desired(dep *appsv1.Deployment) int32 {
	if dep.Spec.Replicas == nil {
		return 1
	}
	return *dep.Spec.Replicas
}

// maxRevision is the highest revision number the pool has used.
func (s *poolState) maxRevision() int {
	n := intAnnotation(s.dep.Annotations, annK8sRevision)
	for _, rs := range s.rss {
		n = max(n, revisionOf(rs))
	}
	return n
}

// revisions derives the pool's history. The newest ReplicaSet is current
// once the rollout is complete and deploying before; while it deploys (or
// once it is marked failed, before the restore), the newest earlier one
// that did not fail is still current. A ReplicaSet marked failed stays
// failed.
func (s *poolState) revisions() []fleet.Revision {
	out := make([]fleet.Revision, len(s.rss))
	for i, rs := range s.rss {
		r := fleet.Revision{
			Pool: s.pool, Number: revisionOf(rs), Release: releaseFromTemplate(&rs.Spec.Template),
			CreatedAt:  rs.CreationTimestamp.UTC(),
			RollbackOf: intAnnotation(rs.Spec.Template.Annotations, annRollbackOf),
			Status:     fleet.StatusSuperseded,
		}
		if t, ok := timeAnnotation(rs.Annotations, annKnownGood); ok {
			r.Good, r.MarkedGoodAt = true, t.UTC()
		}
		if _, failed := rs.Annotations[annFailed]; failed {
			r.Status = fleet.StatusFailed
		}
		out[i] = r
	}
	if len(out) == 0 {
		return out
	}
	newest := &out[len(out)-1]
	if newest.Status != fleet.StatusFailed {
		if rolloutComplete(s.dep) && s.templateIsNewest() {
			newest.Status = fleet.StatusCurrent
			return out
		}
		newest.Status = fleet.StatusDeploying
	}
	for i := len(out) - 2; i >= 0; i-- {
		if out[i].Status != fleet.StatusFailed {
			out[i].Status = fleet.StatusCurrent
			break
		}
	}
	return out
}

// templateIsNewest reports whether the controller has made a ReplicaSet for
// the Deployment's template yet (the deployment's revision annotation names
// the newest ReplicaSet).
func (s *poolState) templateIsNewest() bool {
	return s.dep.Annotations[annK8sRevision] == strconv.Itoa(revisionOf(s.rss[len(s.rss)-1]))
}

// find returns revision n and its ReplicaSet.
func (s *poolState) find(n int) (fleet.Revision, *appsv1.ReplicaSet, error) {
	for i, r := range s.revisions() {
		if r.Number == n {
			return r, s.rss[i], nil
		}
	}
	return fleet.Revision{}, nil, fmt.Errorf("%w: pool %q has no revision %d", fleet.ErrNotFound, s.pool, n)
}

// current returns the current revision and its ReplicaSet, ok false if
// none.
func (s *poolState) current() (fleet.Revision, *appsv1.ReplicaSet, bool) {
	revs := s.revisions()
	for i := len(revs) - 1; i >= 0; i-- {
		if revs[i].Status == fleet.StatusCurrent {
			return revs[i], s.rss[i], true
		}
	}
	return fleet.Revision{}, nil, false
}

// History implements fleet.Fleet.
func (f *Fleet) History(ctx context.Context, pool string) ([]fleet.Revision, error) {
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	s, err := f.load(ctx, pool)
	if err != nil {
		return nil, err
	}
	return s.revisions(), nil
}

// pools reads every pool Deployment in the namespace and their
// ReplicaSets, sorted by pool name, with two list calls.
func (f *Fleet) pools(ctx context.Context) ([]*poolState, error) {
	deps, err := f.c.AppsV1().Deployments(f.ns).List(ctx, metav1.ListOptions{LabelSelector: nodeSelector + "," + labelPool})
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: list pool Deployments in %s: %w", f.ns, err)
	}
	rss, err := f.c.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{LabelSelector: nodeSelector})
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: list ReplicaSets in %s: %w", f.ns, err)
	}
	var out []*poolState
	for i := range deps.Items {
		dep := &deps.Items[i]
		out = append(out, &poolState{pool: dep.Labels[labelPool], dep: dep, rss: ownedBy(dep.UID, rss.Items)})
	}
	slices.SortFunc(out, func(a, b *poolState) int { return cmp.Compare(a.pool, b.pool) })
	return out, nil
}

// LastKnownGood implements fleet.Fleet. ReplicaSet creation times have
// one-second resolution: among revisions created in the same second, the
// one marked good last wins, then the higher number.
func (f *Fleet) LastKnownGood(ctx context.Context) (fleet.Revision, error) {
	ps, err := f.pools(ctx)
	if err != nil {
		return fleet.Revision{}, err
	}
	var best *fleet.Revision
	for _, s := range ps {
		for _, r := range s.revisions() {
			if r.Good && (best == nil || newer(r, *best)) {
				best = &r
			}
		}
	}
	if best == nil {
		return fleet.Revision{}, fleet.ErrNoKnownGood
	}
	return *best, nil
}

func newer(a, b fleet.Revision) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	if !a.MarkedGoodAt.Equal(b.MarkedGoodAt) {
		return a.MarkedGoodAt.After(b.MarkedGoodAt)
	}
	return a.Number > b.Number
}

// MarkGood implements fleet.Fleet: it annotates the revision's ReplicaSet
// with countersign.dev/known-good (a merge patch, preconditioned on the
// ReplicaSet's UID). A revision already marked is left as it is.
func (f *Fleet) MarkGood(ctx context.Context, pool string, revision int) error {
	if err := checkPool(pool); err != nil {
		return err
	}
	s, err := f.load(ctx, pool)
	if err != nil {
		return err
	}
	r, rs, err := s.find(revision)
	switch {
	case err != nil:
		return err
	case r.Status == fleet.StatusFailed || r.Status == fleet.StatusDeploying:
		return fmt.Errorf("%w: revision %d of %s is %s", fleet.ErrInvalid, revision, pool, r.Status)
	case r.Good:
		return nil
	}
	ann := map[string]string{
		annKnownGood:      f.cfg.Now().UTC().Format(timeLayout),
		annKnownGoodCause: causeJSON(fleet.CauseFrom(ctx)),
	}
	if err := f.patchReplicaSet(ctx, rs, ann); err != nil {
		return err
	}
	f.log.InfoContext(ctx, "fleet: revision marked good", "pool", pool, "revision", revision, "release", r.Release.ID, "replicaset", rs.Name)
	return nil
}

// timeLayout keeps marks ordered within a second.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// patchReplicaSet sets annotations on rs; it never creates a ReplicaSet.
func (f *Fleet) patchReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet, ann map[string]string) error {
	_, err := f.c.AppsV1().ReplicaSets(f.ns).Patch(ctx, rs.Name, types.MergePatchType,
		mergePatchAnnotations(string(rs.UID), ann), metav1.PatchOptions{FieldManager: f.cfg.FieldManager})
	if err != nil {
		return fmt.Errorf("fleet/kube: annotate ReplicaSet %s/%s: %w", f.ns, rs.Name, err)
	}
	return nil
}

// podSelector is the label selector of the pool's pods.
func podSelector(dep *appsv1.Deployment) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: Deployment %s/%s selector: %w", dep.Namespace, dep.Name, err)
	}
	return sel, nil
}
