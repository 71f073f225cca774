package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/store"
)

var crashMatrix = flag.Bool("crash-matrix", false, "crash the control process at every step boundary of the rollback playbook, not only the default few")

// buildBinary builds the countersign command: `up` runs it as the control
// process and the fleet runs it as every release's nodes.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "countersign")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/countersign/countersign/cmd/countersign")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build countersign: %v", err)
	}
	return bin
}

// crashCase kills the control process once: by its own crash point (the
// journal reached a step state) or, with killDuring, from outside while
// that step runs.
type crashCase struct {
	name       string
	crashAt    string
	killDuring string
}

// TestCrashResume is the issue's "kill -9 of the control process at each
// step followed by resume": `countersign up --drill` in a temporary data
// directory, v2 shipped with invalid signatures, the control process killed
// with SIGKILL at a step boundary, `up` started again on the same data
// directory. The run must resume and succeed, no completed step may run
// twice (one `succeeded` per step in the journal; no new audit event by a
// step that had completed), no node process may outlive its control
// process, and the audit log must verify consistent across the crash.
// -crash-matrix runs every boundary.
func TestCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("crash-resume runs real processes (~15 s per case); run without -short")
	}
	cases := []crashCase{
		{name: "after-block-ingress", crashAt: "block-ingress/succeeded"},
		{name: "after-snapshot", crashAt: "snapshot/succeeded"},
		{name: "during-canary", killDuring: "canary"},
	}
	if *crashMatrix {
		cases = append(cases,
			crashCase{name: "after-classify", crashAt: "classify/succeeded"},
			crashCase{name: "after-open-incident", crashAt: "open-incident/succeeded"},
			crashCase{name: "after-isolate", crashAt: "isolate/succeeded"},
			crashCase{name: "during-rollback", crashAt: "rollback/running+150ms"},
			crashCase{name: "after-rollback", crashAt: "rollback/succeeded"},
			crashCase{name: "after-verify", crashAt: "verify/succeeded"},
			crashCase{name: "during-canary-first-stage", crashAt: "canary/running+100ms"},
		)
	}
	bin := buildBinary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { crashAndResume(t, bin, tc) })
	}
}

type upProc struct {
	cmd  *exec.Cmd
	done chan error
	out  string
}

