package playbook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fn is an action made of functions; calls counts Run calls.
type fn struct {
	mu    sync.Mutex
	calls []Call
	run   func(ctx context.Context, c Call) (Outputs, error)
}

func (f *fn) Plan(_ context.Context, c Call) (Plan, error) {
	return Plan{Changes: []Change{{Target: "test:" + c.StepID, To: fmt.Sprint(c.With)}}}, nil
}

func (f *fn) Run(ctx context.Context, c Call) (Outputs, error) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	if f.run == nil {
		return Outputs{"ok": true}, nil
	}
	return f.run(ctx, c)
}

func (f *fn) n() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.calls) }

type harness struct {
	eng     *Engine
	journal *fileJournal
	reg     *Registry
	events  []Event
	mu      sync.Mutex
}

func newHarness(t *testing.T, actions map[string]Action, policy ApprovalPolicy) *harness {
	t.Helper()
	h := &harness{journal: newFileJournal(t, t.TempDir()), reg: NewRegistry()}
	for name, a := range actions {
		if err := h.reg.Register(name, a); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := New(Config{Store: h.journal, Actions: h.reg, Policy: policy, Release: "v1", Instance: "ctl-1", Logger: slog.New(slog.DiscardHandler),
		Observer: func(ev Event) { h.mu.Lock(); h.events = append(h.events, ev); h.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return h
}

func (h *harness) spec(t *testing.T, y string) *Spec {
	t.Helper()
	s, err := Parse([]byte(y), h.reg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs spec in a goroutine and returns a channel with its result.
func (h *harness) start(ctx context.Context, s *Spec, runID string) <-chan Status {
	ch := make(chan Status, 1)
	go func() {
		st, err := h.eng.Run(ctx, s, RunOptions{RunID: runID, Actor: "alice"})
		if err != nil {
			st.Note = "error: " + err.Error()
		}
		ch <- st
	}()
	return ch
}

func wantStates(t *testing.T, st Status, run RunState, steps ...StepState) {
	t.Helper()
	if st.State != run {
		t.Errorf("run state: got %s (%s), want %s", st.State, st.Note, run)
	}
	for i, want := range steps {
		if got := st.Steps[i].State; got != want {
			t.Errorf("step %s: got %s (%s), want %s", st.Steps[i].ID, got, st.Steps[i].Error, want)
		}
	}
}

func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := &fn{run: func(ctx context.Context, c Call) (Outputs, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		h := newHarness(t, map[string]Action{"slow": slow}, nil)
		s := h.spec(t, "name: p\nsteps:\n  - {id: a, action: slow, timeout: 30s}\n")
		t0 := time.Now()
		st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunFailed, StepFailed)
		if !strings.Contains(st.Steps[0].Error, "timed out after 30s") {
			t.Errorf("error: got %q, want a timeout", st.Steps[0].Error)
		}
		if d := time.Since(t0); d != 30*time.Second {
			t.Errorf("took %v of fake time, want 30s", d)
		}
	})
}

func TestRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		var at []time.Duration
		flaky := &fn{run: func(ctx context.Context, c Call) (Outputs, error) {
			at = append(at, time.Since(t0))
			if c.Attempt < 4 {
				return nil, fmt.Errorf("attempt %d failed", c.Attempt)
			}
			return Outputs{"attempt": c.Attempt, "token": c.Token}, nil
		}}
		h := newHarness(t, map[string]Action{"flaky": flaky}, nil)
		s := h.spec(t, "name: p\nsteps:\n  - {id: a, action: flaky, retries: {count: 3, backoff: 10s, max_backoff: 15s}}\n")
		st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunSucceeded, StepSucceeded)
		want := []time.Duration{0, 10 * time.Second, 25 * time.Second, 40 * time.Second}
		if fmt.Sprint(at) != fmt.Sprint(want) {
			t.Errorf("attempts at %v, want %v", at, want)
		}
		if got := st.Steps[0].Outputs["token"]; got != "r/a" {
			t.Errorf("token %v, want the same r/a for every attempt", got)
		}
		var retrying int
		for _, r := range h.journal.records(t, "r") {
			if r.State == StepRetrying {
				retrying++
			}
		}
		if retrying != 3 {
			t.Errorf("journaled %d retrying records, want 3", retrying)
		}
	})
	t.Run("exhausted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			bad := &fn{run: func(context.Context, Call) (Outputs, error) { return nil, errors.New("boom") }}
			h := newHarness(t, map[string]Action{"bad": bad}, nil)
			s := h.spec(t, "name: p\nsteps:\n  - {id: a, action: bad, retries: {count: 2, backoff: 1s}}\n  - {id: b, action: bad}\n")
			st, _ := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
			wantStates(t, st, RunFailed, StepFailed, StepPending)
			if bad.n() != 3 || st.Steps[0].Attempt != 3 {
				t.Errorf("got %d calls, attempt %d; want 3 and 3", bad.n(), st.Steps[0].Attempt)
			}
		})
	})
}

