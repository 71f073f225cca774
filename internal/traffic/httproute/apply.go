package httproute

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Applying a change: read, build, record, apply (conditioned on the
// resourceVersion read), and read again on a conflict.

// apply reads the route, builds the change, records it and applies it
// (dryRun: validates it and records nothing), re-reading when the object
// changed in between. A change is recorded again only if the re-read
// changes what would be applied.
func (r *Router) apply(ctx context.Context, b build, dryRun bool) ([]fleet.Change, error) {
	var recorded *change
	for attempt := 1; ; attempt++ {
		obj, rt, err := r.read(ctx)
		if err != nil {
			return nil, err
		}
		st, err := r.l.state(rt)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		c, err := b(rt, st)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		keys := []string{AnnotationWeights, AnnotationGate}
		c.changes = diff("HTTPRoute", r.cfg.Namespace, r.cfg.Route, flatten(rt.rules, rt.annotations, keys), flatten(c.rules, c.annotations, keys))
		if !dryRun && (recorded == nil || !sameChange(recorded, c)) {
			if err := r.record(ctx, c); err != nil {
				return nil, err
			}
			recorded = c
		}
		err = r.applyObject(ctx, obj.GetResourceVersion(), c, dryRun)
		switch {
		case err == nil:
			if !dryRun {
				r.log.InfoContext(ctx, "httproute: applied", "route", r.String(), "change", c.summary, "fields", len(c.changes), "actor", actor(ctx))
			}
			return c.changes, nil
		case apierrors.IsConflict(err) && attempt < maxAttempts:
			r.log.InfoContext(ctx, "httproute: changed since read, reading again", "route", r.String(), "attempt", attempt)
			continue
		case dryRun:
			return nil, fmt.Errorf("%s: dry-run apply: %w", r, err)
		default:
			return nil, fmt.Errorf("%s: apply (recorded as %s, not applied): %w", r, c.typ, err)
		}
	}
}

func sameChange(a, b *change) bool {
	return reflect.DeepEqual(a.rules, b.rules) && maps.Equal(a.annotations, b.annotations) &&
		reflect.DeepEqual(a.before, b.before) && reflect.DeepEqual(a.after, b.after)
}

// record hands the change to the Recorder, as the gateway does: details
// "before" and "after" like gateway.Gateway's, plus the route, the exact
// field changes and the cause.
func (r *Router) record(ctx context.Context, c *change) error {
	cause := fleet.CauseFrom(ctx)
	details := map[string]any{"before": c.before, "after": c.after, "route": r.cfg.Namespace + "/" + r.cfg.Route, "changes": c.changes}
	if a := actor(ctx); a != "" {
		details["actor"] = a
	}
	for k, v := range map[string]string{"incident": cause.Incident, "run_id": cause.RunID, "step": cause.Step} {
		if v != "" {
			details[k] = v
		}
	}
	if err := r.cfg.Recorder.Record(ctx, c.typ, r.String(), details); err != nil {
		return fmt.Errorf("%w: %s %s: %w", gateway.ErrNotRecorded, c.typ, r, err)
	}
	return nil
}

// applyObject server-side applies the rules and annotations, conditioned
// on resourceVersion rv. Only fields the router owns are in the object, so
// parentRefs, hostnames and others' annotations are untouched.
func (r *Router) applyObject(ctx context.Context, rv string, c *change, dryRun bool) error {
	ann := map[string]any{}
	for k, v := range c.annotations {
		ann[k] = v
	}
	cause := fleet.CauseFrom(ctx)
	for k, v := range map[string]string{annotationIncident: cause.Incident, annotationRunID: cause.RunID,
		annotationStep: cause.Step, annotationActor: actor(ctx)} {
		if v != "" {
			ann[k] = v
		}
	}
	ann[annotationChangeCause] = changeCause(c.summary, cause, actor(ctx))
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": Resource.Group + "/" + Resource.Version,
		"kind":       "HTTPRoute",
		"metadata": map[string]any{
			"name": r.cfg.Route, "namespace": r.cfg.Namespace,
			"resourceVersion": rv, "annotations": ann,
		},
		"spec": map[string]any{"rules": c.rules},
	}}
	opts := metav1.ApplyOptions{FieldManager: r.cfg.FieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := r.res.Apply(ctx, r.cfg.Route, obj, opts)
	return err
}

// actor names who makes a change: the gateway actor of ctx, else the
// actor of its fleet.Cause.
func actor(ctx context.Context) string {
	if a := gateway.ActorFrom(ctx); a != "" {
		return a
	}
	return fleet.CauseFrom(ctx).Actor
}

func changeCause(summary string, c fleet.Cause, actor string) string {
	var parts []string
	for _, p := range [][2]string{{"incident", c.Incident}, {"run", c.RunID}, {"step", c.Step}, {"by", actor}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	s := "countersign: " + summary
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func weightsJSON(w map[string]int) string {
	b, _ := json.Marshal(w) // a map of ints always encodes; keys sorted
	return string(b)
}

func gateJSON(g gateway.Gate) string {
	b, _ := json.Marshal(g) // plain fields always encode
	return string(b)
}
