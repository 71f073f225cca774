package playbook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// JournalStore persists run journals. The store package's backends implement it.
//
// AppendJournal durably commits record seq (0-based) of a run together with
// its audit event, in one transaction, before returning. If the run already
// has a record seq it writes nothing and returns an error wrapping
// store.ErrExists: that is how two writers of the same run (a driver and an
// approver in another process) detect each other; the engine then re-reads
// the journal and decides again. Journal returns a run's records in seq
// order (store.ErrNotFound if there are none); Runs lists run IDs in the
// order they were started.
type JournalStore interface {
	AppendJournal(ctx context.Context, runID string, seq int64, rec []byte, ev store.AuditEvent) error
	Journal(ctx context.Context, runID string) ([][]byte, error)
	Runs(ctx context.Context) ([]string, error)
}

// RunState is the state of a run.
type RunState string

// Run states.
const (
	RunRunning   RunState = "running"
	RunPaused    RunState = "paused" // waiting for a human: Resume, Skip or Abort
	RunSucceeded RunState = "succeeded"
	RunFailed    RunState = "failed"
	RunAborted   RunState = "aborted"
)

// Terminal reports whether nothing more will happen in the run.
func (s RunState) Terminal() bool { return s == RunSucceeded || s == RunFailed || s == RunAborted }

// StepState is the state of one step in a run.
type StepState string

// Step states.
const (
	StepPending          StepState = "pending"
	StepAwaitingApproval StepState = "awaiting-approval"
	StepRunning          StepState = "running"
	StepRetrying         StepState = "retrying" // an attempt failed; the next waits for its backoff
	StepSucceeded        StepState = "succeeded"
	StepFailed           StepState = "failed"
	StepSkipped          StepState = "skipped"
	StepUnavailable      StepState = "unavailable"
	StepAborted          StepState = "aborted"
)

// Record kinds.
const (
	kindStarted  = "run.started"
	kindRunState = "run.state"
	kindStep     = "step"
	kindApproval = "approval"
)

// Record is one journal entry, stored as JSON.
type Record struct {
	Seq    int64     `json:"seq"`
	RunID  string    `json:"run"`
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Actor  string    `json:"actor"`
	Driver string    `json:"driver,omitempty"` // the engine instance that claimed the run

	// run.started
	Source []byte            `json:"source,omitempty"` // the playbook YAML
	Params map[string]string `json:"params,omitempty"`

	RunState RunState `json:"run_state,omitempty"`

	Step          string         `json:"step,omitempty"`
	State         StepState      `json:"state,omitempty"`
	Attempt       int            `json:"attempt,omitempty"`
	Inputs        map[string]any `json:"inputs,omitempty"`
	Outputs       map[string]any `json:"outputs,omitempty"`
	OutputsDigest string         `json:"outputs_digest,omitempty"`
	NextAttemptAt time.Time      `json:"next_attempt_at,omitzero"`
	Roles         []string       `json:"roles,omitempty"` // approval: roles the approver holds
	Auto          bool           `json:"auto,omitempty"`  // approval: granted by the approval policy
	Error         string         `json:"error,omitempty"`
	Note          string         `json:"note,omitempty"`
}

// auditType is the audit event type of the record.
func (r *Record) auditType() string {
	switch r.Kind {
	case kindStarted:
		return "playbook.run.started"
	case kindRunState:
		switch r.Note {
		case noteResumed:
			return "playbook.run.resumed"
		case noteRecovered:
			return "playbook.run.recovered"
		}
		return "playbook.run." + string(r.RunState)
	case kindApproval:
		return "playbook.step.approved"
	}
	return "playbook.step." + string(r.State)
}

// digest is "sha256:" and the hex SHA-256 of v's JSON (map keys sorted).
func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// roundTrip returns v as it will read back from the journal.
func roundTrip(v map[string]any) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Grant is one recorded approval.
type Grant struct {
	Actor string    `json:"actor"`
	Roles []string  `json:"roles,omitempty"`
	Time  time.Time `json:"time"`
	Note  string    `json:"note,omitempty"`
	Auto  bool      `json:"auto,omitempty"` // granted by the approval policy, not a person
}

// stepRun is the folded state of one step.
type stepRun struct {
	State         StepState
	Attempt       int
	Inputs        map[string]any
	Outputs       map[string]any
	OutputsDigest string
	Approvals     []Grant
	StartedAt     time.Time
	FinishedAt    time.Time
	NextAttemptAt time.Time
	Error, Note   string
	// Rearmed is set when an operator resumed a paused run: a failed or
	// unavailable step is then tried again instead of pausing again.
	Rearmed bool
}

