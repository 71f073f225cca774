package playbook

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is a run as `playbook status` shows it; it encodes to JSON as is.
type Status struct {
	RunID          string            `json:"run_id"`
	Playbook       string            `json:"playbook"`
	State          RunState          `json:"state"`
	Actor          string            `json:"actor"`
	Params         map[string]string `json:"params,omitempty"`
	StartedAt      time.Time         `json:"started_at"`
	EndedAt        time.Time         `json:"ended_at,omitzero"`
	ElapsedSeconds float64           `json:"elapsed_seconds"`
	Note           string            `json:"note,omitempty"`
	Steps          []StepStatus      `json:"steps"`
}

// StepStatus is one step of a Status.
type StepStatus struct {
	ID                string         `json:"id"`
	Action            string         `json:"action"`
	State             StepState      `json:"state"`
	Attempt           int            `json:"attempt,omitempty"`
	StartedAt         time.Time      `json:"started_at,omitzero"`
	FinishedAt        time.Time      `json:"finished_at,omitzero"`
	ElapsedSeconds    float64        `json:"elapsed_seconds,omitempty"`
	ApprovalsRequired int            `json:"approvals_required,omitempty"`
	ApprovalRoles     []string       `json:"approval_roles,omitempty"`
	Approvals         []Grant        `json:"approvals,omitempty"`
	NextAttemptAt     time.Time      `json:"next_attempt_at,omitzero"`
	Outputs           map[string]any `json:"outputs,omitempty"`
	OutputsDigest     string         `json:"outputs_digest,omitempty"`
	Error             string         `json:"error,omitempty"`
	Note              string         `json:"note,omitempty"`
}

// Step returns the status of step id, or nil.
func (s *Status) Step(id string) *StepStatus {
	for i := range s.Steps {
		if s.Steps[i].ID == id {
			return &s.Steps[i]
		}
	}
	return nil
}

func (e *Engine) status(f *runFold) Status {
	now := e.cfg.Clock.Now()
	st := Status{RunID: f.ID, Playbook: f.Spec.Name, State: f.State, Actor: f.Actor, Params: f.Params,
		StartedAt: f.StartedAt, EndedAt: f.EndedAt, Note: f.Note}
	st.ElapsedSeconds = elapsed(f.StartedAt, f.EndedAt, now)
	for i, s := range f.Steps {
		sp := &f.Spec.Steps[i]
		ss := StepStatus{ID: sp.ID, Action: sp.Action, State: s.State, Attempt: s.Attempt, StartedAt: s.StartedAt,
			FinishedAt: s.FinishedAt, Approvals: s.Approvals, NextAttemptAt: s.NextAttemptAt, Outputs: s.Outputs,
			OutputsDigest: s.OutputsDigest, Error: s.Error, Note: s.Note}
		if sp.Approval != nil {
			ss.ApprovalsRequired, ss.ApprovalRoles = sp.Approval.Required, sp.Approval.Roles
		}
		if !s.StartedAt.IsZero() {
			end := s.FinishedAt
			if end.IsZero() && f.State.Terminal() {
				end = f.EndedAt
			}
			ss.ElapsedSeconds = elapsed(s.StartedAt, end, now)
		}
		st.Steps = append(st.Steps, ss)
	}
	return st
}

func elapsed(start, end, now time.Time) float64 {
	if start.IsZero() {
		return 0
	}
	if end.IsZero() {
		end = now
	}
	return end.Sub(start).Seconds()
}

