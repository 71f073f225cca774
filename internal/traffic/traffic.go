// Package traffic is where the playbook moves traffic between pools and
// gates writes, whatever does the routing: the embedded gateway (one
// machine), a gateway running elsewhere reached through its admin API (our
// gateway as an in-cluster Deployment), or a Gateway API HTTPRoute
// (traffic/httproute) for teams whose routing is a Gateway API
// implementation.
//
// Every Router records each change as an audit event before it takes
// effect, as the gateway does: if the evidence cannot be written, the
// change is refused (gateway.ErrNotRecorded).
//
// The package also holds the maintenance backend (Maintenance): what
// answers gated writes when the router is not our gateway, so a client sees
// the same 503 problem and Retry-After whichever router gates it.
package traffic

import (
	"context"

	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
)

// State is what a Router routes by now.
type State struct {
	Gate    gateway.Gate   `json:"gate"`
	Weights map[string]int `json:"weights"` // pool → percent; they sum to 100
}

// Router gates writes and splits traffic between pools. Methods are safe
// for concurrent use; changes made through one Router are serialized, so
// the order of their audit events is the order in which they take effect.
//
// Validation is the gateway's: weights name known pools only, each in
// [0,100], summing to 100 (pools not named get 0; errors wrap
// gateway.ErrUnknownPool or gateway.ErrInvalid). A gate turned on with
// RetryAfter 0 gets the Router's default, resolved before planning so a
// plan and the change it describes agree (gateway.DefaultRetryAfter unless
// the Router's configuration says otherwise).
type Router interface {
	// State reads the gate and the weights back from what routes (never
	// from a cache).
	State(ctx context.Context) (State, error)
	// SetGate turns the maintenance gate on or off: while on, writes are
	// answered 503 with Retry-After g.RetryAfter seconds. It returns the
	// gate as set.
	SetGate(ctx context.Context, g gateway.Gate) (gateway.Gate, error)
	// SetWeights sets every pool's share (percent, summing to 100).
	SetWeights(ctx context.Context, weights map[string]int) error
	// PlanGate and PlanWeights report the changes SetGate and SetWeights
	// would make, changing nothing.
	PlanGate(ctx context.Context, g gateway.Gate) ([]fleet.Change, error)
	PlanWeights(ctx context.Context, weights map[string]int) ([]fleet.Change, error)
	// String says what routes, e.g. "HTTPRoute countersign/countersign".
	String() string
}
