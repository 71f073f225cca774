package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// Deploy implements fleet.Fleet: it applies the release's flags ConfigMap
// (if any) and the pool Deployment's template and replicas, then waits for
// the rollout as "kubectl rollout status" does. A rollout not complete
// within ReadyTimeout is marked failed and the previous template restored
// as a new revision; the error wraps fleet.ErrNotReady.
func (f *Fleet) Deploy(ctx context.Context, pool string, rel fleet.Release, replicas int) (fleet.Revision, error) {
	p, err := f.prepareDeploy(pool, rel, replicas)
	if err != nil {
		return fleet.Revision{}, err
	}
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.Revision{}, err
	}
	defer unlock()
	s, tmpl, _, err := f.deployTemplate(ctx, pool, p)
	if err != nil {
		return fleet.Revision{}, err
	}
	cause := fleet.CauseFrom(ctx)
	what := fmt.Sprintf("deploy %s to %s with %d replicas", rel.ID, pool, replicas)
	if p.flags != nil {
		if _, err := f.applyFlags(ctx, p.flags, rel.ID, causeAnnotations(cause, what), false); err != nil {
			return fleet.Revision{}, err
		}
	}
	f.log.InfoContext(ctx, "fleet: deploying", "pool", pool, "release", rel.ID, "replicas", replicas, "revision", s.maxRevision()+1)
	rev, err := f.rollout(ctx, s, tmpl, int32(replicas), what)
	if err != nil {
		return fleet.Revision{}, fmt.Errorf("fleet/kube: deploy %s to %s: %w", rel.ID, pool, err)
	}
	return rev, nil
}

// deployment is a verified Deploy request.
type deployment struct {
	rel   fleet.Release
	flags *flagsConfigMap
}

// prepareDeploy checks what needs no API: the request, the image digest and
// the flags file.
func (f *Fleet) prepareDeploy(pool string, rel fleet.Release, replicas int) (deployment, error) {
	if err := checkPool(pool); err != nil {
		return deployment{}, err
	}
	if replicas < 0 || replicas > math.MaxInt32 {
		return deployment{}, fmt.Errorf("%w: %d replicas", fleet.ErrInvalid, replicas)
	}
	if err := verifyArtifact(rel); err != nil {
		return deployment{}, err
	}
	flags, err := readFlags(rel)
	if err != nil {
		return deployment{}, err
	}
	return deployment{rel: rel.Clone(), flags: flags}, nil
}

// deployTemplate reads the pool and builds the template of p as its next
// revision, after checking the Deployment can take it and that the flags
// ConfigMap, if it exists, holds these flags.
// It also returns the flags ConfigMap as it is (nil if absent or none).
func (f *Fleet) deployTemplate(ctx context.Context, pool string, p deployment) (*poolState, *corev1ac.PodTemplateSpecApplyConfiguration, *corev1.ConfigMap, error) {
	s, err := f.load(ctx, pool)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkDeployable(s.dep); err != nil {
		return nil, nil, nil, err
	}
	var cm *corev1.ConfigMap
	if p.flags != nil {
		if cm, err = f.existingFlags(ctx, p.flags, p.rel.ID); err != nil {
			return nil, nil, nil, err
		}
	}
	tmpl, err := f.releaseTemplate(pool, p.rel, p.flags, s.maxRevision()+1)
	if err != nil {
		return nil, nil, nil, err
	}
	return s, tmpl, cm, nil
}

// checkDeployable refuses a Deployment a rollout cannot complete on.
func checkDeployable(dep *appsv1.Deployment) error {
	if dep.Spec.Paused {
		return fmt.Errorf("%w: Deployment %s/%s is paused (kubectl rollout resume)", fleet.ErrInvalid, dep.Namespace, dep.Name)
	}
	if nodeContainer(&dep.Spec.Template.Spec) == nil {
		return fmt.Errorf("%w: Deployment %s/%s has no container %q", fleet.ErrInvalid, dep.Namespace, dep.Name, containerName)
	}
	return nil
}

// Rollback implements fleet.Fleet: it copies revision toRevision's pod
// template into the Deployment, annotated countersign.dev/rollback-of, so
// that a new ReplicaSet revision runs it (see the package doc), with the
// pool's current replica count (at least 1), with Deploy's semantics.
func (f *Fleet) Rollback(ctx context.Context, pool string, toRevision int) (fleet.Revision, error) {
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.Revision{}, err
	}
	defer unlock()
	s, tmpl, replicas, err := f.rollbackTemplate(ctx, pool, toRevision)
	if err != nil {
		return fleet.Revision{}, err
	}
	what := fmt.Sprintf("roll %s back to revision %d", pool, toRevision)
	f.log.InfoContext(ctx, "fleet: rolling back", "pool", pool, "to_revision", toRevision, "revision", s.maxRevision()+1)
	rev, err := f.rollout(ctx, s, tmpl, replicas, what)
	if err != nil {
		return fleet.Revision{}, fmt.Errorf("fleet/kube: %s: %w", what, err)
	}
	return rev, nil
}

// rollbackTemplate reads the pool and builds the template re-deploying
// revision n, after checking that its image is still pinned to the digest
// it was deployed with and its flags ConfigMap still holds the same flags.
func (f *Fleet) rollbackTemplate(ctx context.Context, pool string, n int) (*poolState, *corev1ac.PodTemplateSpecApplyConfiguration, int32, error) {
	s, err := f.load(ctx, pool)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := checkDeployable(s.dep); err != nil {
		return nil, nil, 0, err
	}
	_, rs, err := s.find(n)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := f.verifyTemplate(ctx, &rs.Spec.Template); err != nil {
		return nil, nil, 0, fmt.Errorf("fleet/kube: revision %d of %s: %w", n, pool, err)
	}
	tmpl, err := templateApply(&rs.Spec.Template, n, s.maxRevision()+1)
	if err != nil {
		return nil, nil, 0, err
	}
	return s, tmpl, max(desired(s.dep), 1), nil
}

