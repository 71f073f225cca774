package kube

import (
	"context"
	"fmt"
	"math"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// The plans build the same apply configurations as the operations, send
// them as server-side dry runs (the API server validates, defaults, admits
// and authorizes them, and stores nothing) and diff the current objects
// against what the server answered. They take no pool lock: a plan is a
// read.

// PlanDeploy implements fleet.Planner. It refuses what Deploy would refuse
// before changing anything (a digest mismatch, a missing pool, flags that
// differ from the release's ConfigMap).
func (f *Fleet) PlanDeploy(ctx context.Context, pool string, rel fleet.Release, replicas int) ([]fleet.Change, error) {
	p, err := f.prepareDeploy(pool, rel, replicas)
	if err != nil {
		return nil, err
	}
	s, tmpl, cur, err := f.deployTemplate(ctx, pool, p)
	if err != nil {
		return nil, err
	}
	cause := causeAnnotations(fleet.CauseFrom(ctx), fmt.Sprintf("deploy %s to %s with %d replicas", rel.ID, pool, replicas))
	var out []fleet.Change
	if p.flags != nil {
		dry, err := f.applyFlags(ctx, p.flags, rel.ID, cause, true)
		if err != nil {
			return nil, err
		}
		ch, err := diffObjects("ConfigMap", f.ns, p.flags.name, nilIfAbsent(cur), dry)
		if err != nil {
			return nil, err
		}
		out = append(out, ch...)
	}
	ch, err := f.planDeployment(ctx, s.dep, f.deploymentApply(s.dep, tmpl, int32(replicas), cause))
	if err != nil {
		return nil, err
	}
	return append(out, ch...), nil
}

// nilIfAbsent keeps a missing ConfigMap a nil interface value, so that it
// diffs as "no fields".
func nilIfAbsent(cm *corev1.ConfigMap) any {
	if cm == nil {
		return nil
	}
	return cm
}

// PlanScale implements fleet.Planner.
func (f *Fleet) PlanScale(ctx context.Context, pool string, replicas int) ([]fleet.Change, error) {
	if replicas < 0 || replicas > math.MaxInt32 {
		return nil, fmt.Errorf("%w: %d replicas", fleet.ErrInvalid, replicas)
	}
	return f.planScale(ctx, pool, int32(replicas), fmt.Sprintf("scale %s to %d", pool, replicas))
}

// PlanDrain implements fleet.Planner.
func (f *Fleet) PlanDrain(ctx context.Context, pool string) ([]fleet.Change, error) {
	return f.planScale(ctx, pool, 0, "drain "+pool)
}

func (f *Fleet) planScale(ctx context.Context, pool string, replicas int32, what string) ([]fleet.Change, error) {
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	dep, err := f.getDeployment(ctx, pool)
	if err != nil {
		return nil, err
	}
	ac, err := f.scaleApply(dep, replicas, causeAnnotations(fleet.CauseFrom(ctx), what))
	if err != nil {
		return nil, err
	}
	return f.planDeployment(ctx, dep, ac)
}

// PlanRollback implements fleet.Planner.
func (f *Fleet) PlanRollback(ctx context.Context, pool string, toRevision int) ([]fleet.Change, error) {
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	s, tmpl, replicas, err := f.rollbackTemplate(ctx, pool, toRevision)
	if err != nil {
		return nil, err
	}
	cause := causeAnnotations(fleet.CauseFrom(ctx), fmt.Sprintf("roll %s back to revision %d", pool, toRevision))
	return f.planDeployment(ctx, s.dep, f.deploymentApply(s.dep, tmpl, replicas, cause))
}

// PlanMarkGood lists what MarkGood would change: the ReplicaSet's
// known-good annotations, the time being the plan's (nothing if the
// revision is already marked). It is not part of fleet.Planner.
func (f *Fleet) PlanMarkGood(ctx context.Context, pool string, revision int) ([]fleet.Change, error) {
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	s, err := f.load(ctx, pool)
	if err != nil {
		return nil, err
	}
	r, rs, err := s.find(revision)
	switch {
	case err != nil:
		return nil, err
	case r.Status == fleet.StatusFailed || r.Status == fleet.StatusDeploying:
		return nil, fmt.Errorf("%w: revision %d of %s is %s", fleet.ErrInvalid, revision, pool, r.Status)
	case r.Good:
		return nil, nil
	}
	ann := map[string]string{
		annKnownGood:      f.cfg.Now().UTC().Format(timeLayout),
		annKnownGoodCause: causeJSON(fleet.CauseFrom(ctx)),
	}
	dry, err := f.c.AppsV1().ReplicaSets(f.ns).Patch(ctx, rs.Name, types.MergePatchType, mergePatchAnnotations(string(rs.UID), ann),
		metav1.PatchOptions{FieldManager: f.cfg.FieldManager, DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: dry-run annotate ReplicaSet %s/%s: %w", f.ns, rs.Name, err)
	}
	return diffObjects("ReplicaSet", f.ns, rs.Name, rs, dry)
}

// planDeployment dry-runs ac and diffs dep against the server's answer.
func (f *Fleet) planDeployment(ctx context.Context, dep *appsv1.Deployment, ac *appsv1ac.DeploymentApplyConfiguration) ([]fleet.Change, error) {
	dry, err := f.applyDeployment(ctx, ac, true)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: dry run: %w", err)
	}
	return diffObjects("Deployment", f.ns, dep.Name, dep, dry)
}
