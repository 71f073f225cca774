package kube

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/countersign/countersign/internal/fleet"
)

// Status implements fleet.Fleet for every pool Deployment in the namespace
// (label countersign.dev/pool), sorted by pool. Ready is the Deployment's
// readyReplicas; Restarts sums the restart counts of the containers of the
// pool's pods; Endpoints is the pool's Service (Config.Endpoint) when a pod
// is ready and every pod runs the current revision (not mid-rollout), since
// the Service, not a pod address, is what routes reach.
func (f *Fleet) Status(ctx context.Context) ([]fleet.PoolStatus, error) {
	ps, err := f.pools(ctx)
	if err != nil {
		return nil, err
	}
	pods, err := f.c.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: nodeSelector})
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: list pods in %s: %w", f.ns, err)
	}
	out := []fleet.PoolStatus{}
	for _, s := range ps {
		if s.pool == "" {
			continue
		}
		st := fleet.PoolStatus{Pool: s.pool, Desired: int(desired(s.dep)), Ready: int(s.dep.Status.ReadyReplicas), Endpoints: []string{}}
		hash := ""
		if cur, rs, ok := s.current(); ok {
			st.Revision, st.Release = cur.Number, cur.Release
			hash = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		}
		sel, err := podSelector(s.dep)
		if err != nil {
			return nil, err
		}
		mixed := false // pods of another revision, or terminating, still in the pool
		for i := range pods.Items {
			p := &pods.Items[i]
			if !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			for _, c := range p.Status.ContainerStatuses {
				st.Restarts += int(c.RestartCount)
			}
			if p.DeletionTimestamp != nil || p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
				mixed = true
			}
		}
		// The Service is reported only once every pod behind it runs the
		// current revision: mid-rollout it answers for two releases, and a
		// probe expecting Release would take the old one's answers for
		// drift.
		if st.Ready > 0 && !mixed {
			st.Endpoints = []string{f.cfg.Endpoint(s.pool)}
		}
		out = append(out, st)
	}
	return out, nil
}
