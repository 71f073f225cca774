package control

import (
	"testing"

	"github.com/countersign/countersign/internal/reconcile"
)

func TestAffected(t *testing.T) {
	v := func(tenant, format string, c reconcile.Class) reconcile.Verdict {
		return reconcile.Verdict{SignatureID: tenant + format + string(c), TenantID: tenant, Format: format, Class: c}
	}
	tests := []struct {
		name    string
		docs    []reconcile.Verdict
		tenants []string
		binding bool
	}{
		{"invalid cms is legally binding", []reconcile.Verdict{v("acme", "cms", reconcile.ClassInvalid)}, []string{"acme"}, true},
		{"drifted raw affects, not binding", []reconcile.Verdict{v("acme", "raw", reconcile.ClassDrift)}, []string{"acme"}, false},
		{"unverifiable jws affects nobody", []reconcile.Verdict{v("acme", "jws", reconcile.ClassUnverifiable)}, []string{}, false},
		{"probe tenant is ours", []reconcile.Verdict{v(ProbeTenant, "cms", reconcile.ClassInvalid)}, []string{}, false},
		{"sorted", []reconcile.Verdict{v("zeta", "raw", reconcile.ClassInvalid), v("acme", "cms", reconcile.ClassDrift)}, []string{"acme", "zeta"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := &reconcile.Report{Signatures: reconcile.Summarize(tc.docs)}
			a := affected(rep)
			if len(a.Tenants) != len(tc.tenants) {
				t.Fatalf("tenants = %v; want %v", a.Tenants, tc.tenants)
			}
			for i := range a.Tenants {
				if a.Tenants[i] != tc.tenants[i] {
					t.Errorf("tenants = %v; want %v", a.Tenants, tc.tenants)
				}
			}
			if a.Any() != tc.binding {
				t.Errorf("legally binding = %v; want %v", a.Any(), tc.binding)
			}
		})
	}
}

func TestNoticeRecordDelivered(t *testing.T) {
	tests := []struct {
		name string
		r    NoticeRecord
		want bool
	}{
		{"rendered, never sent", NoticeRecord{}, false},
		{"all delivered", NoticeRecord{Deliveries: []NoticeDelivery{{Result: "delivered"}, {Result: "duplicate"}}}, true},
		{"one failed", NoticeRecord{Deliveries: []NoticeDelivery{{Result: "delivered"}, {Result: "failed"}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Delivered(); got != tc.want {
				t.Errorf("Delivered() = %v; want %v", got, tc.want)
			}
		})
	}
}
