package kube

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// restorePoint is what a pool ran before a rollout: what a failed rollout
// goes back to.
type restorePoint struct {
	template *corev1.PodTemplateSpec
	replicas int32
	number   int // its revision, 0 if the controller never made one
}

// rollout applies tmpl with replicas to the pool's Deployment and waits
// until it is complete; if it is not within ReadyTimeout, it marks the new
// revision failed and restores the previous template as a new revision.
// The pool's operation lock must be held.
func (f *Fleet) rollout(ctx context.Context, s *poolState, tmpl *corev1ac.PodTemplateSpecApplyConfiguration, replicas int32, what string) (fleet.Revision, error) {
	token := tmpl.Annotations[annRevision]
	prev := restorePoint{
		template: s.dep.Spec.Template.DeepCopy(),
		replicas: desired(s.dep),
		number:   intAnnotation(s.dep.Annotations, annK8sRevision),
	}
	dep, err := f.applyDeployment(ctx, f.deploymentApply(s.dep, tmpl, replicas, causeAnnotations(fleet.CauseFrom(ctx), what)), false)
	if err != nil {
		return fleet.Revision{}, err
	}
	rs, err := f.waitRollout(ctx, dep, token)
	if err != nil {
		return fleet.Revision{}, f.restore(ctx, s.pool, prev, token, err)
	}
	after, err := f.load(ctx, s.pool)
	if err != nil {
		return fleet.Revision{}, err
	}
	rev, _, err := after.find(revisionOf(rs))
	if err != nil {
		return fleet.Revision{}, err
	}
	f.log.InfoContext(ctx, "fleet: rolled out", "pool", s.pool, "revision", rev.Number, "release", rev.Release.ID, "replicaset", rs.Name)
	return rev, nil
}

// waitRollout waits, like "kubectl rollout status", until the controller
// has observed dep's generation, the ReplicaSet of the template stamped
// token is the newest, every desired replica is updated and available, and
// no pod of another template is left (terminating ones included). It
// returns that ReplicaSet (nil if the controller never made it) and, after
// ReadyTimeout, an error wrapping fleet.ErrNotReady.
func (f *Fleet) waitRollout(ctx context.Context, dep *appsv1.Deployment, token string) (*appsv1.ReplicaSet, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ReadyTimeout)
	defer cancel()
	var rs *appsv1.ReplicaSet
	last := "" // the last progress read, kept when the deadline cuts a read short
	for {
		r, progress, err := f.rolloutStep(ctx, dep.Name, dep.Generation, token)
		if r != nil {
			rs = r
		}
		if err == nil && progress == "" {
			return rs, nil
		}
		switch {
		case err == nil:
			last = progress
		case !cutShort(ctx, err) || last == "":
			last = err.Error()
		}
		if werr := f.pause(ctx); werr != nil {
			return rs, fmt.Errorf("%w: %s (waited %s): %w", fleet.ErrNotReady, last, f.cfg.ReadyTimeout, werr)
		}
	}
}

// cutShort reports whether err is a read the rollout's deadline cut short
// rather than a failure worth reporting: the context ended, or client-go's
// rate limiter refused to wait past the deadline (its error, from
// x/time/rate, does not wrap context.DeadlineExceeded).
func cutShort(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "would exceed context deadline")
}

// rolloutStep reads the rollout once; progress is empty when it is
// complete.
func (f *Fleet) rolloutStep(ctx context.Context, name string, gen int64, token string) (*appsv1.ReplicaSet, string, error) {
	dep, err := f.c.AppsV1().Deployments(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("get Deployment %s/%s: %w", f.ns, name, err)
	}
	if dep.Status.ObservedGeneration < gen {
		return nil, fmt.Sprintf("the deployment controller has not observed generation %d", gen), nil
	}
	sel, err := podSelector(dep)
	if err != nil {
		return nil, "", err
	}
	list, err := f.c.AppsV1().ReplicaSets(f.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, "", fmt.Errorf("list ReplicaSets: %w", err)
	}
	var rs *appsv1.ReplicaSet
	for _, r := range ownedBy(dep.UID, list.Items) {
		if r.Spec.Template.Annotations[annRevision] == token {
			rs = r
		}
	}
	switch {
	case rs == nil:
		return nil, "no ReplicaSet for the new template yet", nil
	case dep.Annotations[annK8sRevision] != strconv.Itoa(revisionOf(rs)):
		return rs, fmt.Sprintf("ReplicaSet %s is not the newest revision (%s): the template was changed meanwhile", rs.Name, dep.Annotations[annK8sRevision]), nil
	}
	pods, err := f.c.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return rs, "", fmt.Errorf("list pods: %w", err)
	}
	old, terminating, why := 0, 0, ""
	for i := range pods.Items {
		p := &pods.Items[i]
		switch {
		case p.Labels[labelHash] != rs.Labels[labelHash]:
			old++
		case p.DeletionTimestamp != nil:
			terminating++
		case why == "":
			if r := notReadyReason(p); r != "" {
				why = "; pod " + p.Name + ": " + r
			}
		}
	}
	if !rolloutComplete(dep) || old > 0 || terminating > 0 {
		return rs, fmt.Sprintf("%d of %d replicas of revision %d available, %d pods of earlier revisions left, %d terminating%s",
			rs.Status.AvailableReplicas, desired(dep), revisionOf(rs), old, terminating, why), nil
	}
	return rs, "", nil
}

