package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/internal/api"
)

// signServer is a real HTTP server answering POST /v1/sign and
// /v1/sign:batch the way the node shapes its answers, recording every
// idempotency key it sees so tests can check they are unique.
type signServer struct {
	t       *testing.T
	mu      sync.Mutex
	keys    map[string]bool
	order   []string // keys in the order they arrived
	dup     string
	n       atomic.Int64
	hook    func(n int64, w http.ResponseWriter, r *http.Request) bool // true: answered
	failIdx atomic.Int64                                               // batch item to fail; -1 none
}

func newSignServer(t *testing.T) (*signServer, *httptest.Server) {
	s := &signServer{t: t, keys: map[string]bool{}}
	s.failIdx.Store(-1)
	ts := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(ts.Close)
	return s, ts
}

func (s *signServer) seen(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys[k] && s.dup == "" {
		s.dup = k
	}
	s.keys[k] = true
	s.order = append(s.order, k)
}

// distinct returns how many distinct keys the server saw and the first
// repeated one.
func (s *signServer) distinct() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys), s.dup
}

func (s *signServer) serve(w http.ResponseWriter, r *http.Request) {
	n := s.n.Add(1)
	if s.hook != nil && s.hook(n, w, r) {
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	sig := `{"id":"x","format":"raw","signature":"c2ln","key":"k","key_version":1}`
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/sign":
		var req api.SignRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Key != "k" || string(req.Document) != "doc" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		s.seen(r.Header.Get("Idempotency-Key"))
		io.WriteString(w, sig)
	case "/v1/sign:batch":
		var req api.BatchSignRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		var b strings.Builder
		b.WriteString(`{"results":[`)
		for i, it := range req.Items {
			s.seen(it.IdempotencyKey)
			if i > 0 {
				b.WriteByte(',')
			}
			if int64(i) == s.failIdx.Load() {
				b.WriteString(`{"status":404,"problem":{"type":"https://countersign.dev/problems/key-not-found","title":"Not Found","status":404,"detail":"no key"}}`)
				continue
			}
			b.WriteString(`{"status":200,"signature":` + sig + `}`)
		}
		b.WriteString(`]}`)
		io.WriteString(w, b.String()) // > 2 KiB: net/http sends it chunked
	default:
		http.NotFound(w, r)
	}
}

func testReq() api.SignRequest {
	return api.SignRequest{Key: "k", Format: api.FormatRaw, Document: []byte("doc")}
}

