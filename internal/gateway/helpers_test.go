package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// testBackend is a real HTTP server standing in for a node: it counts the
// data-plane requests it receives and answers /readyz as told.
type testBackend struct {
	name  string
	srv   *httptest.Server
	hits  atomic.Int64
	ready atomic.Bool
	hold  chan struct{} // when non-nil, requests to /slow wait for it
}

func newTestBackend(t *testing.T, name string) *testBackend {
	t.Helper()
	b := &testBackend{name: name}
	b.ready.Store(true)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if !b.ready.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		b.hits.Add(1)
		if r.URL.Path == "/slow" && b.hold != nil {
			<-b.hold
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Backend", b.name)
		io.WriteString(w, b.name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *testBackend) URL() string { return b.srv.URL }

// seqRand returns 0, 1, 2, ... modulo n: over any multiple of 100 requests
// the split is exactly the weights.
type seqRand struct{ i int }

func (s *seqRand) IntN(n int) int { s.i++; return (s.i - 1) % n }

type recorded struct {
	typ, subject string
	details      map[string]any
}

// memRecorder keeps the events in memory; fail makes it refuse.
type memRecorder struct {
	mu     sync.Mutex
	events []recorded
	fail   atomic.Bool
}

func (m *memRecorder) Record(_ context.Context, typ, subject string, details map[string]any) error {
	if m.fail.Load() {
		return errors.New("audit log unavailable")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, recorded{typ, subject, details})
	return nil
}

func (m *memRecorder) all() []recorded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]recorded(nil), m.events...)
}

// newTestGateway builds a gateway over the given pools, runs one health
// pass and serves it on a loopback listener.
func newTestGateway(t *testing.T, cfg Config) (*Gateway, *httptest.Server) {
	t.Helper()
	if cfg.Recorder == nil {
		cfg.Recorder = &memRecorder{}
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	g.CheckHealth(t.Context())
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

func post(t *testing.T, url string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}
