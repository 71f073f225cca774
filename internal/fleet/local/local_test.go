package local

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/fleet"
)

func TestDeployStartsReadyReplicas(t *testing.T) {
	dir := t.TempDir()
	sinks := &sinkLog{}
	f := newTestFleet(t, dir, func(c *Config) { c.Endpoints = sinks.sink() })
	rel := release(t, "v1", "--ready-after=200ms")
	rev, err := f.Deploy(t.Context(), "stable", rel, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Number != 1 || rev.Status != fleet.StatusCurrent || rev.Release.ID != "v1" {
		t.Fatalf("revision %+v", rev)
	}
	st := poolStatus(t, f, "stable")
	if st.Revision != 1 || st.Desired != 2 || st.Ready != 2 || len(st.Endpoints) != 2 {
		t.Fatalf("status %+v", st)
	}
	if got := sinks.last(); !slices.Equal(got, append([]string{"stable"}, st.Endpoints...)) {
		t.Errorf("sink told %v, status says %v", got, st.Endpoints)
	}
	for i, ep := range st.Endpoints {
		w := mustWhoami(t, ep)
		if w.Release != "v1" || w.Extra != "v1-env" || "http://"+w.Listen != ep {
			t.Errorf("replica %d: %+v at %s", i, w, ep)
		}
		if !slices.Equal(w.Args, []string{"--ready-after=200ms", "--listen", w.Listen}) {
			t.Errorf("replica %d args %q", i, w.Args)
		}
		if !strings.HasPrefix(w.Instance, "stable-r1-") {
			t.Errorf("instance %q", w.Instance)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "logs", "stable-r1-0.log"))
	if err != nil || !strings.Contains(string(log), "testnode: listening on") {
		t.Fatalf("replica log: %v %q", err, log)
	}
}

// TestFleetEnvReachesReplicasUnrecorded: Config.Env reaches every
// replica's environment but not fleet.json, and a release's Env comes
// after it.
func TestFleetEnvReachesReplicasUnrecorded(t *testing.T) {
	dir := t.TempDir()
	f := newTestFleet(t, dir, func(c *Config) { c.Env = []string{"TESTNODE_SECRET=s3cret-pw", "TESTNODE_EXTRA=from-fleet"} })
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v1"), 1); err != nil {
		t.Fatal(err)
	}
	w := mustWhoami(t, poolStatus(t, f, "stable").Endpoints[0])
	if w.Secret != "s3cret-pw" || w.Extra != "v1-env" {
		t.Errorf("replica sees secret %q, extra %q; want the fleet's secret and the release's extra", w.Secret, w.Extra)
	}
	b, err := os.ReadFile(filepath.Join(dir, "fleet.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cret-pw") || strings.Contains(string(b), "TESTNODE_SECRET") {
		t.Errorf("fleet.json records the fleet's environment:\n%s", b)
	}
}

func TestCrashedReplicaRestarts(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), nil)
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v1"), 1); err != nil {
		t.Fatal(err)
	}
	ep := poolStatus(t, f, "stable").Endpoints[0]
	first := mustWhoami(t, ep)
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replica to come back", func() bool {
		w, err := whoami(ep)
		return err == nil && w.PID != first.PID
	})
	eventually(t, "the replica to be ready", func() bool { return poolStatus(t, f, "stable").Ready == 1 })
	if got := poolStatus(t, f, "stable").Restarts; got != 1 {
		t.Errorf("restarts %d, want 1", got)
	}
	if got := poolStatus(t, f, "stable").Endpoints; !slices.Equal(got, []string{ep}) {
		t.Errorf("endpoint moved after restart: %v, was %s", got, ep)
	}
	if alive(first.PID) {
		t.Errorf("killed pid %d still alive", first.PID)
	}
}

