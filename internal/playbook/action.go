package playbook

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// ErrUnavailable is returned (wrapped) by an action that is not available in
// this build or configuration. The engine records the step as "unavailable",
// never as succeeded, and applies the step's on_unavailable policy.
var ErrUnavailable = errors.New("playbook: action not available in this build")

// Outputs are what a step's action reports; later steps reference them as
// ${steps.ID.outputs.KEY}. They must be JSON-encodable: the engine journals
// them and hands later steps their JSON round-trip (numbers are float64).
type Outputs map[string]any

// Call is one invocation of an action.
type Call struct {
	RunID  string
	StepID string
	// Token is the idempotency token of this step in this run. It is the same
	// for every attempt and after a crash and Resume: an action that finds
	// its effect already made under Token must report it, not repeat it.
	Token   string
	Attempt int // 1-based; 0 for Plan
	Actor   string
	// With holds the step's parameters with every reference resolved (in a
	// plan, outputs of earlier steps appear as "<steps.ID.outputs.KEY>").
	With   map[string]any
	Params map[string]string
}

// Change is one thing an action would change.
type Change struct {
	Target string `json:"target"` // e.g. "gateway:maintenance", "fleet:pool/canary", "Deployment countersign/countersign-node-canary"
	// Field is the changed field of Target, where the backend names one
	// (e.g. "spec.replicas" of a Deployment).
	Field  string `json:"field,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Plan is what an action would do, computed without changing anything.
type Plan struct {
	Changes []Change `json:"changes"`
	Notes   []string `json:"notes,omitempty"`
}

// Action is one built-in step type.
//
// Plan must not change anything. Run must honour ctx (the engine cancels it
// at the step timeout or on abort and waits for Run to return) and must be
// idempotent per Call.Token.
type Action interface {
	Plan(ctx context.Context, c Call) (Plan, error)
	Run(ctx context.Context, c Call) (Outputs, error)
}

// Registry maps action names to actions. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	actions map[string]Action
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{actions: map[string]Action{}} }

// Register adds an action. Registering a name twice is an error.
func (r *Registry) Register(name string, a Action) error {
	if !idPattern.MatchString(name) && !dottedName(name) {
		return fmt.Errorf("playbook: bad action name %q", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.actions[name]; dup {
		return fmt.Errorf("playbook: action %q registered twice", name)
	}
	r.actions[name] = a
	return nil
}

func dottedName(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range splitDots(s) {
		if !idPattern.MatchString(part) {
			return false
		}
	}
	return true
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// Has reports whether name is registered.
func (r *Registry) Has(name string) bool {
	_, ok := r.Lookup(name)
	return ok
}

// Lookup returns the action registered under name.
func (r *Registry) Lookup(name string) (Action, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.actions[name]
	return a, ok
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.actions))
	for n := range r.actions {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Unavailable returns an action that exists by name in this build but cannot
// run here (for example the kube fleet in a build without client-go): its
// Plan and Run fail with ErrUnavailable and the given reason.
func Unavailable(reason string) Action { return unavailable{reason} }

type unavailable struct{ reason string }

func (u unavailable) Plan(context.Context, Call) (Plan, error) {
	return Plan{}, fmt.Errorf("%s: %w", u.reason, ErrUnavailable)
}

func (u unavailable) Run(context.Context, Call) (Outputs, error) {
	return nil, fmt.Errorf("%s: %w", u.reason, ErrUnavailable)
}

// ErrParam is wrapped by the Call accessors when a parameter is missing or mistyped.
var ErrParam = errors.New("playbook: bad step parameter")

// String returns With[key] as a string.
func (c Call) String(key string) (string, error) {
	s, ok := c.With[key].(string)
	if !ok {
		return "", fmt.Errorf("%w: %s.with.%s: want a string, have %T", ErrParam, c.StepID, key, c.With[key])
	}
	return s, nil
}

// Int returns With[key] as an integer (a YAML/JSON number or a numeric string).
func (c Call) Int(key string) (int, error) {
	f, ok := toFloat(c.With[key])
	if !ok || f != float64(int(f)) {
		return 0, fmt.Errorf("%w: %s.with.%s: want an integer, have %v", ErrParam, c.StepID, key, c.With[key])
	}
	return int(f), nil
}

// Ints returns With[key] as a list of integers.
func (c Call) Ints(key string) ([]int, error) {
	l, ok := c.With[key].([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s.with.%s: want a list, have %T", ErrParam, c.StepID, key, c.With[key])
	}
	out := make([]int, len(l))
	for i, v := range l {
		f, ok := toFloat(v)
		if !ok || f != float64(int(f)) {
			return nil, fmt.Errorf("%w: %s.with.%s[%d]: want an integer, have %v", ErrParam, c.StepID, key, i, v)
		}
		out[i] = int(f)
	}
	return out, nil
}

// Bool returns With[key] as a boolean; a missing key is false.
func (c Call) Bool(key string) (bool, error) {
	switch v := c.With[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		if v == "true" || v == "false" {
			return v == "true", nil
		}
	}
	return false, fmt.Errorf("%w: %s.with.%s: want true or false, have %v", ErrParam, c.StepID, key, c.With[key])
}

// Duration returns With[key], a Go duration string, as a time.Duration.
func (c Call) Duration(key string) (time.Duration, error) {
	s, err := c.String(key)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %s.with.%s: %w", ErrParam, c.StepID, key, err)
	}
	return d, nil
}