// startUp runs `countersign up --drill` on dir and waits for control.json.
func startUp(t *testing.T, bin, dir string, extra ...string) (*upProc, *control.Client) {
	t.Helper()
	os.Remove(filepath.Join(dir, control.EndpointsFile))
	out := filepath.Join(dir, "..", "up-"+time.Now().Format("150405.000")+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"up", "--data", dir, "--drill", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--control-listen", "127.0.0.1:0", "--canary-hold", "1s", "--param", "retry_after=1s"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), install.PassphraseEnv+"=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &upProc{cmd: cmd, done: make(chan error, 1), out: out}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := control.Dial(dir, "crash-test"); err == nil {
			if _, err := c.State(context.Background()); err == nil {
				return p, c
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("up exited before it was ready: %v\n%s", err, readFile(out))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("up not ready within 60s\n%s", readFile(out))
	return nil, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func crashAndResume(t *testing.T, bin string, tc crashCase) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "world")
	if _, err := install.Init(ctx, dir, install.Options{Dev: true, ScryptN: 1 << 12, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatal(err)
	}
	var extra []string
	if tc.crashAt != "" {
		extra = []string{"--crash-at", tc.crashAt}
	}
	p1, c := startUp(t, bin, dir, extra...)
	if _, err := c.Deploy(ctx, control.ReleaseSpec{ID: "v2", Pool: control.PoolCanary, Weight: 10, Fault: "invalid-signatures", FaultRate: 1}); err != nil {
		t.Fatalf("deploy v2: %v", err)
	}
	var runID string
	if tc.killDuring != "" {
		waitFor(t, 30*time.Second, "the detector's incident and its run", func() bool {
			incs, err := c.Incidents(ctx)
			if err == nil && len(incs) > 0 && incs[0].RunID != "" {
				runID = incs[0].RunID
			}
			return runID != ""
		})
		waitFor(t, 60*time.Second, "step "+tc.killDuring+" to run", func() bool {
			st, err := c.Status(ctx, runID)
			return err == nil && st.Step(tc.killDuring) != nil && st.Step(tc.killDuring).State == playbook.StepRunning
		})
		time.Sleep(1500 * time.Millisecond) // into the second canary stage
		if err := p1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-p1.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("up ended with %v; want killed by SIGKILL\n%s", err, readFile(p1.out))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("crash point %q never fired\n%s", tc.crashAt, readFile(p1.out))
	}
	// Pdeathsig: every node process dies with its control process.
	waitFor(t, 10*time.Second, "no node process of the killed world", func() bool { return len(nodesOf(dir)) == 0 })

	before := inspect(t, dir, runID, nil)
	runID = before.runID
	if len(before.succeeded) == 0 && tc.killDuring == "" && !strings.HasPrefix(tc.crashAt, "classify/") {
		t.Fatalf("no step had succeeded before the crash at %q", tc.crashAt)
	}

	t.Logf("run %s killed with steps succeeded %v; audit events per step %v", runID, before.succeeded, before.events)
	p2, c2 := startUp(t, bin, dir)
	var final playbook.Status
	waitFor(t, 90*time.Second, "the resumed run to end", func() bool {
		st, err := c2.Status(ctx, runID)
		final = st
		return err == nil && st.State != playbook.RunRunning
	})
	if final.State != playbook.RunSucceeded {
		var b strings.Builder
		playbook.WriteStatus(&b, final)
		t.Fatalf("resumed run ended %s; want succeeded\n%s", final.State, b.String())
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p2.done:
		if err != nil {
			t.Errorf("up after SIGTERM: %v\n%s", err, readFile(p2.out))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("up did not stop within 60s of SIGTERM")
	}
	if n := nodesOf(dir); len(n) != 0 {
		t.Errorf("node processes left after a graceful stop: %v", n)
	}

	after := inspect(t, dir, runID, before.checkpoint)
	if !after.recovered {
		t.Errorf("the journal has no run.state record by %q noting the recovery", control.ActorRestart)
	}
	for step, n := range after.succeeded {
		if n != 1 {
			t.Errorf("step %s journaled succeeded %d times; want once", step, n)
		}
	}
	for step := range before.succeeded {
		if after.events[step] != before.events[step] {
			t.Errorf("step %s had completed before the crash with %d audit events by its actor; after resume it has %d (it ran again)",
				step, before.events[step], after.events[step])
		}
	}
	if before.checkpoint != nil && !after.verified {
		t.Errorf("audit log does not verify consistent with the checkpoint signed before the crash: %v", after.verifyErr)
	}
}

type inspection struct {
	runID      string
	succeeded  map[string]int // step → journaled succeeded records
	events     map[string]int // step → audit events by the step's actor (gateway, fleet, incidents, snapshots)
	recovered  bool
	checkpoint []byte
	verified   bool
	verifyErr  error
}

// inspect reads the stopped world's store: the run's journal, the audit
// events each step caused, and whether the log verifies against the
// checkpoint since (nil: on its own).
func inspect(t *testing.T, dir, runID string, since []byte) inspection {
	t.Helper()
	ctx := context.Background()
	inst, err := install.Open(ctx, dir, install.OpenOptions{Release: "test", Instance: "crash-test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	st := inst.Store
	in := inspection{succeeded: map[string]int{}, events: map[string]int{}, runID: runID}
	if runID == "" {
		incs, err := st.Incidents(ctx, false)
		if err != nil || len(incs) != 1 {
			t.Fatalf("incidents = %d, %v; want the one the detector opened", len(incs), err)
		}
		var d struct {
			RunID string `json:"run_id"`
		}
		json.Unmarshal(incs[0].Details, &d)
		if d.RunID == "" {
			t.Fatalf("incident %s names no run", incs[0].ID)
		}
		runID, in.runID = d.RunID, d.RunID
	}
	recs, err := st.Journal(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range recs {
		var r playbook.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == "step" && r.State == playbook.StepSucceeded {
			in.succeeded[r.Step]++
		}
		if r.Kind == "run.state" && r.Actor == control.ActorRestart {
			in.recovered = true
		}
	}
	size, err := st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.AuditEvents(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "playbook:" + runID + "/"
	for _, ev := range evs {
		if step, ok := strings.CutPrefix(ev.Actor, prefix); ok {
			in.events[step]++
		}
	}
	cp, err := st.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		t.Fatal(err)
	default:
		in.checkpoint = cp.Note
		_, in.verifyErr = auditlog.Verify(ctx, auditlog.StoreSource{R: st}, inst.Config.LogVerifierKey, auditlog.VerifyOptions{Since: since})
		in.verified = in.verifyErr == nil
	}
	return in
}

// nodesOf lists the pids of live processes started with --data dir other
// than `up` itself (the fleet's nodes).
func nodesOf(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && args[1] == "node" && strings.Contains(string(b), "\x00"+dir+"\x00") {
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
				continue // a zombie is dead; its parent has not reaped it
			}
			out = append(out, e.Name())
		}
	}
	return out
}
