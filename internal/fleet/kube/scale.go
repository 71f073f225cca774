package kube

import (
	"context"
	"fmt"
	"math"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// scaleApply is the apply configuration that changes only spec.replicas
// (and the cause): the fields this manager already owns, extracted from
// dep, with a new replica count. Applying fewer fields than it owns would
// make server-side apply remove the others (the release's image, for one).
func (f *Fleet) scaleApply(dep *appsv1.Deployment, replicas int32, cause map[string]string) (*appsv1ac.DeploymentApplyConfiguration, error) {
	ac, err := appsv1ac.ExtractDeployment(dep, f.cfg.FieldManager)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: extract the fields %s owns in Deployment %s/%s: %w", f.cfg.FieldManager, f.ns, dep.Name, err)
	}
	for _, k := range causeKeys {
		delete(ac.Annotations, k)
	}
	ac.WithAnnotations(cause)
	if ac.Spec == nil {
		ac.WithSpec(appsv1ac.DeploymentSpec())
	}
	ac.Spec.WithReplicas(replicas)
	return ac, nil
}

// Scale implements fleet.Fleet: it applies spec.replicas and waits until
// the pool has exactly that many pods, all ready, none terminating.
func (f *Fleet) Scale(ctx context.Context, pool string, replicas int) error {
	if replicas < 0 || replicas > math.MaxInt32 {
		return fmt.Errorf("%w: %d replicas", fleet.ErrInvalid, replicas)
	}
	unlock, err := f.lockPool(pool)
	if err != nil {
		return err
	}
	defer unlock()
	dep, err := f.getDeployment(ctx, pool)
	if err != nil {
		return err
	}
	ac, err := f.scaleApply(dep, int32(replicas), causeAnnotations(fleet.CauseFrom(ctx), fmt.Sprintf("scale %s to %d", pool, replicas)))
	if err != nil {
		return err
	}
	if dep, err = f.applyDeployment(ctx, ac, false); err != nil {
		return err
	}
	if err := f.waitScaled(ctx, dep); err != nil {
		return fmt.Errorf("fleet/kube: scale %s to %d: %w", pool, replicas, err)
	}
	f.log.InfoContext(ctx, "fleet: scaled", "pool", pool, "replicas", replicas)
	return nil
}

// waitScaled waits until the rollout is complete and the pool's pods are
// exactly spec.replicas, none terminating (removed pods are gone, not just
// asked to stop). Pods are counted, not .status.replicas, which the API
// omits at 0.
func (f *Fleet) waitScaled(ctx context.Context, dep *appsv1.Deployment) error {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ReadyTimeout)
	defer cancel()
	sel, err := podSelector(dep)
	if err != nil {
		return err
	}
	for {
		progress := ""
		d, err := f.c.AppsV1().Deployments(f.ns).Get(ctx, dep.Name, metav1.GetOptions{})
		if err == nil {
			var pods int
			var terminating int
			list, lerr := f.c.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			err = lerr
			if err == nil {
				pods = len(list.Items)
				for i := range list.Items {
					if list.Items[i].DeletionTimestamp != nil {
						terminating++
					}
				}
			}
			if err == nil && (d.Status.ObservedGeneration < dep.Generation || !rolloutComplete(d) || pods != int(desired(d)) || terminating > 0) {
				progress = fmt.Sprintf("%d of %d replicas available, %d pods (%d terminating)", d.Status.AvailableReplicas, desired(d), pods, terminating)
			}
		}
		if err != nil {
			progress = err.Error()
		}
		if progress == "" {
			return nil
		}
		if werr := f.pause(ctx); werr != nil {
			return fmt.Errorf("%w: %s (waited %s): %w", fleet.ErrNotReady, progress, f.cfg.ReadyTimeout, werr)
		}
	}
}

// Drain implements fleet.Fleet: it applies spec.replicas 0 and waits until
// every pod of the pool is gone. A pod still present KillSlack after its
// deletionTimestamp (deletion time plus its grace period) is counted as
// killed: the kubelet sends SIGKILL when the grace period ends. The wait is
// bounded by ReadyTimeout plus the template's grace period plus KillSlack.
func (f *Fleet) Drain(ctx context.Context, pool string) (fleet.DrainReport, error) {
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.DrainReport{}, err
	}
	defer unlock()
	start := time.Now()
	dep, err := f.getDeployment(ctx, pool)
	if err != nil {
		return fleet.DrainReport{}, err
	}
	sel, err := podSelector(dep)
	if err != nil {
		return fleet.DrainReport{}, err
	}
	// Pods seen before the change count too: KWOK and fast nodes delete
	// pods before a first look after it.
	killed := map[types.UID]bool{} // every pod seen, and whether it outlived its grace period
	before, err := f.c.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return fleet.DrainReport{}, fmt.Errorf("fleet/kube: drain %s: list pods: %w", pool, err)
	}
	for _, p := range before.Items {
		killed[p.UID] = false
	}
	ac, err := f.scaleApply(dep, 0, causeAnnotations(fleet.CauseFrom(ctx), "drain "+pool))
	if err != nil {
		return fleet.DrainReport{}, err
	}
	if dep, err = f.applyDeployment(ctx, ac, false); err != nil {
		return fleet.DrainReport{}, err
	}
	grace := time.Duration(30) * time.Second
	if g := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, f.cfg.ReadyTimeout+grace+f.cfg.KillSlack)
	defer cancel()
	for {
		list, err := f.c.CoreV1().Pods(f.ns).List(wctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err == nil {
			now := time.Now() // against the API server's timestamps, not the injectable clock of marks
			for i := range list.Items {
				p := &list.Items[i]
				if !killed[p.UID] {
					killed[p.UID] = p.DeletionTimestamp != nil && now.After(p.DeletionTimestamp.Add(f.cfg.KillSlack))
				}
			}
			if len(list.Items) == 0 {
				break
			}
		}
		if werr := f.pause(wctx); werr != nil {
			left := "unknown"
			if list != nil {
				left = fmt.Sprint(len(list.Items))
			}
			return fleet.DrainReport{}, fmt.Errorf("fleet/kube: drain %s: %s pods left after %s (last error %v): %w",
				pool, left, time.Since(start).Round(time.Millisecond), err, werr)
		}
	}
	rep := fleet.DrainReport{Pool: pool, Duration: time.Since(start)}
	for _, k := range killed {
		if k {
			rep.Killed++
		} else {
			rep.Stopped++
		}
	}
	f.log.InfoContext(ctx, "fleet: drained", "pool", pool, "stopped", rep.Stopped, "killed", rep.Killed, "duration", rep.Duration)
	return rep, nil
}
