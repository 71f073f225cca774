package control

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/playbook"
)

// gatewayState is the gateway state the control API reports: the embedded
// gateway's own, or the gate and weights read back from the router.
func (w *World) gatewayState(ctx context.Context) gateway.State {
	if w.gw != nil {
		return w.gw.State()
	}
	st, err := w.router.State(ctx)
	if err != nil {
		w.log.Warn("read routing state", "router", w.router.String(), "err", err)
		return gateway.State{}
	}
	gs := gateway.State{Gate: st.Gate}
	for _, name := range slices.Sorted(maps.Keys(st.Weights)) {
		gs.Pools = append(gs.Pools, gateway.PoolState{Name: name, Weight: st.Weights[name]})
	}
	return gs
}

// checkHealth makes the embedded gateway re-check its backends now (after a
// deploy, so traffic does not wait for the next health round). Other
// routers track health themselves (Kubernetes readiness).
func (w *World) checkHealth(ctx context.Context) {
	if w.gw != nil {
		w.gw.CheckHealth(ctx)
	}
}

// planChanges turns backend changes into plan lines.
func planChanges(chs []fleet.Change) []playbook.Change {
	out := make([]playbook.Change, 0, len(chs))
	for _, c := range chs {
		out = append(out, playbook.Change{Target: c.Object(), Field: c.Field, From: c.From, To: c.To})
	}
	return out
}

// planWeights is the plan of setting weights: the router's exact changes.
func (w *World) planWeights(ctx context.Context, weights map[string]int, detail string) ([]playbook.Change, error) {
	chs, err := w.router.PlanWeights(ctx, weights)
	if err != nil {
		return nil, fmt.Errorf("plan weights on %s: %w", w.router, err)
	}
	out := planChanges(chs)
	for i := range out {
		out[i].Detail = detail
	}
	return out, nil
}