func TestDrainLetsInFlightFinish(t *testing.T) {
	sinks := &sinkLog{}
	f := newTestFleet(t, t.TempDir(), func(c *Config) { c.Endpoints = sinks.sink() })
	if _, err := f.Deploy(t.Context(), "canary", release(t, "v2"), 1); err != nil {
		t.Fatal(err)
	}
	ep := poolStatus(t, f, "canary").Endpoints[0]
	pid := mustWhoami(t, ep).PID

	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get(ep + "/slow?d=800ms")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, string(b), err}
	}()
	eventually(t, "the slow request to be in flight", func() bool {
		w, err := whoami(ep)
		return err == nil && w.InFlight == 1
	})

	rep, err := f.Drain(t.Context(), "canary")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stopped != 1 || rep.Killed != 0 {
		t.Fatalf("drain report %+v, want 1 stopped, 0 killed", rep)
	}
	r := <-slow
	if r.err != nil || r.code != http.StatusOK || strings.TrimSpace(r.body) != "done" {
		t.Fatalf("in-flight request during drain: %+v", r)
	}
	if alive(pid) {
		t.Errorf("pid %d alive after drain", pid)
	}
	if got := sinks.last(); !slices.Equal(got, []string{"canary"}) {
		t.Errorf("sink not emptied before the drain: %v", got)
	}
	st := poolStatus(t, f, "canary")
	if st.Desired != 0 || st.Ready != 0 || st.Revision != 1 {
		t.Errorf("status after drain %+v", st)
	}
	if err := f.Scale(t.Context(), "canary", 1); err != nil {
		t.Fatal(err)
	}
	if st := poolStatus(t, f, "canary"); st.Ready != 1 || st.Revision != 1 {
		t.Errorf("status after scale back %+v", st)
	}
}

func TestDrainKillsAfterGracePeriod(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), func(c *Config) { c.StopTimeout = 300 * time.Millisecond })
	if _, err := f.Deploy(t.Context(), "canary", release(t, "v2", "--ignore-term"), 1); err != nil {
		t.Fatal(err)
	}
	pid := mustWhoami(t, poolStatus(t, f, "canary").Endpoints[0]).PID
	rep, err := f.Drain(t.Context(), "canary")
	if err != nil || rep.Killed != 1 || rep.Stopped != 0 {
		t.Fatalf("drain = %+v, %v; want 1 killed", rep, err)
	}
	if alive(pid) {
		t.Errorf("pid %d alive", pid)
	}
}

func TestScaleToZeroAndUp(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), nil)
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v1"), 2); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, ep := range poolStatus(t, f, "stable").Endpoints {
		pids = append(pids, mustWhoami(t, ep).PID)
	}
	if err := f.Scale(t.Context(), "stable", 0); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d alive after scale to 0", pid)
		}
	}
	if st := poolStatus(t, f, "stable"); st.Desired != 0 || st.Ready != 0 {
		t.Fatalf("status %+v", st)
	}
	if err := f.Scale(t.Context(), "stable", 3); err != nil {
		t.Fatal(err)
	}
	if st := poolStatus(t, f, "stable"); st.Desired != 3 || st.Ready != 3 {
		t.Fatalf("status %+v", st)
	}
	if err := f.Scale(t.Context(), "stable", 1); err != nil {
		t.Fatal(err)
	}
	if st := poolStatus(t, f, "stable"); st.Ready != 1 {
		t.Fatalf("status %+v", st)
	}
	if err := f.Scale(t.Context(), "nowhere", 1); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("scale of an unknown pool: %v", err)
	}
}

func TestChecksumMismatchRefused(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), nil)
	rel := release(t, "v1")
	good := rel.SHA256
	rel.SHA256 = strings.Repeat("0", 64)
	_, err := f.Deploy(t.Context(), "stable", rel, 1)
	var ce *fleet.ChecksumError
	if !errors.As(err, &ce) || ce.Got != good || ce.Want != rel.SHA256 {
		t.Fatalf("Deploy = %v, want a ChecksumError with the real digest", err)
	}
	if _, err := f.History(t.Context(), "stable"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("a refused release left history: %v", err)
	}
	rel.SHA256 = "not-hex"
	if _, err := f.Deploy(t.Context(), "stable", rel, 1); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("malformed digest: %v", err)
	}
}

func TestFailedDeployKeepsPreviousRevision(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), func(c *Config) { c.ReadyTimeout = 600 * time.Millisecond })
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v1"), 1); err != nil {
		t.Fatal(err)
	}
	ep := poolStatus(t, f, "stable").Endpoints[0]
	_, err := f.Deploy(t.Context(), "stable", release(t, "v2", "--ready-after=1h"), 1)
	if !errors.Is(err, fleet.ErrNotReady) {
		t.Fatalf("Deploy of a never-ready release: %v, want ErrNotReady", err)
	}
	if w := mustWhoami(t, ep); w.Release != "v1" {
		t.Fatalf("serving %s after a failed deploy, want v1", w.Release)
	}
	h, _ := f.History(t.Context(), "stable")
	if len(h) != 2 || h[0].Status != fleet.StatusCurrent || h[1].Status != fleet.StatusFailed {
		t.Fatalf("history %+v", h)
	}
	if err := f.MarkGood(t.Context(), "stable", 2); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("MarkGood of a failed revision: %v", err)
	}
}