// Event is one journaled transition, as the live progress stream carries it.
type Event struct {
	RunID    string    `json:"run_id"`
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Playbook string    `json:"playbook"`
	Kind     string    `json:"kind"` // run.started | run.state | step | approval
	RunState RunState  `json:"run_state"`
	Step     string    `json:"step,omitempty"`
	Index    int       `json:"index,omitempty"` // 1-based step number
	Total    int       `json:"total"`
	State    StepState `json:"state,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	Actor    string    `json:"actor"`
	Error    string    `json:"error,omitempty"`
	Note     string    `json:"note,omitempty"`
	// StepElapsedSeconds is the step's time since it first ran, on step records.
	StepElapsedSeconds float64 `json:"step_elapsed_seconds,omitempty"`
}

func newEvent(f *runFold, r *Record) Event {
	ev := Event{RunID: f.ID, Seq: r.Seq, Time: r.Time, Playbook: f.Spec.Name, Kind: r.Kind, RunState: f.State,
		Step: r.Step, State: r.State, Attempt: r.Attempt, Actor: r.Actor, Error: r.Error, Note: r.Note,
		Total: len(f.Steps)}
	if i := f.Spec.stepIndex(r.Step); i >= 0 {
		ev.Index = i + 1
		if s := f.Steps[i]; !s.StartedAt.IsZero() {
			ev.StepElapsedSeconds = r.Time.Sub(s.StartedAt).Seconds()
		}
	}
	return ev
}

// Progress returns an Observer that prints one line per transition to w,
// for a terminal following a run.
func Progress(w io.Writer) func(Event) {
	return func(ev Event) {
		t := ev.Time.Local().Format("15:04:05")
		switch ev.Kind {
		case kindStarted:
			fmt.Fprintf(w, "%s  run %s of %s started by %s (%d steps)\n", t, ev.RunID, ev.Playbook, ev.Actor, ev.Total)
		case kindRunState:
			fmt.Fprintf(w, "%s  run %s %s%s\n", t, ev.RunID, ev.RunState, suffix(ev.Note))
		case kindApproval:
			fmt.Fprintf(w, "%s  [%2d/%d] %-14s approved by %s%s\n", t, ev.Index, ev.Total, ev.Step, ev.Actor, suffix(ev.Note))
		default:
			line := fmt.Sprintf("%s  [%2d/%d] %-14s %s", t, ev.Index, ev.Total, ev.Step, ev.State)
			if ev.Attempt > 1 {
				line += fmt.Sprintf(" (attempt %d)", ev.Attempt)
			}
			if ev.StepElapsedSeconds > 0 {
				line += " " + formatSeconds(ev.StepElapsedSeconds)
			}
			if ev.Error != "" {
				line += ": " + ev.Error
			} else if ev.Note != "" {
				line += suffix(ev.Note)
			}
			fmt.Fprintln(w, line)
		}
	}
}

func suffix(note string) string {
	if note == "" {
		return ""
	}
	return " — " + note
}

func formatSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// WriteStatus prints a run's step list with states and elapsed times.
func WriteStatus(w io.Writer, st Status) error {
	fmt.Fprintf(w, "run %s  playbook %s  %s  started by %s  elapsed %s\n", st.RunID, st.Playbook, st.State,
		st.Actor, formatSeconds(st.ElapsedSeconds))
	if st.Note != "" {
		fmt.Fprintf(w, "note: %s\n", st.Note)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTEP\tACTION\tSTATE\tELAPSED\tDETAIL")
	for i, s := range st.Steps {
		el := ""
		if !s.StartedAt.IsZero() {
			el = formatSeconds(s.ElapsedSeconds)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, s.ID, s.Action, s.State, el, detail(s))
	}
	return tw.Flush()
}

func detail(s StepStatus) string {
	var parts []string
	if s.State == StepAwaitingApproval {
		var who []string
		for _, g := range s.Approvals {
			who = append(who, g.Actor)
		}
		parts = append(parts, fmt.Sprintf("%d/%d approvals (%s)", len(who), s.ApprovalsRequired, strings.Join(s.ApprovalRoles, "|")))
	}
	for _, g := range s.Approvals {
		if g.Auto {
			parts = append(parts, g.Note)
		}
	}
	if s.Attempt > 1 {
		parts = append(parts, fmt.Sprintf("attempt %d", s.Attempt))
	}
	if !s.NextAttemptAt.IsZero() && s.State == StepRetrying {
		parts = append(parts, "next attempt "+s.NextAttemptAt.Local().Format("15:04:05"))
	}
	if s.Error != "" {
		parts = append(parts, s.Error)
	} else if s.Note != "" && s.State != StepAwaitingApproval {
		parts = append(parts, s.Note)
	}
	return strings.Join(parts, "; ")
}
