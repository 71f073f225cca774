package traffic

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
)

// MaxRetryAfter is the largest Retry-After, in seconds, a gate may ask for
// (one day): the maintenance backend honours no larger value.
const MaxRetryAfter = 86400

// CheckWeights validates weights against the pools a router has, as the
// gateway does: every named pool must exist, each weight be in [0,100] and
// the sum be 100. It returns the full map, pools not named at 0.
func CheckWeights(pools []string, weights map[string]int) (map[string]int, error) {
	if err := gateway.ValidateWeights(func(name string) bool { return slices.Contains(pools, name) }, weights); err != nil {
		return nil, fmt.Errorf("%w (pools: %v)", err, pools)
	}
	out := make(map[string]int, len(pools))
	for _, p := range pools {
		out[p] = weights[p]
	}
	return out, nil
}

// NormalizeGate checks g and resolves its defaults as SetGate applies them:
// a gate turned off is the zero Gate; a gate turned on without RetryAfter
// gets def seconds. Since is left to the caller.
func NormalizeGate(g gateway.Gate, def int) (gateway.Gate, error) {
	if g.RetryAfter < 0 {
		return gateway.Gate{}, fmt.Errorf("%w: retry_after %d is negative", gateway.ErrInvalid, g.RetryAfter)
	}
	if !g.On {
		return gateway.Gate{}, nil
	}
	if g.RetryAfter == 0 {
		g.RetryAfter = def
	}
	if g.RetryAfter > MaxRetryAfter {
		return gateway.Gate{}, fmt.Errorf("%w: retry_after %d is over %d seconds", gateway.ErrInvalid, g.RetryAfter, MaxRetryAfter)
	}
	return g, nil
}

// GateDetails is a gate as the gateway gives it to its Recorder (the
// "before" and "after" of a gateway.EventGate), which control.LoadRouting
// reads back.
func GateDetails(g gateway.Gate) map[string]any {
	return map[string]any{"on": g.On, "retry_after": g.RetryAfter, "reason": g.Reason, "block_reads": g.BlockReads}
}

// gatewayChanges lists the fields of a gateway (kind "gateway", named name)
// that differ between two states: "gate.on", "gate.retry_after",
// "gate.block_reads", "gate.reason" and "weights.<pool>".
func gatewayChanges(name string, from, to State) []fleet.Change {
	var out []fleet.Change
	add := func(field, a, b string) {
		if a != b {
			out = append(out, fleet.Change{Kind: "gateway", Name: name, Field: field, From: a, To: b})
		}
	}
	add("gate.on", strconv.FormatBool(from.Gate.On), strconv.FormatBool(to.Gate.On))
	add("gate.retry_after", strconv.Itoa(from.Gate.RetryAfter), strconv.Itoa(to.Gate.RetryAfter))
	add("gate.block_reads", strconv.FormatBool(from.Gate.BlockReads), strconv.FormatBool(to.Gate.BlockReads))
	add("gate.reason", from.Gate.Reason, to.Gate.Reason)
	pools := map[string]bool{}
	for p := range from.Weights {
		pools[p] = true
	}
	for p := range to.Weights {
		pools[p] = true
	}
	for _, p := range slices.Sorted(maps.Keys(pools)) {
		add("weights."+p, strconv.Itoa(from.Weights[p]), strconv.Itoa(to.Weights[p]))
	}
	return out
}
