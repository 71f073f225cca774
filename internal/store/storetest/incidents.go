package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

func testIncidents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	inc := store.Incident{ID: "inc-1", Classification: "signature-corruption", Release: "v2.0.0", Commander: "alice",
		Summary: "CMS signatures fail verification", OpenedAt: at(1), Details: []byte(`{"probe":"cms","failures":3}`)}
	must(t, "CreateIncident", s.CreateIncident(ctx, inc, event("incident.opened", "", "inc-1", 1)))
	wantErr(t, "CreateIncident again", s.CreateIncident(ctx, inc, event("incident.opened", "", "inc-1", 2)), store.ErrExists)
	closedNew := inc
	closedNew.ID, closedNew.State = "inc-x", store.IncidentClosed
	wantErr(t, "CreateIncident closed", s.CreateIncident(ctx, closedNew, event("incident.opened", "", "inc-x", 2)), store.ErrIncidentState)
	got, err := s.Incident(ctx, "inc-1")
	must(t, "Incident", err)
	want := inc
	want.State, want.UpdatedAt = store.IncidentOpen, inc.OpenedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Incident round trip:\n got %+v\nwant %+v", got, want)
	}
	_, err = s.Incident(ctx, "nope")
	wantErr(t, "Incident(nope)", err, store.ErrNotFound)
	other := store.Incident{ID: "inc-2", Classification: "availability", OpenedAt: at(2), Details: []byte(`{}`)}
	must(t, "CreateIncident 2", s.CreateIncident(ctx, other, event("incident.opened", "", "inc-2", 2)))

	steps := []struct {
		name  string
		state string
		want  error
	}{
		{"same state, new commander", store.IncidentOpen, nil},
		{"contain", store.IncidentContained, nil},
		{"back to open", store.IncidentOpen, store.ErrIncidentState},
		{"unknown", "resolved", store.ErrIncidentState},
		{"restore", store.IncidentRestored, nil},
		{"close", store.IncidentClosed, nil},
		{"reopen closed", store.IncidentOpen, store.ErrIncidentState},
		{"touch closed", store.IncidentClosed, store.ErrIncidentState},
	}
	for i, tc := range steps {
		t.Run(tc.name, func(t *testing.T) {
			up := got
			up.State, up.Commander, up.UpdatedAt = tc.state, fmt.Sprintf("commander-%d", i), time.Time{}
			err := s.UpdateIncident(ctx, up, event("incident.updated", "", "inc-1", 10+i))
			if tc.want != nil {
				wantErr(t, "UpdateIncident", err, tc.want)
				return
			}
			must(t, "UpdateIncident", err)
			got, err = s.Incident(ctx, "inc-1")
			must(t, "Incident", err)
			if got.State != tc.state || got.Commander != up.Commander || !got.UpdatedAt.Equal(at(10+i)) || !got.OpenedAt.Equal(at(1)) {
				t.Errorf("after update: %+v, want state %s, commander %s, updated %v", got, tc.state, up.Commander, at(10+i))
			}
			if closed := tc.state == store.IncidentClosed; closed != !got.ClosedAt.IsZero() {
				t.Errorf("ClosedAt = %v in state %s", got.ClosedAt, got.State)
			}
		})
	}
	wantErr(t, "UpdateIncident(nope)", s.UpdateIncident(ctx, store.Incident{ID: "nope", State: store.IncidentOpen},
		event("incident.updated", "", "nope", 30)), store.ErrNotFound)
	// two opened, four accepted updates.
	if n := auditSize(t, s); n != 6 {
		t.Errorf("AuditSize = %d, want 6: refused writes leave no event", n)
	}
	for _, tc := range []struct {
		openOnly bool
		want     []string
	}{{false, []string{"inc-1", "inc-2"}}, {true, []string{"inc-2"}}} {
		list, err := s.Incidents(ctx, tc.openOnly)
		must(t, "Incidents", err)
		var ids []string
		for _, inc := range list {
			ids = append(ids, inc.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("Incidents(openOnly=%v) = %v, want %v", tc.openOnly, ids, tc.want)
		}
	}
}
