package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/store"
)

func testJournal(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.Journal(ctx, "run-b")
	wantErr(t, "Journal before any", err, store.ErrNotFound)
	if runs, err := s.Runs(ctx); err != nil || len(runs) != 0 {
		t.Fatalf("Runs = %v, %v; want none", runs, err)
	}
	// run-b starts before run-a: Runs is start order, not name order.
	appendRec := func(run string, seq int64, i int) error {
		return s.AppendJournal(ctx, run, seq, []byte(fmt.Sprintf(`{"seq":%d,"run":%q}`, seq, run)), event("playbook.step.running", "", run, i))
	}
	must(t, "AppendJournal b0", appendRec("run-b", 0, 1))
	must(t, "AppendJournal a0", appendRec("run-a", 0, 2))
	must(t, "AppendJournal b1", appendRec("run-b", 1, 3))
	must(t, "AppendJournal a1", appendRec("run-a", 1, 4))
	wantErr(t, "AppendJournal taken seq", appendRec("run-b", 1, 5), store.ErrExists)
	wantErr(t, "AppendJournal seq 0 again", appendRec("run-a", 0, 6), store.ErrExists)
	wantErr(t, "AppendJournal gap", appendRec("run-a", 3, 7), store.ErrJournalGap)
	if n := auditSize(t, s); n != 4 {
		t.Errorf("AuditSize = %d, want 4: refused records write no event", n)
	}
	runs, err := s.Runs(ctx)
	must(t, "Runs", err)
	if !reflect.DeepEqual(runs, []string{"run-b", "run-a"}) {
		t.Errorf("Runs = %v, want [run-b run-a]", runs)
	}
	recs, err := s.Journal(ctx, "run-a")
	must(t, "Journal", err)
	if len(recs) != 2 || string(recs[0]) != `{"seq":0,"run":"run-a"}` || string(recs[1]) != `{"seq":1,"run":"run-a"}` {
		t.Errorf("Journal(run-a) = %q, want its two records in order", recs)
	}

	// Two writers race for the same next seq: exactly one wins.
	var wg sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		wg.Go(func() { results[i] = appendRec("run-a", 2, 10+i) })
	}
	wg.Wait()
	won := 0
	for _, err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrExists):
			t.Errorf("racing AppendJournal: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d racing appenders of the same seq succeeded, want 1", won)
	}
}

// countAction counts runs per step; fail, while set, makes it fail.
type countAction struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]bool
}

func (a *countAction) Plan(_ context.Context, c playbook.Call) (playbook.Plan, error) {
	return playbook.Plan{Changes: []playbook.Change{{Target: "storetest:" + c.StepID}}}, nil
}

func (a *countAction) Run(_ context.Context, c playbook.Call) (playbook.Outputs, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls[c.StepID]++
	if a.fail[c.StepID] {
		return nil, fmt.Errorf("step %s: injected failure", c.StepID)
	}
	return playbook.Outputs{"step": c.StepID, "with": fmt.Sprint(c.With["from"])}, nil
}

const engineSpec = `name: storetest
steps:
  - {id: snapshot, action: count}
  - {id: rollback, action: count, on_failure: pause}
  - {id: verify, action: count, with: {from: '${steps.rollback.outputs.step}'}}
`

// testPlaybookEngine runs package playbook's engine on the store: a
// three-step run pauses on a failure, and a second engine (another
// process) resumes it from the store's journal without repeating the
// completed step.
func testPlaybookEngine(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	act := &countAction{calls: map[string]int{}, fail: map[string]bool{"rollback": true}}
	reg := playbook.NewRegistry()
	must(t, "Register", reg.Register("count", act))
	spec, err := playbook.Parse([]byte(engineSpec), reg)
	must(t, "Parse", err)
	engine := func(instance string) *playbook.Engine {
		e, err := playbook.New(playbook.Config{Store: s, Actions: reg, Release: "v1.2.3", Instance: instance,
			Logger: slog.New(slog.DiscardHandler)})
		must(t, "playbook.New", err)
		return e
	}
	st, err := engine("ctl-1").Run(ctx, spec, playbook.RunOptions{RunID: "run-storetest", Actor: "alice"})
	must(t, "Run", err)
	wantSteps(t, st, playbook.RunPaused, playbook.StepSucceeded, playbook.StepFailed, playbook.StepPending)

	act.mu.Lock()
	act.fail["rollback"] = false
	act.mu.Unlock()
	st, err = engine("ctl-2").Resume(ctx, "run-storetest", "bob")
	must(t, "Resume", err)
	wantSteps(t, st, playbook.RunSucceeded, playbook.StepSucceeded, playbook.StepSucceeded, playbook.StepSucceeded)
	if want := map[string]int{"snapshot": 1, "rollback": 2, "verify": 1}; !reflect.DeepEqual(act.calls, want) {
		t.Errorf("action calls = %v, want %v (a completed step never runs again)", act.calls, want)
	}

	runs, err := s.Runs(ctx)
	must(t, "Runs", err)
	if !reflect.DeepEqual(runs, []string{"run-storetest"}) {
		t.Errorf("Runs = %v, want [run-storetest]", runs)
	}
	recs, err := s.Journal(ctx, "run-storetest")
	must(t, "Journal", err)
	// Every record is one audit event, in the same order.
	evs, err := s.AuditEvents(ctx, 0, int64(len(recs))+1)
	must(t, "AuditEvents", err)
	if len(evs) != len(recs) {
		t.Fatalf("%d journal records but %d audit events", len(recs), len(evs))
	}
	for i, b := range recs {
		var r playbook.Record
		must(t, "decode record", json.Unmarshal(b, &r))
		if r.Seq != int64(i) || r.RunID != "run-storetest" {
			t.Errorf("record %d: seq %d run %s", i, r.Seq, r.RunID)
		}
		if !strings.HasPrefix(evs[i].Type, "playbook.") || evs[i].Release != "v1.2.3" {
			t.Errorf("audit event %d = %s by %s, want a playbook event of v1.2.3", i, evs[i].Type, evs[i].Release)
		}
	}
	// The finished run reads back the same through a third engine.
	again, err := engine("ctl-3").Status(ctx, "run-storetest")
	must(t, "Status", err)
	wantSteps(t, again, playbook.RunSucceeded, playbook.StepSucceeded, playbook.StepSucceeded, playbook.StepSucceeded)
}

func wantSteps(t *testing.T, st playbook.Status, run playbook.RunState, steps ...playbook.StepState) {
	t.Helper()
	if st.State != run {
		t.Fatalf("run state = %s (%s), want %s", st.State, st.Note, run)
	}
	for i, want := range steps {
		if got := st.Steps[i].State; got != want {
			t.Errorf("step %s = %s (%s), want %s", st.Steps[i].ID, got, st.Steps[i].Error, want)
		}
	}
}
