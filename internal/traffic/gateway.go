package traffic

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
)

// Embedded routes through a gateway in this process. The gateway records
// every change with its own Recorder before the change takes effect.
// Changes are named Kind "gateway", Name "embedded".
func Embedded(g *gateway.Gateway) Router {
	return &embedded{g: g}
}

type embedded struct{ g *gateway.Gateway }

func (e *embedded) String() string { return "embedded gateway" }

func (e *embedded) State(ctx context.Context) (State, error) {
	return fromGateway(e.g.State()), nil
}

func (e *embedded) SetGate(ctx context.Context, g gateway.Gate) (gateway.Gate, error) {
	n, err := NormalizeGate(g, gateway.DefaultRetryAfter)
	if err != nil {
		return gateway.Gate{}, err
	}
	return e.g.SetGate(withActor(ctx), n)
}

func (e *embedded) SetWeights(ctx context.Context, weights map[string]int) error {
	return e.g.SetWeights(withActor(ctx), weights)
}

func (e *embedded) PlanGate(ctx context.Context, g gateway.Gate) ([]fleet.Change, error) {
	return planGate("embedded", fromGateway(e.g.State()), g)
}

func (e *embedded) PlanWeights(ctx context.Context, weights map[string]int) ([]fleet.Change, error) {
	return planWeights("embedded", fromGateway(e.g.State()), weights)
}

// Admin routes through a gateway reached by its admin API, such as the
// in-cluster countersign-gateway Deployment; that gateway records every
// change before it takes effect. name names it in plans (Kind "gateway")
// and in String. The actor of each change is sent in the Countersign-Actor
// header: gateway.ActorFrom(ctx), else fleet.CauseFrom(ctx).Actor, else
// c.Actor.
func Admin(c *gateway.AdminClient, name string) Router {
	return &admin{c: c, name: name}
}

type admin struct {
	c    *gateway.AdminClient
	name string
}

func (a *admin) String() string { return "gateway " + a.name }

func (a *admin) State(ctx context.Context) (State, error) {
	st, err := a.c.State(ctx)
	if err != nil {
		return State{}, fmt.Errorf("gateway %s: read state: %w", a.name, err)
	}
	return fromGateway(st), nil
}

func (a *admin) SetGate(ctx context.Context, g gateway.Gate) (gateway.Gate, error) {
	n, err := NormalizeGate(g, gateway.DefaultRetryAfter)
	if err != nil {
		return gateway.Gate{}, err
	}
	got, err := a.client(ctx).SetGate(ctx, n)
	if err != nil {
		return gateway.Gate{}, fmt.Errorf("gateway %s: set gate: %w", a.name, adminError(err))
	}
	return got, nil
}

func (a *admin) SetWeights(ctx context.Context, weights map[string]int) error {
	// Validate against the gateway's pools first, so the caller gets the
	// same sentinel errors as from an embedded gateway.
	st, err := a.State(ctx)
	if err != nil {
		return err
	}
	if _, err := CheckWeights(pools(st), weights); err != nil {
		return err
	}
	if _, err := a.client(ctx).SetWeights(ctx, weights); err != nil {
		return fmt.Errorf("gateway %s: set weights: %w", a.name, adminError(err))
	}
	return nil
}

func (a *admin) PlanGate(ctx context.Context, g gateway.Gate) ([]fleet.Change, error) {
	st, err := a.State(ctx)
	if err != nil {
		return nil, err
	}
	return planGate(a.name, st, g)
}

func (a *admin) PlanWeights(ctx context.Context, weights map[string]int) ([]fleet.Change, error) {
	st, err := a.State(ctx)
	if err != nil {
		return nil, err
	}
	return planWeights(a.name, st, weights)
}

// client returns the admin client that names this change's actor.
func (a *admin) client(ctx context.Context) *gateway.AdminClient {
	actor := actorOf(ctx)
	if actor == "" || actor == a.c.Actor {
		return a.c
	}
	c := *a.c
	c.Actor = actor
	return &c
}

// adminError gives a problem the admin API answered the sentinel the
// gateway refused the change with: 400 is a malformed change, 503 a change
// the gateway's Recorder could not record (see gateway.Admin).
func adminError(err error) error {
	var p *api.Problem
	if !errors.As(err, &p) {
		return err
	}
	switch {
	case p.Status == 400 && p.Type == api.TypeMalformed:
		return fmt.Errorf("%w: %w", gateway.ErrInvalid, err)
	case p.Status == 503 && p.Type == api.TypeUnavailable:
		return fmt.Errorf("%w: %w", gateway.ErrNotRecorded, err)
	}
	return err
}

func fromGateway(st gateway.State) State {
	out := State{Gate: st.Gate, Weights: make(map[string]int, len(st.Pools))}
	for _, p := range st.Pools {
		out.Weights[p.Name] = p.Weight
	}
	return out
}

func pools(st State) []string { return slices.Sorted(maps.Keys(st.Weights)) }

func planGate(name string, st State, g gateway.Gate) ([]fleet.Change, error) {
	n, err := NormalizeGate(g, gateway.DefaultRetryAfter)
	if err != nil {
		return nil, err
	}
	to := st
	to.Gate = n
	return gatewayChanges(name, st, to), nil
}

func planWeights(name string, st State, weights map[string]int) ([]fleet.Change, error) {
	w, err := CheckWeights(pools(st), weights)
	if err != nil {
		return nil, err
	}
	to := st
	to.Weights = w
	return gatewayChanges(name, st, to), nil
}

// actorOf names who makes a change: the gateway actor of ctx, else the
// actor of its fleet.Cause.
func actorOf(ctx context.Context) string {
	if a := gateway.ActorFrom(ctx); a != "" {
		return a
	}
	return fleet.CauseFrom(ctx).Actor
}

// withActor makes sure the gateway's Recorder sees the actor of ctx's
// fleet.Cause when no gateway actor is set.
func withActor(ctx context.Context) context.Context {
	if gateway.ActorFrom(ctx) == "" {
		if a := fleet.CauseFrom(ctx).Actor; a != "" {
			return gateway.WithActor(ctx, a)
		}
	}
	return ctx
}
