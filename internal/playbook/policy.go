package playbook

import (
	"context"
	"time"
)

// Clock is the engine's time source: Now, and a channel that fires after d.
// The default is the system clock (which testing/synctest fakes).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// GateRequest is what an approval policy sees when a step reaches its gate.
type GateRequest struct {
	RunID     string
	Playbook  string
	StepID    string
	Action    string
	Required  int
	Roles     []string
	Approvals []Grant // already recorded
}

// Decision is an approval policy's answer. Approve satisfies the whole gate;
// Actor and Note are journaled and audited with the grant.
type Decision struct {
	Approve bool
	Actor   string
	Note    string
}

// ApprovalPolicy decides whether a gate is granted without waiting for humans.
type ApprovalPolicy interface {
	Gate(ctx context.Context, r GateRequest) (Decision, error)
}

// HumanApproval waits for Required distinct approvers (Engine.Approve).
type HumanApproval struct{}

// Gate never auto-approves.
func (HumanApproval) Gate(context.Context, GateRequest) (Decision, error) { return Decision{}, nil }

// DrillApproval grants every gate at once, and says so in the journal. It is
// for drills only: the drill command selects it, never a real incident.
type DrillApproval struct{}

// DrillNote is the note journaled with a drill policy's grant.
const DrillNote = "auto-approved by drill policy"

// Gate auto-approves.
func (DrillApproval) Gate(context.Context, GateRequest) (Decision, error) {
	return Decision{Approve: true, Actor: "drill-policy", Note: DrillNote}, nil
}
