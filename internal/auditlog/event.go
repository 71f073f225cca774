package auditlog

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// EntryVersion is the schema version of audit entries (docs/audit-log.md).
const EntryVersion = 1

// Event describes an audit event before it is committed. Details must be
// JSON-encodable; map keys are emitted sorted, so the entry is canonical.
type Event struct {
	Type     string
	Time     time.Time
	Actor    string
	TenantID string
	Release  string
	Instance string
	Subject  string
	Details  map[string]any
}

// entry is the canonical JSON of an audit leaf. Field order is fixed by the
// struct; there is no insignificant whitespace.
type entry struct {
	V        int             `json:"v"`
	Type     string          `json:"type"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	Tenant   string          `json:"tenant,omitempty"`
	Release  string          `json:"release,omitempty"`
	Instance string          `json:"instance,omitempty"`
	Subject  string          `json:"subject,omitempty"`
	Details  json.RawMessage `json:"details,omitempty"`
}

// Record turns an Event into the store row whose Entry is the Merkle leaf
// data. The time is truncated to microseconds and rendered in UTC so that
// every backend round-trips it exactly.
func (e Event) Record() (store.AuditEvent, error) {
	t := e.Time.UTC().Truncate(time.Microsecond)
	en := entry{V: EntryVersion, Type: e.Type, Time: t.Format(time.RFC3339Nano), Actor: e.Actor,
		Tenant: e.TenantID, Release: e.Release, Instance: e.Instance, Subject: e.Subject}
	if len(e.Details) > 0 {
		d, err := json.Marshal(e.Details)
		if err != nil {
			return store.AuditEvent{}, fmt.Errorf("auditlog: encode details of %s: %w", e.Type, err)
		}
		en.Details = d
	}
	b, err := json.Marshal(en)
	if err != nil {
		return store.AuditEvent{}, fmt.Errorf("auditlog: encode %s: %w", e.Type, err)
	}
	return store.AuditEvent{Time: t, Type: e.Type, Actor: e.Actor, TenantID: e.TenantID,
		Release: e.Release, Instance: e.Instance, Subject: e.Subject, Entry: b}, nil
}
