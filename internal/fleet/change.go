package fleet

import (
	"context"
	"fmt"
)

// Change is one field of one object that an operation sets, as a playbook
// plan shows it before anything happens: for Kubernetes
// "Deployment countersign/countersign-node-canary spec.replicas 3 → 0".
// From is empty when the object or field does not exist yet.
type Change struct {
	Kind      string `json:"kind"`                // e.g. Deployment, ReplicaSet, ConfigMap, HTTPRoute, process
	Namespace string `json:"namespace,omitempty"` // Kubernetes namespace, if any
	Name      string `json:"name"`
	Field     string `json:"field"` // e.g. spec.replicas, spec.template.spec.containers[node].image
	From      string `json:"from"`
	To        string `json:"to"`
}

// Object names the changed object: "Kind namespace/name" or "Kind name".
func (c Change) Object() string {
	if c.Namespace != "" {
		return fmt.Sprintf("%s %s/%s", c.Kind, c.Namespace, c.Name)
	}
	return c.Kind + " " + c.Name
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s: %q → %q", c.Object(), c.Field, c.From, c.To)
}

// Planner is implemented by fleets that can say, without changing anything,
// which objects and fields an operation would change (fleet/kube does, with
// server-side dry runs). The playbook's plan shows these changes.
type Planner interface {
	PlanDeploy(ctx context.Context, pool string, rel Release, replicas int) ([]Change, error)
	PlanScale(ctx context.Context, pool string, replicas int) ([]Change, error)
	PlanDrain(ctx context.Context, pool string) ([]Change, error)
	PlanRollback(ctx context.Context, pool string, toRevision int) ([]Change, error)
}

// Cause says why a change is made: the incident and playbook run (and step)
// that made it, and who. Backends that can annotate what they change
// (fleet/kube: annotations on every object it writes) record it.
type Cause struct {
	Incident string `json:"incident,omitempty"`
	RunID    string `json:"run_id,omitempty"`
	Step     string `json:"step,omitempty"`
	Actor    string `json:"actor,omitempty"`
}

type causeKey struct{}

// WithCause returns ctx carrying c.
func WithCause(ctx context.Context, c Cause) context.Context {
	return context.WithValue(ctx, causeKey{}, c)
}

// CauseFrom returns the cause carried by ctx, or the zero Cause.
func CauseFrom(ctx context.Context) Cause {
	c, _ := ctx.Value(causeKey{}).(Cause)
	return c
}
