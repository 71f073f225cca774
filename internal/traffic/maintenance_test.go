package traffic_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/traffic"
)

func TestMaintenance(t *testing.T) {
	h, err := traffic.Maintenance(120)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	tests := []struct {
		method, path, header string
		want                 int // Retry-After
	}{
		{"POST", "/v1/sign", "", 120},
		{"POST", "/v1/sign", "7", 7},
		{"PUT", "/v1/keys/k", "86400", 86400},
		{"DELETE", "/x", "86401", 120},
		{"POST", "/v1/sign", "0", 120},
		{"POST", "/v1/sign", "-5", 120},
		{"POST", "/v1/sign", "+5", 120},
		{"POST", "/v1/sign", "5.5", 120},
		{"POST", "/v1/sign", "99999999999999999999", 120},
		{"POST", "/v1/sign", "Wed, 21 Oct 2015 07:28:00 GMT", 120},
		{"GET", "/v1/keys", "60", 60},
		{"POST", "/healthz", "", 120},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path+"="+tt.header, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader("{}"))
			if tt.header != "" {
				req.Header.Set(traffic.RetryAfterHeader, tt.header)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503", resp.StatusCode)
			}
			if got := resp.Header.Get("Retry-After"); got != strconv.Itoa(tt.want) {
				t.Errorf("Retry-After %q, want %d", got, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != api.ContentTypeProblem {
				t.Errorf("Content-Type %q", ct)
			}
			var p api.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Type != api.TypeMaintenance || p.Status != 503 || p.RetryAfter != tt.want {
				t.Errorf("problem %+v", p)
			}
		})
	}

	resp, err := srv.Client().Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %d, want 200", resp.StatusCode)
	}

	for _, def := range []int{0, -1, traffic.MaxRetryAfter + 1} {
		if _, err := traffic.Maintenance(def); err == nil {
			t.Errorf("Maintenance(%d) accepted", def)
		}
	}
}
