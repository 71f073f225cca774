package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/internal/api"
)

// dropBackend reads each request whole, then closes the connection without
// an answer: what the gateway sees when a backend dies with the request in
// hand, or when a pooled connection to a dead backend turns out stale.
type dropBackend struct {
	srv  *httptest.Server
	hits atomic.Int64
	// before, if set, runs before the connection is dropped.
	before atomic.Pointer[func()]
}

func newDropBackend(t *testing.T) *dropBackend {
	t.Helper()
	d := &dropBackend{}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			io.WriteString(w, "ok")
			return
		}
		d.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if f := d.before.Load(); f != nil {
			(*f)()
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(d.srv.Close)
	return d
}

// echoBackend answers with the SHA-256 of the body it received.
func newEchoBackend(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			io.WriteString(w, "ok")
			return
		}
		hits.Add(1)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(b)
		io.WriteString(w, hex.EncodeToString(sum[:]))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// newDropEchoGateway serves a gateway whose one pool holds a dropping
// backend and an echoing one, picked round-robin, the dropping one second.
func newDropEchoGateway(t *testing.T) (*Gateway, *httptest.Server, *dropBackend, *atomic.Int64) {
	t.Helper()
	drop := newDropBackend(t)
	echo, echoHits := newEchoBackend(t)
	g, srv := newTestGateway(t, Config{
		Pools:   map[string][]string{"stable": {drop.srv.URL, echo.URL}},
		Weights: map[string]int{"stable": 100},
		Rand:    &seqRand{},
	})
	return g, srv, drop, echoHits
}

func send(t *testing.T, url, path string, body []byte, idem string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.StatusCode, readBody(t, resp)
}

// TestRetryOnAnotherBackend: a request the first backend took and never
// answered goes to another backend, with the same body, when it carries
// its own idempotency keys; any other write is answered 502 and not resent.
func TestRetryOnAnotherBackend(t *testing.T) {
	body := bytes.Repeat([]byte("document "), 1000)
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	cases := []struct {
		name, path, idem string
		retried          bool
	}{
		{"sign with Idempotency-Key", "/v1/sign", "k-1", true},
		{"batch: one key per item", "/v1/sign:batch", "", true},
		{"verify: a read", "/v1/verify", "", true},
		{"async job with Idempotency-Key", "/v1/sign:async", "k-2", true},
		{"write without a key", "/v1/sign", "", false},
		{"a write the node does not key, with a key", "/v1/other", "k-3", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, srv, drop, echoHits := newDropEchoGateway(t)
			// Round-robin: send until the drop backend has been tried once.
			var status int
			var got string
			for drop.hits.Load() == 0 {
				status, got = send(t, srv.URL, c.path, body, c.idem)
				if drop.hits.Load() == 0 && (status != http.StatusOK || got != want) {
					t.Fatalf("echo backend answered %d %q, want 200 and the body's hash", status, got)
				}
			}
			st := g.State()
			if ps, _ := st.Pool("stable"); ps.Backends[0].Failed+ps.Backends[1].Failed != 1 {
				t.Fatalf("failed_total over the backends %d and %d, want one failure in all", ps.Backends[0].Failed, ps.Backends[1].Failed)
			}
			if !c.retried {
				if status != http.StatusBadGateway || !strings.Contains(got, api.TypeUnavailable) || st.Retried != 0 {
					t.Fatalf("got %d %s (retried %d), want 502 and no second backend", status, got, st.Retried)
				}
				return
			}
			if status != http.StatusOK || got != want {
				t.Fatalf("got %d %q, want 200 from the other backend with the whole body (hash %s)", status, got, want)
			}
			if st.Retried != 1 || echoHits.Load() < 1 {
				t.Fatalf("retried %d, echo hits %d: the request was not sent to the other backend", st.Retried, echoHits.Load())
			}
		})
	}
}

// TestEjectAfterUnansweredRequests: a backend that accepts connections and
// drops requests passes its health check, so the gateway takes it out
// after ejectAfter unanswered requests in a row, and the next passing
// health check puts it back.
func TestEjectAfterUnansweredRequests(t *testing.T) {
	g, srv, drop, _ := newDropEchoGateway(t)
	dropState := func() BackendState {
		ps, _ := g.State().Pool("stable")
		for _, b := range ps.Backends {
			if b.URL == drop.srv.URL {
				return b
			}
		}
		t.Fatal("drop backend not in the pool")
		return BackendState{}
	}
	// (The transport may itself resend a request once on a new connection
	// when a reused one fails, so the backend's hits can outnumber the
	// gateway's failed attempts: count those.)
	for i := 0; i < 20 && dropState().Failed < ejectAfter; i++ {
		if status, got := send(t, srv.URL, "/v1/sign", []byte("doc"), fmt.Sprint("k-eject-", i)); status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, got)
		}
		if st := dropState(); st.Failed < ejectAfter && !st.Healthy {
			t.Fatalf("out of rotation after %d unanswered requests, want %d", st.Failed, ejectAfter)
		}
	}
	if st := dropState(); st.Healthy || st.Failed != ejectAfter || !strings.Contains(st.LastError, "unanswered") {
		t.Fatalf("after %d unanswered requests: %+v", ejectAfter, st)
	}
	hits := drop.hits.Load()
	for i := range 10 {
		if status, _ := send(t, srv.URL, "/v1/sign", []byte("doc"), fmt.Sprint("k-after-", i)); status != http.StatusOK {
			t.Fatalf("after ejection: %d", status)
		}
	}
	if drop.hits.Load() != hits {
		t.Fatalf("an ejected backend got %d more requests", drop.hits.Load()-hits)
	}
	g.CheckHealth(t.Context())
	if !dropState().Healthy {
		t.Fatal("a passing health check did not put the backend back")
	}
}

