package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/db"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
)

// pgSchemaURL creates a fresh schema on the dev machine's PostgreSQL (or
// COUNTERSIGN_TEST_POSTGRES), drops it afterwards, and returns a store URL
// selecting it. Without a server the test fails under CI=true and skips
// otherwise.
func pgSchemaURL(t *testing.T) string {
	t.Helper()
	return pgtest.SchemaURL(t, "cs_gw")
}

// syncBuffer is an io.Writer safe for the command and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listeningRE = regexp.MustCompile(`listening on (http://\S+) \(admin (http://\S+)\)`)

// startGatewayCmd runs `countersign gateway args...` in-process on free
// ports and returns its data and admin URLs, its stdout, and a stop func
// that cancels it as SIGTERM would and returns its error.
func startGatewayCmd(t *testing.T, args ...string) (data, admin string, out *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	env := &cliEnv{stdout: out, stderr: io.Discard, stdin: strings.NewReader(""), getenv: func(string) string { return "" }}
	done := make(chan error, 1)
	go func() {
		done <- runGateway(ctx, env, append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, args...))
	}()
	deadline := time.After(15 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(out.String()); m != nil {
			data, admin = m[1], m[2]
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("gateway exited before listening: %v\n%s", err, out)
		case <-deadline:
			cancel()
			t.Fatalf("gateway not listening within 15s:\n%s", out)
		case <-time.After(10 * time.Millisecond):
		}
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return data, admin, out, stop
}

func postStatus(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Post(u, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestGatewayPostgresKeepsRouting runs the in-cluster gateway's command
// against PostgreSQL, as the Deployment does: changes made through the
// admin API are audit events in the store, and a restarted gateway routes
// as it was left.
func TestGatewayPostgresKeepsRouting(t *testing.T) {
	storeURL := pgSchemaURL(t)
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer node.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "gateway-test-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--store", storeURL, "--admin-token-file", tokenFile, "--pool", "stable=" + node.URL, "--pool", "canary=",
		"--health-interval", "100ms"}
	ctx := context.Background()

	data, adminURL, out, stop := startGatewayCmd(t, append([]string{"--migrate"}, args...)...)
	if !strings.Contains(out.String(), "weights canary=0,stable=100 (from --weights)") {
		t.Fatalf("first start:\n%s", out)
	}
	if code, _ := postStatus(t, data+"/v1/sign"); code != http.StatusOK {
		t.Fatalf("write through the gateway: %d, want 200 from the node", code)
	}
	c := gateway.NewAdminClient(adminURL, token, nil)
	c.Actor = "alice"
	if _, err := c.SetGate(ctx, gateway.Gate{On: true, RetryAfter: 45, Reason: "drill"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetWeights(ctx, map[string]int{"stable": 80, "canary": 20}); err != nil {
		t.Fatal(err)
	}
	if code, ra := postStatus(t, data+"/v1/sign"); code != http.StatusServiceUnavailable || ra != "45" {
		t.Fatalf("write with the gate on: %d Retry-After %q", code, ra)
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}

	data, adminURL, out, _ = startGatewayCmd(t, args...)
	if !strings.Contains(out.String(), "weights canary=20,stable=80 (restored from the store)") {
		t.Fatalf("restart:\n%s", out)
	}
	if code, ra := postStatus(t, data+"/v1/sign"); code != http.StatusServiceUnavailable || ra != "45" {
		t.Fatalf("write after restart: %d Retry-After %q, want the gate kept", code, ra)
	}
	st, err := gateway.NewAdminClient(adminURL, token, nil).State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs, _ := st.Pool("canary"); !st.Gate.On || st.Gate.Reason != "drill" || cs.Weight != 20 {
		t.Fatalf("state after restart: %+v", st)
	}

	// The evidence: alice's gate and weights, then the restart's gate.
	s, err := db.Open(ctx, storeURL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.AuditEvents(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "gateway.") {
			got = append(got, e.Type+" by "+e.Actor)
		}
	}
	want := []string{gateway.EventGate + " by alice", gateway.EventWeights + " by alice", gateway.EventGate + " by " + actorGatewayRestart}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Fatalf("audit events %v, want %v", got, want)
	}
}