const gated = `name: p
steps:
  - id: prep
    action: ok
  - id: deploy
    action: ok
    approval: {required: 2, roles: [incident-commander, sre-lead]}
  - id: after
    action: ok
`

func TestApprovalGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ok := &fn{}
		h := newHarness(t, map[string]Action{"ok": ok}, nil)
		done := h.start(t.Context(), h.spec(t, gated), "r")
		synctest.Wait()
		st, err := h.eng.Status(t.Context(), "r")
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunRunning, StepSucceeded, StepAwaitingApproval, StepPending)
		if ok.n() != 1 {
			t.Fatalf("%d calls before approval, want 1", ok.n())
		}
		ctx := t.Context()
		for _, tc := range []struct {
			step string
			who  Approver
			want error
		}{
			{"deploy", Approver{"mallory", []string{"viewer"}}, ErrForbidden},
			{"after", Approver{"bob", []string{"sre-lead"}}, ErrWrongState},
			{"nope", Approver{"bob", []string{"sre-lead"}}, ErrUnknownStep},
			{"deploy", Approver{"bob", []string{"incident-commander"}}, nil},
			{"deploy", Approver{"bob", []string{"sre-lead"}}, ErrDuplicate},
		} {
			if err := h.eng.Approve(ctx, "r", tc.step, tc.who); !errors.Is(err, tc.want) {
				t.Errorf("Approve(%s, %s): got %v, want %v", tc.step, tc.who.Name, err, tc.want)
			}
		}
		time.Sleep(time.Minute) // the driver polls, and must still wait for a second approver
		synctest.Wait()
		if st, _ := h.eng.Status(ctx, "r"); st.Steps[1].State != StepAwaitingApproval || ok.n() != 1 {
			t.Fatalf("after one of two approvals: step %s, %d calls; want still awaiting", st.Steps[1].State, ok.n())
		}
		if err := h.eng.Approve(ctx, "r", "deploy", Approver{"carol", []string{"sre-lead"}}); err != nil {
			t.Fatal(err)
		}
		st = <-done
		wantStates(t, st, RunSucceeded, StepSucceeded, StepSucceeded, StepSucceeded)
		if g := st.Steps[1].Approvals; len(g) != 2 || g[0].Actor != "bob" || g[1].Actor != "carol" {
			t.Errorf("approvals: got %+v", g)
		}
		var approvals int
		for _, ev := range h.journal.audit(t, "r") {
			if ev.Type == "playbook.step.approved" {
				approvals++
				if !strings.Contains(string(ev.Entry), `"roles":[`) {
					t.Errorf("approval audit entry without roles: %s", ev.Entry)
				}
			}
		}
		if approvals != 2 {
			t.Errorf("%d approval audit events, want 2", approvals)
		}
	})
}

func TestDrillPolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, map[string]Action{"ok": &fn{}}, DrillApproval{})
		st, err := h.eng.Run(t.Context(), h.spec(t, gated), RunOptions{RunID: "r", Actor: "drill"})
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunSucceeded, StepSucceeded, StepSucceeded, StepSucceeded)
		g := st.Steps[1].Approvals
		if len(g) != 1 || !g[0].Auto || g[0].Note != DrillNote {
			t.Errorf("approvals: got %+v, want one drill grant", g)
		}
		var buf bytes.Buffer
		if err := WriteStatus(&buf, st); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), DrillNote) {
			t.Errorf("status does not say %q:\n%s", DrillNote, buf.String())
		}
	})
}

func TestAbort(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"running", "name: p\nsteps:\n  - {id: a, action: block}\n  - {id: b, action: block}\n"},
		{"awaiting approval", "name: p\nsteps:\n  - {id: a, action: block, approval: {required: 1, roles: [ic]}}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				block := &fn{run: func(ctx context.Context, c Call) (Outputs, error) {
					<-ctx.Done()
					return nil, context.Cause(ctx)
				}}
				h := newHarness(t, map[string]Action{"block": block}, nil)
				done := h.start(t.Context(), h.spec(t, tc.yaml), "r")
				synctest.Wait()
				if err := h.eng.Abort(t.Context(), "r", "bob", "wrong playbook"); err != nil {
					t.Fatal(err)
				}
				st := <-done
				wantStates(t, st, RunAborted, StepAborted)
				if !strings.Contains(st.Steps[0].Note, "aborted by bob: wrong playbook") {
					t.Errorf("note: got %q", st.Steps[0].Note)
				}
				if err := h.eng.Abort(t.Context(), "r", "bob", ""); !errors.Is(err, ErrFinished) {
					t.Errorf("second abort: got %v, want ErrFinished", err)
				}
				if _, err := h.eng.Resume(t.Context(), "r", "bob"); err != nil {
					t.Errorf("resume of an aborted run: %v", err)
				}
				if block.n() > 1 {
					t.Errorf("action ran %d times", block.n())
				}
			})
		})
	}
}

func TestPauseOnFailureThenResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broken := true
		fix := &fn{run: func(context.Context, Call) (Outputs, error) {
			if broken {
				return nil, errors.New("schema range excludes current schema")
			}
			return Outputs{"deployed": "v1"}, nil
		}}
		after := &fn{}
		h := newHarness(t, map[string]Action{"fix": fix, "after": after}, nil)
		s := h.spec(t, "name: p\nsteps:\n  - {id: a, action: fix, on_failure: pause}\n  - {id: b, action: after, with: {r: '${steps.a.outputs.deployed}'}}\n")
		st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunPaused, StepFailed, StepPending)
		broken = false
		st, err = h.eng.Resume(t.Context(), "r", "bob")
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunSucceeded, StepSucceeded, StepSucceeded)
		if st.Steps[0].Attempt != 2 || after.calls[0].With["r"] != "v1" {
			t.Errorf("attempt %d, b got %v; want 2 and v1", st.Steps[0].Attempt, after.calls[0].With)
		}
		types := map[string]int{}
		for _, ev := range h.journal.audit(t, "r") {
			types[ev.Type]++
		}
		if types["playbook.run.paused"] != 1 || types["playbook.run.resumed"] != 1 || types["playbook.step.failed"] != 1 {
			t.Errorf("audit event types: %v", types)
		}
	})
}

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		policy  string
		run     RunState
		b       StepState
		resumed RunState
	}{
		{"continue", RunSucceeded, StepSucceeded, RunSucceeded},
		{"pause", RunPaused, StepPending, RunPaused},
		{"abort", RunFailed, StepPending, RunFailed},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, map[string]Action{"kube": Unavailable("kube fleet: built without client-go"), "ok": &fn{}}, nil)
				s := h.spec(t, fmt.Sprintf("name: p\nsteps:\n  - {id: a, action: kube, on_unavailable: %s}\n  - {id: b, action: ok}\n", tc.policy))
				st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
				if err != nil {
					t.Fatal(err)
				}
				wantStates(t, st, tc.run, StepUnavailable, tc.b)
				if !strings.Contains(st.Steps[0].Error, "not available in this build") {
					t.Errorf("error: %q", st.Steps[0].Error)
				}
				var buf bytes.Buffer
				WriteStatus(&buf, st)
				if !strings.Contains(buf.String(), "unavailable") {
					t.Errorf("status does not show unavailable:\n%s", buf.String())
				}
				if tc.policy == "pause" {
					// Resuming tries again (still unavailable), skipping goes on.
					st, _ = h.eng.Resume(t.Context(), "r", "bob")
					wantStates(t, st, tc.resumed, StepUnavailable)
					if err := h.eng.Skip(t.Context(), "r", "a", "bob", "no kube here"); err != nil {
						t.Fatal(err)
					}
					st, _ = h.eng.Resume(t.Context(), "r", "bob")
					wantStates(t, st, RunSucceeded, StepSkipped, StepSucceeded)
				}
			})
		})
	}
}

