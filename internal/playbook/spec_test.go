package playbook

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// noop is an action for specs that are only parsed or planned, never run.
type noop struct{}

func (noop) Plan(context.Context, Call) (Plan, error) {
	return Plan{Changes: []Change{{Target: "nothing"}}}, nil
}
func (noop) Run(context.Context, Call) (Outputs, error) { return nil, errors.New("noop must not run") }

func registryOf(t testing.TB, names ...string) *Registry {
	t.Helper()
	r := NewRegistry()
	for _, n := range names {
		if err := r.Register(n, noop{}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestParseRejects(t *testing.T) {
	reg := registryOf(t, "a.run", "b.run")
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error, in order of lines
	}{
		{"unknown field", `
name: p
steps:
  - id: one
    action: a.run
    retry: 3
`, []string{"line 5: field retry not found"}},
		{"unknown action", `
name: p
steps:
  - id: one
    action: a.run
  - id: two
    action: c.run
`, []string{`line 6: steps[1] (two).action: unknown action "c.run"`}},
		{"duplicate id", `
name: p
steps:
  - id: one
    action: a.run
  - id: one
    action: b.run
`, []string{`line 5: steps[1] (one).id: duplicate step id "one" (also steps[0])`}},
		{"later step", `
name: p
steps:
  - id: one
    action: a.run
    with: {x: "${steps.two.outputs.y}"}
  - id: two
    action: b.run
`, []string{`line 5: steps[0] (one).with.x: refers to step "two", which runs later`}},
		{"unknown step and param", `
name: p
steps:
  - id: one
    action: a.run
    with: {x: "${steps.nope.outputs.y}", z: "id ${params.missing}"}
`, []string{`with.x: refers to unknown step "nope"`, `with.z: unknown parameter "missing"`}},
		{"bad duration", `
name: p
steps:
  - id: one
    action: a.run
    timeout: 5 minutes
`, []string{`line 5: bad duration "5 minutes"`}},
		{"bad policy and approval", `
name: p
steps:
  - id: one
    action: a.run
    on_failure: retry
    approval: {required: 0}
`, []string{`approval.required: must be at least 1`, `approval.roles: at least one role`, `on_failure: "retry": want abort or pause`}},
		{"bad condition", `
name: p
steps:
  - id: one
    action: a.run
  - id: two
    action: a.run
    when: ${steps.one.outputs.n} >= many
`, []string{`when: condition "${steps.one.outputs.n} >= many": >= needs a number`}},
		{"self reference and bad template", `
name: p
steps:
  - id: one
    action: a.run
    with: {x: "${steps.one.outputs.y}", y: "${nonsense}", z: "${params.p"}
`, []string{`with.x: step "one" refers to its own outputs`, `with.y: bad reference ${nonsense}`, `with.z: unterminated reference`}},
		{"no steps", "name: p\n", []string{"steps: a playbook needs at least one step"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.TrimPrefix(tt.yaml, "\n")), reg)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: got %v, want an error wrapping ErrInvalid", err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	s, err := Parse([]byte(`
name: p
params:
  who: {default: alice}
steps:
  - id: one
    action: a.run
    timeout: 90s
    retries: {count: 2, backoff: 1s, max_backoff: 3s}
`), registryOf(t, "a.run"))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Steps[0]
	if st.OnFailure != PolicyAbort || st.OnUnavailable != PolicyPause {
		t.Errorf("policies: got %q/%q, want abort/pause", st.OnFailure, st.OnUnavailable)
	}
	if got := []Duration{st.Timeout, Duration(st.Retries.delay(1)), Duration(st.Retries.delay(2)), Duration(st.Retries.delay(3))}; got[0] != Duration(90e9) || got[1] != 1e9 || got[2] != 2e9 || got[3] != 3e9 {
		t.Errorf("timeout and backoffs: got %v, want 90s, 1s, 2s, 3s", got)
	}
	if _, err := s.resolveParams(map[string]string{"other": "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("undeclared param: got %v, want ErrInvalid", err)
	}
}

// TestDefaultPlaybook checks the embedded rollback playbook against a
// registry holding exactly the 12 action names it should use.
func TestDefaultPlaybook(t *testing.T) {
	s, err := Default(registryOf(t, RollbackActions...))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{"classify", "block-ingress", "open-incident", "snapshot", "isolate", "rollback",
		"verify", "canary", "replay", "reconcile", "notify", "close"}
	if len(s.Steps) != len(wantIDs) {
		t.Fatalf("got %d steps, want %d", len(s.Steps), len(wantIDs))
	}
	for i, st := range s.Steps {
		if st.ID != wantIDs[i] || st.Action != RollbackActions[i] {
			t.Errorf("step %d: got %s/%s, want %s/%s", i+1, st.ID, st.Action, wantIDs[i], RollbackActions[i])
		}
		if st.Timeout <= 0 {
			t.Errorf("step %s has no timeout", st.ID)
		}
	}
	for _, id := range []string{"rollback", "notify"} {
		a := s.Steps[s.stepIndex(id)].Approval
		if a == nil || a.Required < 1 || a.Roles[0] != "incident-commander" {
			t.Errorf("step %s: approval %+v, want incident-commander", id, a)
		}
	}
	if s.Steps[s.stepIndex("replay")].when == nil {
		t.Error("replay has no condition")
	}
	if _, err := Default(registryOf(t, RollbackActions[1:]...)); err == nil || !strings.Contains(err.Error(), `unknown action "incident.classify"`) {
		t.Errorf("without incident.classify: got %v, want an unknown action error", err)
	}
}

func TestConditions(t *testing.T) {
	sc := &scope{outputs: map[string]map[string]any{"s": {"n": 3.0, "zero": 0.0, "name": "x", "ok": true, "list": []any{}}}}
	tests := []struct {
		cond string
		want bool
	}{
		{"${steps.s.outputs.n} > 0", true},
		{"${steps.s.outputs.zero} > 0", false},
		{"${steps.s.outputs.n} <= 3", true},
		{"${steps.s.outputs.zero}", false},
		{"!${steps.s.outputs.zero}", true},
		{"${steps.s.outputs.list}", false},
		{"${steps.s.outputs.missing}", false},
		{"${steps.s.outputs.missing} != 1", true},
		{"${steps.s.outputs.name} == x", true},
		{`${steps.s.outputs.name} != "x"`, false},
		{"${steps.s.outputs.ok} == true", true},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			c, err := parseCondition(tt.cond)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.eval(sc)
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	sc := &scope{runID: "r1", params: map[string]string{"p": "v"},
		outputs: map[string]map[string]any{"s": {"list": []any{1.0, 2.0}, "m": map[string]any{"k": "deep"}}}}
	got, err := sc.expand(map[string]any{
		"typed":  "${steps.s.outputs.list}",
		"text":   "run ${run.id} p=${params.p} k=${steps.s.outputs.m.k} cost $5 $${literal}",
		"nested": []any{"${params.p}", 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := got.(map[string]any)
	if l, ok := m["typed"].([]any); !ok || len(l) != 2 {
		t.Errorf("typed: got %#v, want the list itself", m["typed"])
	}
	if want := "run r1 p=v k=deep cost $5 ${literal}"; m["text"] != want {
		t.Errorf("text: got %q, want %q", m["text"], want)
	}
	if n := m["nested"].([]any); n[0] != "v" || n[1] != 7 {
		t.Errorf("nested: got %#v", n)
	}
	if _, err := sc.expand("${steps.s.outputs.absent}"); !errors.Is(err, ErrReference) {
		t.Errorf("missing output: got %v, want ErrReference", err)
	}
}
