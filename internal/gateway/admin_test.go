package gateway

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/api"
)

const testToken = "s3cret-admin-token-0123456789"

func newTestAdmin(t *testing.T, g *Gateway) *httptest.Server {
	t.Helper()
	a, err := NewAdmin(g, testToken)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv
}

func TestAdminAuth(t *testing.T) {
	g, _ := newTestGateway(t, Config{})
	srv := newTestAdmin(t, g)
	sameLength := strings.Repeat("x", len(testToken))
	tests := []struct {
		name, auth string
		want       int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"basic scheme", "Basic " + testToken, http.StatusUnauthorized},
		{"wrong token same length", "Bearer " + sameLength, http.StatusUnauthorized},
		{"wrong token prefix", "Bearer " + testToken[:10], http.StatusUnauthorized},
		{"token with suffix", "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"right token", "Bearer " + testToken, http.StatusOK},
		{"scheme is case-insensitive", "bearer " + testToken, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/admin/state", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want == http.StatusUnauthorized && (!strings.Contains(body, api.TypeUnauthorized) || resp.Header.Get("WWW-Authenticate") == "") {
				t.Errorf("401 without problem type or challenge: %q", body)
			}
		})
	}
	if _, err := NewAdmin(g, "short"); err == nil {
		t.Error("NewAdmin accepted a 5-character token")
	}
}

func TestAdminClientRoundTrip(t *testing.T) {
	stable, cn := newTestBackend(t, "stable"), newTestBackend(t, "canary")
	rec := &memRecorder{}
	g, data := newTestGateway(t, Config{Recorder: rec, Pools: map[string][]string{"stable": {stable.URL()}}, Weights: map[string]int{"stable": 100}})
	c := NewAdminClient(newTestAdmin(t, g).URL, testToken, nil)
	c.Actor = "alice"
	ctx := t.Context()

	ps, err := c.SetPool(ctx, "canary", []string{cn.URL()})
	if err != nil || ps.Status != PoolServing || ps.Weight != 0 {
		t.Fatalf("SetPool = %+v, %v; want a serving pool probed at once, weight 0", ps, err)
	}
	st, err := c.SetWeights(ctx, map[string]int{"stable": 90, "canary": 10})
	if err != nil {
		t.Fatal(err)
	}
	if cs, _ := st.Pool("canary"); cs.Weight != 10 || cs.EffectiveWeight != 10 {
		t.Fatalf("canary after SetWeights: %+v", cs)
	}
	gate, err := c.SetGate(ctx, Gate{On: true, RetryAfter: 5, Reason: "drill"})
	if err != nil || !gate.On || gate.RetryAfter != 5 {
		t.Fatalf("SetGate = %+v, %v", gate, err)
	}
	resp := post(t, data.URL+"/v1/sign")
	readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("gate set through the client does not gate: %d", resp.StatusCode)
	}
	st, err = c.State(ctx)
	if err != nil || !st.Gate.On || st.Gated != 1 || len(st.Pools) != 2 {
		t.Fatalf("State = %+v, %v", st, err)
	}

	_, err = c.SetWeights(ctx, map[string]int{"stable": 50})
	var p *api.Problem
	if !errors.As(err, &p) || p.Status != http.StatusBadRequest || p.Type != api.TypeMalformed {
		t.Fatalf("bad weights: %v, want a 400 malformed problem", err)
	}
	_, err = c.SetPool(ctx, "Bad_Name", nil)
	if !errors.As(err, &p) || p.Status != http.StatusBadRequest {
		t.Fatalf("bad pool name: %v", err)
	}
	bad := NewAdminClient(c.base, "wrong-token-wrong-token", nil)
	if _, err := bad.State(ctx); !errors.As(err, &p) || p.Status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", err)
	}

	events := rec.all()
	wantTypes := []string{EventPool, EventWeights, EventGate}
	if len(events) != len(wantTypes) {
		t.Fatalf("recorded %d events, want %d: %+v", len(events), len(wantTypes), events)
	}
	for i, e := range events {
		if e.typ != wantTypes[i] || e.details["actor"] != "alice" {
			t.Errorf("event %d = %s actor %v, want %s by alice", i, e.typ, e.details["actor"], wantTypes[i])
		}
	}
}

func TestRecorderFailureRefusesChange(t *testing.T) {
	stable := newTestBackend(t, "stable")
	rec := &memRecorder{}
	g, data := newTestGateway(t, Config{Recorder: rec, Pools: map[string][]string{"stable": {stable.URL()}, "canary": nil},
		Weights: map[string]int{"stable": 100}})
	c := NewAdminClient(newTestAdmin(t, g).URL, testToken, nil)
	rec.fail.Store(true)
	ctx := t.Context()

	tests := []struct {
		name   string
		change func() error
	}{
		{"weights", func() error { _, err := c.SetWeights(ctx, map[string]int{"canary": 100}); return err }},
		{"gate", func() error { _, err := c.SetGate(ctx, Gate{On: true, RetryAfter: 9}); return err }},
		{"pool", func() error { _, err := c.SetPool(ctx, "stable", nil); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p *api.Problem
			if err := tt.change(); !errors.As(err, &p) || p.Status != http.StatusServiceUnavailable {
				t.Fatalf("change with a failing recorder: %v, want 503", err)
			}
		})
	}
	st := g.State()
	ss, _ := st.Pool("stable")
	if st.Gate.On || ss.Weight != 100 || len(ss.Backends) != 1 {
		t.Fatalf("a refused change took effect: %+v", st)
	}
	resp := post(t, data.URL+"/v1/sign")
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK || stable.hits.Load() != 1 {
		t.Fatalf("traffic after refused changes: %d", resp.StatusCode)
	}
	if err := g.SetWeights(ctx, map[string]int{"canary": 100}); !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("SetWeights in-process: %v, want ErrNotRecorded", err)
	}
}

func TestAdminMetrics(t *testing.T) {
	stable := newTestBackend(t, "stable")
	g, data := newTestGateway(t, Config{Pools: map[string][]string{"stable": {stable.URL()}}, Weights: map[string]int{"stable": 100}})
	readBody(t, post(t, data.URL+"/v1/sign"))
	readBody(t, post(t, data.URL+"/v1/sign"))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, newTestAdmin(t, g).URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	for _, want := range []string{
		`countersign_gateway_forwarded_total{pool="stable"} 2`,
		`countersign_gateway_pool_weight{pool="stable"} 100`,
		`countersign_gateway_backend_healthy{backend="` + stable.URL() + `",pool="stable"} 1`,
		`countersign_gateway_gate_on 0`,
		`countersign_gateway_last_forwarded_timestamp_seconds{pool="stable"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
