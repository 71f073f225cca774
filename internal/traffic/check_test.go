package traffic_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
)

func TestNormalizeGate(t *testing.T) {
	tests := []struct {
		in      gateway.Gate
		want    gateway.Gate
		wantErr error
	}{
		{gateway.Gate{On: true}, gateway.Gate{On: true, RetryAfter: 30}, nil},
		{gateway.Gate{On: true, RetryAfter: 86400, Reason: "r"}, gateway.Gate{On: true, RetryAfter: 86400, Reason: "r"}, nil},
		{gateway.Gate{On: true, RetryAfter: 86401}, gateway.Gate{}, gateway.ErrInvalid},
		{gateway.Gate{On: true, RetryAfter: -1}, gateway.Gate{}, gateway.ErrInvalid},
		{gateway.Gate{On: false, RetryAfter: 9, Reason: "x", BlockReads: true}, gateway.Gate{}, nil},
	}
	for _, tt := range tests {
		got, err := traffic.NormalizeGate(tt.in, 30)
		if !errors.Is(err, tt.wantErr) || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("NormalizeGate(%+v) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCheckWeightsFillsPools(t *testing.T) {
	got, err := traffic.CheckWeights([]string{"canary", "stable"}, map[string]int{"stable": 100})
	if err != nil || !reflect.DeepEqual(got, map[string]int{"stable": 100, "canary": 0}) {
		t.Fatalf("CheckWeights = %v, %v", got, err)
	}
}
