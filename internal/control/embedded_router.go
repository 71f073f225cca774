package control

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
)

// embeddedRouter is the traffic.Router of the world's own gateway.
type embeddedRouter struct{ g *gateway.Gateway }

func (r embeddedRouter) String() string { return "embedded gateway" }

func (r embeddedRouter) State(ctx context.Context) (traffic.State, error) {
	gs := r.g.State()
	st := traffic.State{Gate: gs.Gate, Weights: map[string]int{}}
	for _, p := range gs.Pools {
		st.Weights[p.Name] = p.Weight
	}
	return st, nil
}

func (r embeddedRouter) SetGate(ctx context.Context, g gateway.Gate) (gateway.Gate, error) {
	return r.g.SetGate(ctx, g)
}

func (r embeddedRouter) SetWeights(ctx context.Context, weights map[string]int) error {
	return r.g.SetWeights(ctx, weights)
}

func (r embeddedRouter) PlanGate(ctx context.Context, g gateway.Gate) ([]fleet.Change, error) {
	cur := r.g.State().Gate
	if cur.On == g.On && (!g.On || cur.RetryAfter == g.RetryAfter) {
		return nil, nil
	}
	chs := []fleet.Change{{Kind: "gateway", Name: "embedded", Field: "gate.on", From: strconv.FormatBool(cur.On), To: strconv.FormatBool(g.On)}}
	if g.On && cur.RetryAfter != g.RetryAfter {
		chs = append(chs, fleet.Change{Kind: "gateway", Name: "embedded", Field: "gate.retry_after", From: strconv.Itoa(cur.RetryAfter), To: strconv.Itoa(g.RetryAfter)})
	}
	return chs, nil
}

func (r embeddedRouter) PlanWeights(ctx context.Context, weights map[string]int) ([]fleet.Change, error) {
	st, _ := r.State(ctx)
	var chs []fleet.Change
	for _, p := range slices.Sorted(maps.Keys(weights)) {
		cur, ok := st.Weights[p]
		if !ok {
			return nil, fmt.Errorf("%w %q", gateway.ErrUnknownPool, p)
		}
		if cur != weights[p] {
			chs = append(chs, fleet.Change{Kind: "gateway", Name: "embedded", Field: "weights." + p, From: strconv.Itoa(cur), To: strconv.Itoa(weights[p])})
		}
	}
	return chs, nil
}
