package playbook

import (
	"fmt"

	"github.com/countersign/countersign/playbooks"
)

// RollbackActions are the actions the default rollback playbook calls, in
// step order. A binary that runs it registers each (Unavailable where the
// build cannot perform it).
var RollbackActions = []string{
	"incident.classify", "gateway.maintenance", "incident.open", "snapshot.take",
	"fleet.isolate", "fleet.rollback", "probe.smoke", "gateway.canary",
	"reconcile.replay", "reconcile.audit", "notify.customers", "incident.close",
}

// Default parses the embedded default rollback playbook (playbooks/rollback.yaml)
// and validates it against actions.
func Default(actions ActionSet) (*Spec, error) {
	b, err := playbooks.FS.ReadFile(playbooks.Rollback)
	if err != nil {
		return nil, fmt.Errorf("playbook: read embedded %s: %w", playbooks.Rollback, err)
	}
	return Parse(b, actions)
}