func TestWhen(t *testing.T) {
	for _, tc := range []struct {
		inFlight float64
		want     StepState
	}{{0, StepSkipped}, {3, StepSucceeded}} {
		t.Run(fmt.Sprint(tc.inFlight), func(t *testing.T) {
			snap := &fn{run: func(context.Context, Call) (Outputs, error) { return Outputs{"in_flight": tc.inFlight}, nil }}
			replay := &fn{}
			h := newHarness(t, map[string]Action{"snap": snap, "replay": replay}, nil)
			s := h.spec(t, "name: p\nsteps:\n  - {id: snapshot, action: snap}\n  - {id: replay, action: replay, when: '${steps.snapshot.outputs.in_flight} > 0'}\n")
			st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
			if err != nil {
				t.Fatal(err)
			}
			wantStates(t, st, RunSucceeded, StepSucceeded, tc.want)
			if ran := replay.n() == 1; ran != (tc.want == StepSucceeded) {
				t.Errorf("replay ran: %v, want %v", ran, tc.want == StepSucceeded)
			}
		})
	}
}

func TestPlanTouchesNothing(t *testing.T) {
	a := &fn{}
	h := newHarness(t, map[string]Action{"a": a, "kube": Unavailable("no kube")}, nil)
	s := h.spec(t, "name: p\nparams: {rel: {required: true}}\nsteps:\n  - {id: one, action: a, with: {release: '${params.rel}'}}\n  - {id: two, action: a, with: {m: '${steps.one.outputs.manifest}'}}\n  - {id: three, action: kube}\n")
	if _, err := h.eng.Plan(t.Context(), s, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("plan without the required param: got %v, want ErrInvalid", err)
	}
	rep, err := h.eng.Plan(t.Context(), s, map[string]string{"rel": "v7"})
	if err != nil {
		t.Fatal(err)
	}
	if a.n() != 0 {
		t.Errorf("plan ran an action %d times", a.n())
	}
	if runs, _ := h.journal.Runs(t.Context()); len(runs) != 0 {
		t.Errorf("plan journaled runs %v", runs)
	}
	if got := rep.Steps[0].With["release"]; got != "v7" {
		t.Errorf("one.with.release: got %v", got)
	}
	if got := rep.Steps[1].With["m"]; got != "<steps.one.outputs.manifest>" {
		t.Errorf("two.with.m: got %v", got)
	}
	if !rep.Steps[2].Unavailable || len(rep.Steps[0].Plan.Changes) != 1 {
		t.Errorf("plan: %+v", rep)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Error(err)
	}
}