// verifyTemplate re-checks what a template this package wrote says it runs:
// the image digest against countersign.dev/artifact-sha256, and the flags
// ConfigMap's data against countersign.dev/flags-sha256.
func (f *Fleet) verifyTemplate(ctx context.Context, t *corev1.PodTemplateSpec) error {
	if want, ok := t.Annotations[annArtifact]; ok {
		image := ""
		if c := nodeContainer(&t.Spec); c != nil {
			image = c.Image
		}
		if _, got, _ := splitDigest(image); got != want {
			return &fleet.ChecksumError{Artifact: image, Want: want, Got: got}
		}
	}
	name, want := t.Annotations[annFlagsCM], t.Annotations[annFlagsSHA]
	if name == "" || want == "" {
		return nil
	}
	cm, err := f.c.CoreV1().ConfigMaps(f.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("fleet/kube: flags ConfigMap %s/%s: %w", f.ns, name, err)
	}
	if got := sha256Hex([]byte(cm.Data[flagsKey])); got != want {
		return &fleet.ChecksumError{Artifact: "ConfigMap " + f.ns + "/" + name, Want: want, Got: got}
	}
	return nil
}

// templateApply turns an existing pod template (a ReplicaSet's or the
// Deployment's) into an apply configuration of all its fields, without the
// controller's pod-template-hash label, as revision number revision that
// re-deploys revision rollbackOf.
func templateApply(t *corev1.PodTemplateSpec, rollbackOf, revision int) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
	c := t.DeepCopy()
	delete(c.Labels, labelHash)
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[annRollbackOf] = strconv.Itoa(rollbackOf)
	c.Annotations[annRevision] = strconv.Itoa(revision)
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: encode pod template: %w", err)
	}
	out := &corev1ac.PodTemplateSpecApplyConfiguration{}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("fleet/kube: decode pod template as apply configuration: %w", err)
	}
	return out, nil
}

// deploymentApply is the apply configuration of the pool Deployment with a
// template and a replica count, annotated with the cause.
func (f *Fleet) deploymentApply(dep *appsv1.Deployment, tmpl *corev1ac.PodTemplateSpecApplyConfiguration, replicas int32, cause map[string]string) *appsv1ac.DeploymentApplyConfiguration {
	return appsv1ac.Deployment(dep.Name, f.ns).WithAnnotations(cause).
		WithSpec(appsv1ac.DeploymentSpec().WithReplicas(replicas).WithTemplate(tmpl))
}

func (f *Fleet) applyDeployment(ctx context.Context, ac *appsv1ac.DeploymentApplyConfiguration, dryRun bool) (*appsv1.Deployment, error) {
	dep, err := f.c.AppsV1().Deployments(f.ns).Apply(ctx, ac, f.applyOptions(dryRun))
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: apply Deployment %s/%s: %w", f.ns, *ac.Name, err)
	}
	return dep, nil
}

func (f *Fleet) applyOptions(dryRun bool) metav1.ApplyOptions {
	o := metav1.ApplyOptions{FieldManager: f.cfg.FieldManager, Force: true}
	if dryRun {
		o.DryRun = []string{metav1.DryRunAll}
	}
	return o
}

// existingFlags returns the release's flags ConfigMap if it exists (nil if
// not), refusing one that holds other flags or belongs to another release
// id: the ConfigMap is immutable, so every revision of a release runs the
// flags it was verified with.
func (f *Fleet) existingFlags(ctx context.Context, flags *flagsConfigMap, id string) (*corev1.ConfigMap, error) {
	cm, err := f.c.CoreV1().ConfigMaps(f.ns).Get(ctx, flags.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: get ConfigMap %s/%s: %w", f.ns, flags.name, err)
	}
	if owner := cm.Annotations[annRelease]; owner != "" && owner != id {
		return nil, fmt.Errorf("%w release %s: ConfigMap %s/%s holds the flags of release %s (their ids map to the same name)",
			fleet.ErrInvalid, id, f.ns, flags.name, owner)
	}
	if data, ok := cm.Data[flagsKey]; ok {
		if got := sha256Hex([]byte(data)); got != flags.sha256 {
			return nil, fmt.Errorf("%w release %s: ConfigMap %s/%s already holds other flags (sha256 %s, the file has %s); a release's flags never change, give new flags a new release id",
				fleet.ErrInvalid, id, f.ns, flags.name, got, flags.sha256)
		}
	}
	return cm, nil
}

// applyFlags applies the release's flags ConfigMap (immutable).
func (f *Fleet) applyFlags(ctx context.Context, flags *flagsConfigMap, id string, cause map[string]string, dryRun bool) (*corev1.ConfigMap, error) {
	ann := map[string]string{annRelease: id}
	for k, v := range cause {
		ann[k] = v
	}
	ac := corev1ac.ConfigMap(flags.name, f.ns).
		WithLabels(map[string]string{
			"app.kubernetes.io/name": "countersign", "app.kubernetes.io/part-of": "countersign", "app.kubernetes.io/component": "node",
		}).
		WithAnnotations(ann).
		WithData(map[string]string{flagsKey: flags.data}).
		WithImmutable(true)
	cm, err := f.c.CoreV1().ConfigMaps(f.ns).Apply(ctx, ac, f.applyOptions(dryRun))
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: apply ConfigMap %s/%s: %w", f.ns, flags.name, err)
	}
	return cm, nil
}