// TestRetryAfterRefusedConnection: a backend whose process is gone is taken
// out of rotation by the refused connection, and the request that found
// out is answered by another backend instead of 502.
func TestRetryAfterRefusedConnection(t *testing.T) {
	dead, deadHits := newEchoBackend(t)
	live, liveHits := newEchoBackend(t)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	g, srv := newTestGateway(t, Config{
		Pools:     map[string][]string{"stable": {dead.URL, live.URL}},
		Weights:   map[string]int{"stable": 100},
		Rand:      &seqRand{},
		Transport: tr,
	})
	dead.Close()
	tr.CloseIdleConnections()
	for i := range 4 {
		status, got := send(t, srv.URL, "/v1/sign", []byte("doc"), "k-refused-"+string(rune('a'+i)))
		if status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, got)
		}
	}
	if deadHits.Load() != 0 || liveHits.Load() != 4 {
		t.Fatalf("hits dead=%d live=%d, want 0 and 4", deadHits.Load(), liveHits.Load())
	}
	st := g.State()
	ps, _ := st.Pool("stable")
	var deadState BackendState
	for _, b := range ps.Backends {
		if b.URL == dead.URL {
			deadState = b
		}
	}
	if deadState.Healthy || deadState.LastError == "" {
		t.Fatalf("dead backend still in rotation: %+v", deadState)
	}
	if st.Retried != 1 {
		t.Fatalf("retried %d, want 1 (the request that found the backend dead)", st.Retried)
	}
}

// TestNoRetryForLargeBodies: a body over maxReplayBody is streamed, not
// kept, so it is never sent twice.
func TestNoRetryForLargeBodies(t *testing.T) {
	g, srv, drop, _ := newDropEchoGateway(t)
	body := bytes.Repeat([]byte{'x'}, maxReplayBody+1)
	for i := 0; drop.hits.Load() == 0; i++ {
		if i == 4 {
			t.Fatal("round-robin never reached the dropping backend")
		}
		status, got := send(t, srv.URL, "/v1/sign", body, "k-large")
		if drop.hits.Load() == 0 {
			continue // the echo backend's turn
		}
		if status != http.StatusBadGateway || g.State().Retried != 0 {
			t.Fatalf("got %d %.100s, retried %d: want a 502 and no second attempt", status, got, g.State().Retried)
		}
	}
}

// TestReplayBudget: bodies are kept only within the per-request and total
// bounds and when their length is known; otherwise the request goes out
// unchanged, streamed.
func TestReplayBudget(t *testing.T) {
	g, err := New(Config{Recorder: &memRecorder{}})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("b", 100))
	newReq := func(length int64) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v1/sign", io.NopCloser(bytes.NewReader(body)))
		r.Header.Set("Idempotency-Key", "k")
		r.ContentLength = length
		return r
	}
	check := func(name string, r *http.Request, wantReplay bool) {
		t.Helper()
		got, replay, release := g.bufferReplayable(r)
		defer release()
		if replay != wantReplay {
			t.Fatalf("%s: replay %v, want %v", name, replay, wantReplay)
		}
		if !replay {
			got, err = io.ReadAll(r.Body)
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("%s: body %q, want it whole", name, got)
		}
	}
	check("known length", newReq(100), true)
	if g.buffered.Load() != 0 {
		t.Fatalf("%d bytes still counted after release", g.buffered.Load())
	}
	check("unknown length (chunked)", newReq(-1), false)
	g.buffered.Store(maxReplayBytes - 50)
	check("over the total budget", newReq(100), false)
	if g.buffered.Load() != maxReplayBytes-50 {
		t.Fatalf("refused body left %d bytes counted", g.buffered.Load())
	}
}

// TestNoRetryOnceGated: a gate closed while the first attempt was in flight
// stops the resend (no write reaches a pool while the gate is on), and the
// answer is 502, not the gate's 503: the failed backend may have committed
// the request.
func TestNoRetryOnceGated(t *testing.T) {
	g, srv, drop, echoHits := newDropEchoGateway(t)
	closeGate := func() {
		if _, err := g.SetGate(context.Background(), Gate{On: true, RetryAfter: 5, Reason: "incident"}); err != nil {
			t.Error(err)
		}
	}
	drop.before.Store(&closeGate)
	for i := 0; drop.hits.Load() == 0; i++ {
		if i == 4 {
			t.Fatal("round-robin never reached the dropping backend")
		}
		before := echoHits.Load()
		status, got := send(t, srv.URL, "/v1/sign", []byte("doc"), fmt.Sprint("k-gate-", i))
		if drop.hits.Load() == 0 {
			continue // the echo backend's turn
		}
		if status != http.StatusBadGateway || g.State().Retried != 0 || echoHits.Load() != before {
			t.Fatalf("got %d %s, retried %d: want 502 and no resend once the gate is on", status, got, g.State().Retried)
		}
	}
}