func TestHistoryPersistsAndRollback(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	f := newTestFleet(t, dir, nil)
	if _, err := f.LastKnownGood(ctx); !errors.Is(err, fleet.ErrNoKnownGood) {
		t.Fatalf("LastKnownGood on an empty fleet: %v", err)
	}
	v1 := release(t, "v1")
	if _, err := f.Deploy(ctx, "stable", v1, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.MarkGood(ctx, "stable", 1); err != nil {
		t.Fatal(err)
	}
	// The build overwrites the artifact path: v1's bytes are gone from it.
	v2 := v1
	v2.ID = "v2"
	b, _ := os.ReadFile(v1.Artifact)
	if err := os.WriteFile(v1.Artifact, append(b, "v2"...), 0o755); err != nil {
		t.Fatal(err)
	}
	v2.SHA256 = mustSHA(t, v1.Artifact)
	if _, err := f.Deploy(ctx, "stable", v2, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Deploy(ctx, "canary", release(t, "v3"), 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// A new control plane on the same state directory.
	f2 := newTestFleet(t, dir, nil)
	h, err := f2.History(ctx, "stable")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Release.ID != "v1" || !h[0].Good || h[0].Status != fleet.StatusSuperseded ||
		h[1].Release.ID != "v2" || h[1].Status != fleet.StatusCurrent || h[1].Good {
		t.Fatalf("history after reload: %+v", h)
	}
	lkg, err := f2.LastKnownGood(ctx)
	if err != nil || lkg.Pool != "stable" || lkg.Number != 1 || lkg.Release.ID != "v1" {
		t.Fatalf("LastKnownGood = %+v, %v", lkg, err)
	}
	if err := f2.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st := poolStatus(t, f2, "stable"); st.Ready != 2 || st.Revision != 2 {
		t.Fatalf("after Resume: %+v", st)
	}
	if st := poolStatus(t, f2, "canary"); st.Ready != 1 {
		t.Fatalf("canary after Resume: %+v", st)
	}

	rev, err := f2.Rollback(ctx, "stable", lkg.Number)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Number != 3 || rev.RollbackOf != 1 || rev.Release.ID != "v1" || rev.Status != fleet.StatusCurrent {
		t.Fatalf("rollback revision %+v", rev)
	}
	st := poolStatus(t, f2, "stable")
	if st.Ready != 2 {
		t.Fatalf("after rollback: %+v", st)
	}
	for _, ep := range st.Endpoints {
		if w := mustWhoami(t, ep); w.Release != "v1" {
			t.Fatalf("replica runs %s after rollback to v1", w.Release)
		}
	}
	if _, err := f2.Rollback(ctx, "stable", 42); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("rollback to a missing revision: %v", err)
	}
}

func TestCloseLeavesNoProcess(t *testing.T) {
	f := newTestFleet(t, t.TempDir(), nil)
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v1", "--ignore-term"), 2); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, ep := range poolStatus(t, f, "stable").Endpoints {
		pids = append(pids, mustWhoami(t, ep).PID)
	}
	start := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v; it kills, it does not wait for a grace period", d)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived Close", pid)
		}
	}
	if _, err := f.Deploy(t.Context(), "stable", release(t, "v2"), 1); err == nil {
		t.Error("Deploy after Close succeeded")
	}
}

func TestRenderArgs(t *testing.T) {
	d := argData{Listen: "127.0.0.1:9000", Port: 9000, Pool: "stable", Replica: 1, Release: "v1", DataDir: "/d"}
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr bool
	}{
		{"appends listen", []string{"node"}, []string{"node", "--listen", "127.0.0.1:9000"}, false},
		{"explicit listen", []string{"node", "--listen={{.Listen}}"}, []string{"node", "--listen=127.0.0.1:9000"}, false},
		{"port only", []string{"--port", "{{.Port}}", "--data", "{{.DataDir}}/{{.Pool}}"}, []string{"--port", "9000", "--data", "/d/stable"}, false},
		{"unknown field", []string{"{{.Nope}}"}, nil, true},
		{"bad template", []string{"{{.Listen"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fleet.RenderArgs(tt.args, []string{"--listen", "{{.Listen}}"}, d)
			if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Fatalf("fleet.RenderArgs(%q) = %q, %v; want %q, err=%v", tt.args, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func mustSHA(t *testing.T, path string) string {
	t.Helper()
	s, err := fleet.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
