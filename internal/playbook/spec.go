package playbook

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every error that rejects a playbook at load.
var ErrInvalid = errors.New("playbook: invalid playbook")

// Failure policies (Step.OnFailure, Step.OnUnavailable).
const (
	PolicyAbort    = "abort"    // the run ends as failed
	PolicyPause    = "pause"    // the run pauses for a human (Resume, Skip or Abort)
	PolicyContinue = "continue" // only for on_unavailable: go on to the next step
)

// Spec is a parsed, validated playbook. Source is the YAML it came from; the
// engine journals it with the run so that a resumed run uses the same steps.
type Spec struct {
	Name        string           `yaml:"name"`
	Description string           `yaml:"description"`
	Params      map[string]Param `yaml:"params"`
	Steps       []Step           `yaml:"steps"`

	Source []byte `yaml:"-"`
}

// Param declares one playbook parameter. Values are strings.
type Param struct {
	Description string `yaml:"description"`
	Default     string `yaml:"default"`
	Required    bool   `yaml:"required"`
}

// Step is one step of a playbook.
type Step struct {
	ID          string         `yaml:"id"`
	Description string         `yaml:"description"`
	Action      string         `yaml:"action"`
	With        map[string]any `yaml:"with"`
	Timeout     Duration       `yaml:"timeout"` // 0: Config.DefaultTimeout
	Retries     Retries        `yaml:"retries"`
	Approval    *Approval      `yaml:"approval"`
	// OnFailure is what happens when the action fails after all retries:
	// PolicyAbort (default) or PolicyPause.
	OnFailure string `yaml:"on_failure"`
	// OnUnavailable is what happens when the action is not available in this
	// build: PolicyPause (default), PolicyContinue or PolicyAbort.
	OnUnavailable string `yaml:"on_unavailable"`
	When          string `yaml:"when"`

	line  int            // line of the step
	lines map[string]int // line of each of the step's keys
	when  *condition
}

