package traffic_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
)

const testToken = "traffic-test-admin-token"

// event is one Record call and how the gateway answered a write at that
// moment.
type event struct {
	typ     string
	details map[string]any
	writeAt int // status of a write sent through the data plane during Record
}

// stateRecorder records every event with the answer to a write sent
// through the gateway's data plane while Record runs: a gate change
// recorded before it takes effect sees the old gate. (Record runs under the
// gateway's lock, so it cannot ask the gateway for its State.)
type stateRecorder struct {
	data atomic.Pointer[string]
	fail atomic.Bool
	mu   sync.Mutex
	evs  []event
}

func (r *stateRecorder) Record(ctx context.Context, typ, _ string, details map[string]any) error {
	if r.fail.Load() {
		return errors.New("audit log unavailable")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *r.data.Load()+"/probe", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, event{typ: typ, details: details, writeAt: resp.StatusCode})
	return nil
}

func (r *stateRecorder) events() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.evs...)
}

// fixture is a real gateway on loopback over two real backends.
type fixture struct {
	g    *gateway.Gateway
	data *httptest.Server
	rec  *stateRecorder
	hits map[string]*atomic.Int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{rec: &stateRecorder{}, hits: map[string]*atomic.Int64{}}
	pools := map[string][]string{}
	for _, name := range []string{"stable", "canary"} {
		n := &atomic.Int64{}
		f.hits[name] = n
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" && r.URL.Path != "/probe" {
				n.Add(1)
			}
			_, _ = io.Copy(io.Discard, r.Body)
			io.WriteString(w, name)
		}))
		t.Cleanup(srv.Close)
		pools[name] = []string{srv.URL}
	}
	g, err := gateway.New(gateway.Config{Pools: pools, Weights: map[string]int{"stable": 100, "canary": 0}, Recorder: f.rec,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	g.CheckHealth(t.Context())
	f.g = g
	f.data = httptest.NewServer(g)
	t.Cleanup(f.data.Close)
	f.rec.data.Store(&f.data.URL)
	return f
}

// routers returns, for each way of reaching a gateway, a fresh fixture and
// the Router over it.
func routers(t *testing.T) map[string]func(t *testing.T) (*fixture, traffic.Router) {
	return map[string]func(t *testing.T) (*fixture, traffic.Router){
		"embedded": func(t *testing.T) (*fixture, traffic.Router) {
			f := newFixture(t)
			return f, traffic.Embedded(f.g)
		},
		"admin": func(t *testing.T) (*fixture, traffic.Router) {
			f := newFixture(t)
			a, err := gateway.NewAdmin(f.g, testToken)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(a)
			t.Cleanup(srv.Close)
			c := gateway.NewAdminClient(srv.URL, testToken, srv.Client())
			c.Actor = "default-actor"
			return f, traffic.Admin(c, "countersign-gateway")
		},
	}
}

func do(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestGatewayRouters(t *testing.T) {
	for name, mk := range routers(t) {
		t.Run(name, func(t *testing.T) {
			f, r := mk(t)
			ctx := fleet.WithCause(t.Context(), fleet.Cause{Incident: "INC-7", RunID: "run-1", Step: "block-ingress", Actor: "playbook"})

			// The plan names exact fields and changes nothing.
			changes, err := r.PlanGate(ctx, gateway.Gate{On: true, RetryAfter: 120, Reason: "rollback"})
			if err != nil {
				t.Fatal(err)
			}
			gwName := map[string]string{"embedded": "embedded", "admin": "countersign-gateway"}[name]
			want := []fleet.Change{
				{Kind: "gateway", Name: gwName, Field: "gate.on", From: "false", To: "true"},
				{Kind: "gateway", Name: gwName, Field: "gate.retry_after", From: "0", To: "120"},
				{Kind: "gateway", Name: gwName, Field: "gate.reason", From: "", To: "rollback"},
			}
			if !reflect.DeepEqual(changes, want) {
				t.Fatalf("PlanGate = %+v\nwant %+v", changes, want)
			}
			if f.g.State().Gate.On || len(f.rec.events()) != 0 {
				t.Fatal("PlanGate changed the gateway")
			}

			got, err := r.SetGate(ctx, gateway.Gate{On: true, RetryAfter: 120, Reason: "rollback"})
			if err != nil || !got.On || got.RetryAfter != 120 {
				t.Fatalf("SetGate = %+v, %v", got, err)
			}
			resp, body := do(t, http.MethodPost, f.data.URL+"/v1/sign")
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "120" {
				t.Fatalf("write with the gate on: %d Retry-After %q, want 503 and 120", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			var p api.Problem
			if err := json.Unmarshal([]byte(body), &p); err != nil || p.Type != api.TypeMaintenance || p.RetryAfter != 120 {
				t.Fatalf("gated body %q: %+v, %v", body, p, err)
			}
			if resp, _ := do(t, http.MethodGet, f.data.URL+"/v1/keys"); resp.StatusCode != http.StatusOK {
				t.Fatalf("read with the gate on: %d, want 200", resp.StatusCode)
			}
			if n := f.hits["stable"].Load() + f.hits["canary"].Load(); n != 1 {
				t.Fatalf("pools received %d requests, want only the read", n)
			}

			if err := r.SetWeights(ctx, map[string]int{"stable": 90, "canary": 10}); err != nil {
				t.Fatal(err)
			}
			st, err := r.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Gate.On || st.Gate.RetryAfter != 120 || st.Gate.Reason != "rollback" ||
				!reflect.DeepEqual(st.Weights, map[string]int{"stable": 90, "canary": 10}) {
				t.Fatalf("State = %+v", st)
			}

			// Off again: writes reach the pools.
			if _, err := r.SetGate(ctx, gateway.Gate{}); err != nil {
				t.Fatal(err)
			}
			if resp, _ := do(t, http.MethodPost, f.data.URL+"/v1/sign"); resp.StatusCode != http.StatusOK {
				t.Fatalf("write with the gate off: %d", resp.StatusCode)
			}

			// Every change was recorded before it took effect, by the
			// cause's actor (the admin client's default is overridden).
			evs := f.rec.events()
			wantTypes := []string{gateway.EventGate, gateway.EventWeights, gateway.EventGate}
			if len(evs) != len(wantTypes) {
				t.Fatalf("recorded %d events, want %d", len(evs), len(wantTypes))
			}
			for i, e := range evs {
				if e.typ != wantTypes[i] || e.details["actor"] != "playbook" {
					t.Errorf("event %d: %s by %v, want %s by playbook", i, e.typ, e.details["actor"], wantTypes[i])
				}
			}
			if evs[0].writeAt != http.StatusOK {
				t.Errorf("a write was answered %d while turning the gate on was recorded, want 200: the gate was already on", evs[0].writeAt)
			}
			if evs[2].writeAt != http.StatusServiceUnavailable {
				t.Errorf("a write was answered %d while turning the gate off was recorded, want 503: the gate was already off", evs[2].writeAt)
			}
			if evs[1].details["after"].(map[string]int)["canary"] != 10 {
				t.Errorf("weights event %v", evs[1].details)
			}
		})
	}
}

func TestGatewayRoutersRefuse(t *testing.T) {
	for name, mk := range routers(t) {
		t.Run(name, func(t *testing.T) {
			f, r := mk(t)
			ctx := t.Context()
			tests := []struct {
				name    string
				weights map[string]int
				want    error
			}{
				{"unknown pool", map[string]int{"blue": 100}, gateway.ErrUnknownPool},
				{"sum", map[string]int{"stable": 90}, gateway.ErrInvalid},
				{"range", map[string]int{"stable": 101, "canary": -1}, gateway.ErrInvalid},
			}
			for _, tt := range tests {
				if _, err := r.PlanWeights(ctx, tt.weights); !errors.Is(err, tt.want) {
					t.Errorf("PlanWeights(%s) = %v, want %v", tt.name, err, tt.want)
				}
				if err := r.SetWeights(ctx, tt.weights); !errors.Is(err, tt.want) {
					t.Errorf("SetWeights(%s) = %v, want %v", tt.name, err, tt.want)
				}
			}
			if _, err := r.SetGate(ctx, gateway.Gate{On: true, RetryAfter: -1}); !errors.Is(err, gateway.ErrInvalid) {
				t.Errorf("SetGate(negative Retry-After) = %v, want ErrInvalid", err)
			}

			// No evidence, no change.
			f.rec.fail.Store(true)
			if _, err := r.SetGate(ctx, gateway.Gate{On: true}); !errors.Is(err, gateway.ErrNotRecorded) {
				t.Errorf("SetGate with a failing recorder = %v, want ErrNotRecorded", err)
			}
			if err := r.SetWeights(ctx, map[string]int{"canary": 100}); !errors.Is(err, gateway.ErrNotRecorded) {
				t.Errorf("SetWeights with a failing recorder = %v, want ErrNotRecorded", err)
			}
			st, err := r.State(ctx)
			if err != nil || st.Gate.On || st.Weights["stable"] != 100 {
				t.Fatalf("after refused changes: %+v, %v", st, err)
			}
		})
	}
}

func TestGateDefaultRetryAfter(t *testing.T) {
	for name, mk := range routers(t) {
		t.Run(name, func(t *testing.T) {
			_, r := mk(t)
			changes, err := r.PlanGate(t.Context(), gateway.Gate{On: true})
			if err != nil {
				t.Fatal(err)
			}
			g, err := r.SetGate(t.Context(), gateway.Gate{On: true})
			if err != nil || g.RetryAfter != gateway.DefaultRetryAfter {
				t.Fatalf("SetGate = %+v, %v; want the default Retry-After", g, err)
			}
			if len(changes) != 2 || changes[1].Field != "gate.retry_after" || changes[1].To != "30" {
				t.Fatalf("the plan disagrees with the change: %+v", changes)
			}
		})
	}
}