// granted reports whether the step's gate is satisfied.
func (s *stepRun) granted(a *Approval) bool {
	if a == nil {
		return true
	}
	who := map[string]bool{}
	for _, g := range s.Approvals {
		if g.Auto {
			return true
		}
		who[g.Actor] = true
	}
	return len(who) >= a.Required
}

// runFold is a run rebuilt from its journal.
type runFold struct {
	ID        string
	Spec      *Spec
	Params    map[string]string
	Actor     string
	State     RunState
	StartedAt time.Time
	EndedAt   time.Time
	Driver    string
	Steps     []stepRun
	Note      string
	n         int64 // records applied; the next record's seq
}

// fold rebuilds a run from its raw journal. The spec is re-parsed from the
// journaled source; actions may be nil (no registry check) for status.
func fold(runID string, raw [][]byte, actions ActionSet) (*runFold, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("playbook: run %s: %w", runID, store.ErrNotFound)
	}
	f := &runFold{ID: runID}
	for i, b := range raw {
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("playbook: run %s: journal record %d: %w", runID, i, err)
		}
		if r.Seq != int64(i) {
			return nil, fmt.Errorf("playbook: run %s: journal record %d has seq %d", runID, i, r.Seq)
		}
		if err := f.apply(&r, actions); err != nil {
			return nil, fmt.Errorf("playbook: run %s: journal record %d: %w", runID, i, err)
		}
	}
	return f, nil
}

func (f *runFold) apply(r *Record, actions ActionSet) error {
	if f.Spec == nil && r.Kind != kindStarted {
		return fmt.Errorf("first record is %q, want %q", r.Kind, kindStarted)
	}
	switch r.Kind {
	case kindStarted:
		if f.Spec != nil {
			return fmt.Errorf("second %q record", kindStarted)
		}
		spec, err := Parse(r.Source, actions)
		if err != nil {
			return err
		}
		f.Spec, f.Params, f.Actor, f.StartedAt, f.Driver = spec, r.Params, r.Actor, r.Time, r.Driver
		f.State = RunRunning
		f.Steps = make([]stepRun, len(spec.Steps))
		for i := range f.Steps {
			f.Steps[i].State = StepPending
		}
	case kindRunState:
		f.State, f.Note = r.RunState, r.Note
		if r.Note == noteResumed {
			for i := range f.Steps {
				if st := f.Steps[i].State; st == StepFailed || st == StepUnavailable {
					f.Steps[i].Rearmed = true
				}
			}
		}
		if r.Driver != "" {
			f.Driver = r.Driver
		}
		if r.RunState.Terminal() {
			f.EndedAt = r.Time
		}
	case kindStep, kindApproval:
		i := f.Spec.stepIndex(r.Step)
		if i < 0 {
			return fmt.Errorf("unknown step %q", r.Step)
		}
		s := &f.Steps[i]
		if r.Kind == kindApproval {
			s.Approvals = append(s.Approvals, Grant{Actor: r.Actor, Roles: r.Roles, Time: r.Time, Note: r.Note, Auto: r.Auto})
			break
		}
		s.State, s.Note, s.Rearmed = r.State, r.Note, false
		switch r.State {
		case StepRunning:
			if s.StartedAt.IsZero() {
				s.StartedAt = r.Time
			}
			s.Attempt, s.Inputs, s.NextAttemptAt = r.Attempt, r.Inputs, time.Time{}
		case StepRetrying:
			s.Error, s.NextAttemptAt = r.Error, r.NextAttemptAt
		case StepSucceeded, StepFailed, StepSkipped, StepUnavailable, StepAborted:
			s.FinishedAt, s.Error = r.Time, r.Error
			s.Outputs, s.OutputsDigest = r.Outputs, r.OutputsDigest
		}
	default:
		return fmt.Errorf("unknown record kind %q", r.Kind)
	}
	f.n++
	return nil
}

// done reports whether step i needs nothing more for the run to go on.
func (f *runFold) done(i int) bool {
	switch f.Steps[i].State {
	case StepSucceeded, StepSkipped:
		return true
	case StepUnavailable:
		return f.Spec.Steps[i].OnUnavailable == PolicyContinue
	}
	return false
}

// scope returns the reference scope of the run.
func (f *runFold) scope() *scope {
	sc := &scope{runID: f.ID, actor: f.Actor, params: f.Params, outputs: map[string]map[string]any{}}
	for i, s := range f.Steps {
		if s.Outputs != nil {
			sc.outputs[f.Spec.Steps[i].ID] = s.Outputs
		}
	}
	return sc
}