func TestSignConnSingleKeepAliveUniqueKeys(t *testing.T) {
	s, ts := newSignServer(t)
	c, err := NewSignConn(ts.URL, "tok", "w0-", KeysUUIDv7, testReq(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 50 {
		if err := c.Do(t.Context()); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if c.Dials != 1 {
		t.Errorf("dials = %d, want 1 (keep-alive)", c.Dials)
	}
	if n, dup := s.distinct(); n != 50 || dup != "" {
		t.Errorf("%d distinct keys (duplicate %q), want 50 unique", n, dup)
	}
	if !strings.Contains(string(c.Body()), `"signature":"c2ln"`) {
		t.Errorf("body = %s", c.Body())
	}
}

func TestSignConnBatch(t *testing.T) {
	s, ts := newSignServer(t)
	c, err := NewSignConn(ts.URL+"/", "tok", "w1-", KeysUUIDv4, testReq(), 100)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		if err := c.Do(t.Context()); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if n, dup := s.distinct(); n != 500 || dup != "" {
		t.Errorf("%d distinct keys (duplicate %q), want 500 unique", n, dup)
	}
	s.failIdx.Store(37)
	err = c.Do(t.Context())
	var re *ResponseError
	if !errors.As(err, &re) || re.Item != 37 || re.Status != 404 || re.Type != "https://countersign.dev/problems/key-not-found" {
		t.Fatalf("failed item: got %v, want item 37's 404 key-not-found problem", err)
	}
	if c.Dials != 1 {
		t.Errorf("dials = %d, want 1", c.Dials)
	}
}

func TestSignConnProblem(t *testing.T) {
	s, ts := newSignServer(t)
	s.hook = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		if n == 2 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"type":"https://countersign.dev/problems/overloaded","title":"Service Unavailable","status":503,"detail":"busy"}`)
			return true
		}
		if n == 3 {
			http.Error(w, "plain text", http.StatusBadGateway)
			return true
		}
		return false
	}
	c, err := NewSignConn(ts.URL, "tok", "w-", KeysUUIDv7, testReq(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Do(t.Context()); err != nil {
		t.Fatal(err)
	}
	var re *ResponseError
	if err := c.Do(t.Context()); !errors.As(err, &re) || re.Status != 503 || re.Type != "https://countersign.dev/problems/overloaded" || re.Detail != "busy" {
		t.Errorf("503: got %v", err)
	}
	if err := c.Do(t.Context()); !errors.As(err, &re) || re.Status != 502 || re.Type != "" || !strings.Contains(re.Detail, "plain text") {
		t.Errorf("502: got %v", err)
	}
	if err := c.Do(t.Context()); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

func TestSignConnReconnects(t *testing.T) {
	s, ts := newSignServer(t)
	s.hook = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		switch n {
		case 3: // the server drops the connection without answering
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return true
		case 6: // the server answers, then closes
			w.Header().Set("Connection", "close")
		}
		return false
	}
	c, err := NewSignConn(ts.URL, "tok", "w-", KeysUUIDv7, testReq(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 8 {
		if err := c.Do(t.Context()); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// Dial 1; request 3 is dropped and resent on dial 2; request 6
	// closes, so the next one dials a third time.
	if c.Dials != 3 {
		t.Errorf("dials = %d, want 3", c.Dials)
	}
	// A server that is gone: the error says so, and is not a success.
	ts.Close()
	if err := c.Do(t.Context()); err == nil {
		t.Error("server gone: got nil error")
	}
}

func TestSignConnHonoursDeadline(t *testing.T) {
	s, ts := newSignServer(t)
	release := make(chan struct{})
	defer close(release)
	s.hook = func(n int64, w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		return true
	}
	c, err := NewSignConn(ts.URL, "tok", "w-", KeysUUIDv7, testReq(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = c.Do(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's deadline error", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("Do returned after %v, want soon after the 100 ms deadline", d)
	}
}

func TestSignConnUnderLoad(t *testing.T) {
	s, ts := newSignServer(t)
	conns := make([]*SignConn, 4)
	for w := range conns {
		c, err := NewSignConn(ts.URL, "tok", fmt.Sprintf("w%d-", w), KeysUUIDv7, testReq(), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[w] = c
	}
	var lat Latencies
	ok, failed, firstErr, _ := Load(t.Context(), len(conns), 200*time.Millisecond, &lat, func(ctx context.Context, w int, _ int64) error {
		return conns[w].Do(ctx)
	})
	if ok == 0 || failed != 0 || firstErr != nil {
		t.Errorf("ok = %d, failed = %d (%v): want successes only", ok, failed, firstErr)
	}
	if n, dup := s.distinct(); int64(n) < ok || dup != "" {
		t.Errorf("%d distinct keys for %d successes (duplicate %q)", n, ok, dup)
	}
	if lat.Quantile(0.5) <= 0 {
		t.Error("no latency recorded")
	}
}

func TestNewSignConnRejects(t *testing.T) {
	if _, err := NewSignConn("ftp://x", "tok", "w-", KeysUUIDv7, testReq(), 0); err == nil {
		t.Error("ftp scheme: got nil error")
	}
	// A key prefix that also appears in the body would make the key slots
	// ambiguous.
	if _, err := NewSignConn("http://x", "tok", "k", KeysUUIDv7, api.SignRequest{Key: "k" + strings.Repeat("0", keyWidth), Format: api.FormatRaw, Document: []byte("d")}, 2); err == nil {
		t.Error("ambiguous key prefix: got nil error")
	}
}

func TestSignConnKeyStyles(t *testing.T) {
	for _, style := range []KeyStyle{KeysUUIDv7, KeysUUIDv4} {
		t.Run(style.String(), func(t *testing.T) {
			if got, err := ParseKeyStyle(style.String()); err != nil || got != style {
				t.Fatalf("ParseKeyStyle(%q) = %v, %v", style, got, err)
			}
			s, ts := newSignServer(t)
			c, err := NewSignConn(ts.URL, "tok", "bench-", style, testReq(), 10)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := range 20 {
				if err := c.Do(t.Context()); err != nil {
					t.Fatalf("batch %d: %v", i, err)
				}
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.keys) != 200 || s.dup != "" {
				t.Fatalf("%d distinct keys (duplicate %q), want 200", len(s.keys), s.dup)
			}
			ordered := true
			for i, k := range s.order {
				u, err := uuid.Parse(strings.TrimPrefix(k, "bench-"))
				if !strings.HasPrefix(k, "bench-") || err != nil {
					t.Fatalf("key %q: want bench- and a UUID (%v)", k, err)
				}
				want := map[KeyStyle]uuid.Version{KeysUUIDv7: 7, KeysUUIDv4: 4}[style]
				if u.Version() != want {
					t.Fatalf("key %q: UUID version %d, want %d", k, u.Version(), want)
				}
				if i > 0 && k <= s.order[i-1] {
					ordered = false
				}
			}
			// Time-ordered keys arrive sorted; 200 random ones never do.
			if ordered != (style == KeysUUIDv7) {
				t.Errorf("keys sorted in arrival order = %v for %s", ordered, style)
			}
		})
	}
	if _, err := ParseKeyStyle("counter"); err == nil {
		t.Error(`ParseKeyStyle("counter"): got nil error`)
	}
}
