package httproute

import (
	"context"
	"errors"
	"testing"

	"github.com/countersign/countersign/internal/gateway"
	"k8s.io/client-go/rest"
)

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, string, string, map[string]any) error { return nil }

func TestNewConfig(t *testing.T) {
	rc := &rest.Config{Host: "https://127.0.0.1:1"}
	r, err := NewForConfig(rc, Config{Recorder: nopRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.String() != "HTTPRoute countersign/countersign" || r.cfg.FieldManager != "countersign-control" ||
		r.cfg.Maintenance != DefaultMaintenance || len(r.cfg.Pools) != 2 || r.cfg.DefaultRetryAfter != gateway.DefaultRetryAfter {
		t.Fatalf("defaults: %s %+v", r, r.cfg)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no recorder", Config{}},
		{"bad port", Config{Recorder: nopRecorder{}, Pools: map[string]Backend{"stable": {Service: "s", Port: 0}}}},
		{"bad pool name", Config{Recorder: nopRecorder{}, Pools: map[string]Backend{"Stable": {Service: "s", Port: 1}}}},
		{"shared service", Config{Recorder: nopRecorder{}, Pools: map[string]Backend{"a": {Service: "s", Port: 1}, "b": {Service: "s", Port: 1}}}},
		{"pool is maintenance", Config{Recorder: nopRecorder{}, Pools: map[string]Backend{"a": {Service: "countersign-maintenance", Port: 8080}}}},
		{"retry after", Config{Recorder: nopRecorder{}, DefaultRetryAfter: 86401}},
	}
	for _, tt := range tests {
		if _, err := NewForConfig(rc, tt.cfg); !errors.Is(err, gateway.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
}