func TestJournalAndEvents(t *testing.T) {
	h := newHarness(t, map[string]Action{"ok": &fn{run: func(context.Context, Call) (Outputs, error) {
		return Outputs{"manifest": "sha256:abc", "n": 2}, nil
	}}}, nil)
	s := h.spec(t, "name: p\nsteps:\n  - {id: a, action: ok, with: {x: 1}}\n  - {id: b, action: ok, with: {n: '${steps.a.outputs.n}'}}\n")
	st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	wantStates(t, st, RunSucceeded, StepSucceeded, StepSucceeded)
	recs, audit := h.journal.records(t, "r"), h.journal.audit(t, "r")
	if len(recs) != len(audit) || len(recs) != len(h.events) || len(recs) != 6 {
		t.Fatalf("%d records, %d audit events, %d live events; want 6 of each", len(recs), len(audit), len(h.events))
	}
	wantTypes := []string{"playbook.run.started", "playbook.step.running", "playbook.step.succeeded",
		"playbook.step.running", "playbook.step.succeeded", "playbook.run.succeeded"}
	for i, ev := range audit {
		if ev.Type != wantTypes[i] || ev.Actor != "alice" || ev.Release != "v1" || ev.Time.IsZero() {
			t.Errorf("audit %d: %+v", i, ev)
		}
	}
	var entry struct {
		Details map[string]any `json:"details"`
	}
	if err := json.Unmarshal(audit[2].Entry, &entry); err != nil {
		t.Fatal(err)
	}
	if d := entry.Details["outputs_digest"]; d != st.Steps[0].OutputsDigest || !strings.HasPrefix(fmt.Sprint(d), "sha256:") {
		t.Errorf("outputs digest in audit %v, status %v", d, st.Steps[0].OutputsDigest)
	}
	if err := json.Unmarshal(audit[3].Entry, &entry); err != nil {
		t.Fatal(err)
	}
	if in, _ := entry.Details["inputs"].(map[string]any); in["n"] != 2.0 {
		t.Errorf("inputs in audit: %v", entry.Details["inputs"])
	}
	var buf bytes.Buffer
	p := Progress(&buf)
	for _, ev := range h.events {
		p(ev)
	}
	if !strings.Contains(buf.String(), "[ 2/2] b              succeeded") || !strings.Contains(buf.String(), "run r succeeded") {
		t.Errorf("progress:\n%s", buf.String())
	}
	runs, err := h.eng.Runs(t.Context())
	if err != nil || len(runs) != 1 || runs[0].RunID != "r" {
		t.Errorf("Runs: %v, %v", runs, err)
	}
	if _, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"}); err == nil {
		t.Error("second run with the same ID succeeded")
	}
}

// TestDependentOfUnavailableIsUnavailable: a step whose inputs come from a
// step that did not run (unavailable) is recorded unavailable, naming that
// step, not failed; one that references an output its producer simply did
// not report still fails.
func TestDependentOfUnavailableIsUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		notify := &fn{}
		h := newHarness(t, map[string]Action{"recon": Unavailable("reconciliation: not built"), "notify": notify, "ok": &fn{}}, nil)
		s := h.spec(t, "name: p\nsteps:\n"+
			"  - {id: reconcile, action: recon, on_unavailable: continue}\n"+
			"  - {id: notify, action: notify, on_unavailable: continue, with: {report: '${steps.reconcile.outputs.report}'}}\n"+
			"  - {id: after, action: ok}\n")
		st, err := h.eng.Run(t.Context(), s, RunOptions{RunID: "r", Actor: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		wantStates(t, st, RunSucceeded, StepUnavailable, StepUnavailable, StepSucceeded)
		if !strings.Contains(st.Steps[1].Error, `"reconcile"`) || !strings.Contains(st.Steps[1].Error, "not available in this build") {
			t.Errorf("notify error = %q; want it to name the missing step", st.Steps[1].Error)
		}
		if notify.n() != 0 {
			t.Errorf("notify ran %d times without its inputs", notify.n())
		}

		// A producer that ran but did not report the output is a real failure.
		h2 := newHarness(t, map[string]Action{"ok": &fn{}}, nil)
		s2 := h2.spec(t, "name: p\nsteps:\n  - {id: a, action: ok}\n  - {id: b, action: ok, with: {x: '${steps.a.outputs.missing}'}}\n")
		st, _ = h2.eng.Run(t.Context(), s2, RunOptions{RunID: "r2", Actor: "alice"})
		if st.Steps[1].State != StepFailed {
			t.Errorf("b = %s; want failed when a ran but did not report the output", st.Steps[1].State)
		}
	})
}