// Retries is how often a failed action is tried again, and how long to wait
// between tries: Backoff, doubled each time, capped at MaxBackoff.
type Retries struct {
	Count      int      `yaml:"count"`
	Backoff    Duration `yaml:"backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
}

// delay is the wait before attempt n+1 after attempt n (n >= 1) failed.
func (r Retries) delay(n int) time.Duration {
	d := time.Duration(r.Backoff)
	for i := 1; i < n && d > 0; i++ {
		d *= 2
		if r.MaxBackoff > 0 && d > time.Duration(r.MaxBackoff) {
			break
		}
	}
	if r.MaxBackoff > 0 && d > time.Duration(r.MaxBackoff) {
		d = time.Duration(r.MaxBackoff)
	}
	return d
}

// Approval is a step's gate: Required distinct approvers, each holding one
// of Roles, must approve before the action runs.
type Approval struct {
	Required int      `yaml:"required"`
	Roles    []string `yaml:"roles"`
}

// Duration is a time.Duration written in YAML as a Go duration string ("90s", "5m").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string such as \"30s\": %w", n.Line, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: bad duration %q (want e.g. \"30s\", \"5m\")", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Problem is one reason a playbook was rejected.
type Problem struct {
	Line int    // 1-based line in the YAML, 0 if unknown
	Path string // e.g. "steps[3].with.manifest"
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Path, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Msg)
}

// ValidationError lists everything wrong with a playbook. It wraps ErrInvalid.
type ValidationError struct {
	Name     string
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "playbook %q is invalid:", e.Name)
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

// ActionSet answers whether an action name is registered. *Registry implements it.
type ActionSet interface {
	Has(name string) bool
}

var idPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Parse decodes and validates a playbook. Unknown fields, unknown actions,
// duplicate step IDs, references to unknown or later steps, bad durations
// and bad policies are all reported, with line numbers where known.
func Parse(src []byte, actions ActionSet) (*Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	lines := stepLines(&root)
	for i := range s.Steps {
		if i < len(lines) {
			s.Steps[i].line, s.Steps[i].lines = lines[i].line, lines[i].keys
		}
	}
	s.Source = append([]byte(nil), src...)
	if probs := s.validate(actions); len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool {
			if probs[i].Line != probs[j].Line {
				return probs[i].Line < probs[j].Line
			}
			return probs[i].Path < probs[j].Path
		})
		return nil, &ValidationError{Name: s.Name, Problems: probs}
	}
	return &s, nil
}

type nodeLines struct {
	line int
	keys map[string]int
}

// lineOf is the line of the step's key in field (".with.x" -> "with").
func (st *Step) lineOf(field string) int {
	key, _, _ := strings.Cut(strings.TrimPrefix(field, "."), ".")
	if l, ok := st.lines[key]; ok {
		return l
	}
	return st.line
}

// stepLines returns the lines of each item of the top-level "steps" sequence.
func stepLines(root *yaml.Node) []nodeLines {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "steps" {
			var out []nodeLines
			for _, it := range m.Content[i+1].Content {
				nl := nodeLines{line: it.Line, keys: map[string]int{}}
				for k := 0; k+1 < len(it.Content); k += 2 {
					nl.keys[it.Content[k].Value] = it.Content[k].Line
				}
				out = append(out, nl)
			}
			return out
		}
	}
	return nil
}

func (s *Spec) validate(actions ActionSet) []Problem {
	var probs []Problem
	add := func(line int, path, format string, a ...any) {
		probs = append(probs, Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	if s.Name == "" {
		add(0, "name", "missing")
	}
	if len(s.Steps) == 0 {
		add(0, "steps", "a playbook needs at least one step")
	}
	for name := range s.Params {
		if !idPattern.MatchString(name) {
			add(0, "params."+name, "parameter names are lower case letters, digits, '_' and '-'")
		}
	}
	seen := map[string]int{} // step id -> index
	for i := range s.Steps {
		st := &s.Steps[i]
		path := fmt.Sprintf("steps[%d]", i)
		if st.ID != "" {
			path = fmt.Sprintf("steps[%d] (%s)", i, st.ID)
		}
		switch {
		case st.ID == "":
			add(st.lineOf(".id"), path+".id", "missing")
		case !idPattern.MatchString(st.ID):
			add(st.lineOf(".id"), path+".id", "%q: step IDs are lower case letters, digits, '_' and '-'", st.ID)
		default:
			if j, dup := seen[st.ID]; dup {
				add(st.lineOf(".id"), path+".id", "duplicate step id %q (also steps[%d])", st.ID, j)
			}
		}
		switch {
		case st.Action == "":
			add(st.lineOf(".action"), path+".action", "missing")
		case actions != nil && !actions.Has(st.Action):
			add(st.lineOf(".action"), path+".action", "unknown action %q", st.Action)
		}
		switch st.OnFailure {
		case "":
			st.OnFailure = PolicyAbort
		case PolicyAbort, PolicyPause:
		default:
			add(st.lineOf(".on_failure"), path+".on_failure", "%q: want abort or pause", st.OnFailure)
		}
		switch st.OnUnavailable {
		case "":
			st.OnUnavailable = PolicyPause
		case PolicyAbort, PolicyPause, PolicyContinue:
		default:
			add(st.lineOf(".on_unavailable"), path+".on_unavailable", "%q: want pause, continue or abort", st.OnUnavailable)
		}
		if st.Retries.Count < 0 {
			add(st.lineOf(".retries.count"), path+".retries.count", "must not be negative")
		}
		if st.Approval != nil {
			if st.Approval.Required < 1 {
				add(st.lineOf(".approval.required"), path+".approval.required", "must be at least 1")
			}
			if len(st.Approval.Roles) == 0 {
				add(st.lineOf(".approval.roles"), path+".approval.roles", "at least one role must be allowed to approve")
			}
		}
		check := func(field string, r ref) {
			switch r.kind {
			case refParam:
				if _, ok := s.Params[r.name]; !ok {
					add(st.lineOf(field), path+field, "unknown parameter %q", r.name)
				}
			case refStep:
				_, earlier := seen[r.name]
				switch {
				case r.name == st.ID:
					add(st.lineOf(field), path+field, "step %q refers to its own outputs", r.name)
				case earlier:
				case s.stepIndex(r.name) > i:
					add(st.lineOf(field), path+field, "refers to step %q, which runs later", r.name)
				default:
					add(st.lineOf(field), path+field, "refers to unknown step %q", r.name)
				}
			}
		}
		walkStrings(st.With, ".with", func(field, v string) {
			refs, err := parseTemplate(v)
			if err != nil {
				add(st.lineOf(field), path+field, "%v", err)
				return
			}
			for _, r := range refs {
				check(field, r)
			}
		})
		if st.When != "" {
			c, err := parseCondition(st.When)
			if err != nil {
				add(st.lineOf(".when"), path+".when", "%v", err)
			} else {
				st.when = c
				check(".when", c.ref)
			}
		}
		if st.ID != "" {
			if _, dup := seen[st.ID]; !dup {
				seen[st.ID] = i
			}
		}
	}
	return probs
}

func (s *Spec) stepIndex(id string) int {
	for i := range s.Steps {
		if s.Steps[i].ID == id {
			return i
		}
	}
	return -1
}

// walkStrings calls f for every string in v (maps, lists, scalars), with its path.
func walkStrings(v any, path string, f func(path, s string)) {
	switch x := v.(type) {
	case string:
		f(path, x)
	case map[string]any:
		for k, e := range x {
			walkStrings(e, path+"."+k, f)
		}
	case []any:
		for i, e := range x {
			walkStrings(e, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}

// resolveParams merges given values over the declared defaults and checks
// that every required parameter is set and no undeclared one is given.
func (s *Spec) resolveParams(given map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for name, p := range s.Params {
		if p.Default != "" {
			out[name] = p.Default
		}
	}
	var probs []Problem
	for name, v := range given {
		if _, ok := s.Params[name]; !ok {
			probs = append(probs, Problem{Path: "params." + name, Msg: "not declared by the playbook"})
			continue
		}
		out[name] = v
	}
	for name, p := range s.Params {
		if p.Required && out[name] == "" {
			probs = append(probs, Problem{Path: "params." + name, Msg: "required"})
		}
	}
	if len(probs) > 0 {
		return nil, &ValidationError{Name: s.Name, Problems: probs}
	}
	return out, nil
}