// notReadyReason says why a pod is not ready ("" if it is): unschedulable,
// a waiting container (ImagePullBackOff, CrashLoopBackOff), or its phase.
func notReadyReason(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "not scheduled: " + c.Reason + ": " + c.Message
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return "container " + cs.Name + " waiting: " + w.Reason + ": " + w.Message
		}
	}
	return "phase " + string(p.Status.Phase) + ", not ready"
}

// pause waits one PollInterval, or returns ctx's error.
func (f *Fleet) pause(ctx context.Context) error {
	t := time.NewTimer(f.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// restore handles a rollout that did not complete: it marks the new
// revision failed and re-applies the previous template as a new revision
// (rollback-of the previous one), and waits for it. It runs to its end
// even when ctx was cancelled, so the pool is not left half rolled out. It
// returns an error wrapping cause (and so fleet.ErrNotReady).
func (f *Fleet) restore(ctx context.Context, pool string, prev restorePoint, token string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*f.cfg.ReadyTimeout)
	defer cancel()
	s, err := f.load(ctx, pool)
	if err != nil {
		return fmt.Errorf("%w; reading the pool to restore it: %w", cause, err)
	}
	failed, failedName := 0, "the new template (no ReplicaSet was made for it)"
	for _, rs := range s.rss {
		if rs.Spec.Template.Annotations[annRevision] != token {
			continue
		}
		failed, failedName = revisionOf(rs), "revision "+strconv.Itoa(revisionOf(rs))
		mark := map[string]string{annFailed: f.cfg.Now().UTC().Format(timeLayout), annFailedReason: cause.Error()}
		if err := f.patchReplicaSet(ctx, rs, mark); err != nil {
			return fmt.Errorf("%w; marking revision %d failed: %w", cause, failed, err)
		}
	}
	log := f.log.With("pool", pool, "failed_revision", failed, "restore", prev.number)
	if prev.number == 0 {
		// Nothing ran before: stop the new pods, as fleet/local does.
		ac, err := f.scaleApply(s.dep, 0, causeAnnotations(fleet.CauseFrom(ctx), fmt.Sprintf("stop %s after %s was not ready", pool, failedName)))
		if err == nil {
			_, err = f.applyDeployment(ctx, ac, false)
		}
		log.ErrorContext(ctx, "fleet: rollout failed, no earlier revision, scaled to 0", "err", cause)
		return errors.Join(fmt.Errorf("%s failed and no earlier revision exists (scaled to 0): %w", failedName, cause), err)
	}
	next := s.maxRevision() + 1
	tmpl, err := templateApply(prev.template, prev.number, next)
	if err != nil {
		return fmt.Errorf("%w; restoring revision %d: %w", cause, prev.number, err)
	}
	what := fmt.Sprintf("restore revision %d of %s after %s was not ready", prev.number, pool, failedName)
	dep, err := f.applyDeployment(ctx, f.deploymentApply(s.dep, tmpl, prev.replicas, causeAnnotations(fleet.CauseFrom(ctx), what)), false)
	if err != nil {
		return fmt.Errorf("%w; restoring revision %d: %w", cause, prev.number, err)
	}
	if _, err := f.waitRollout(ctx, dep, strconv.Itoa(next)); err != nil {
		log.ErrorContext(ctx, "fleet: rollout failed and the restore is not ready either", "err", err)
		return fmt.Errorf("%s failed: %w; restoring revision %d as revision %d: %w", failedName, cause, prev.number, next, err)
	}
	log.WarnContext(ctx, "fleet: rollout failed, previous revision restored", "revision", next, "err", cause)
	return fmt.Errorf("%s failed: %w; revision %d restored as revision %d", failedName, cause, prev.number, next)
}
