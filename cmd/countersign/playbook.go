package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/playbook"
)

func init() {
	register("playbook", "plan, run, follow and steer the rollback playbook: plan|run|status|resume|abort|approve", runPlaybook)
}

// Exit status of `playbook run|resume|status` when the run needs an
// operator (paused); failed and aborted runs exit 1.
const exitPaused = 3

// pollEvery is how often the CLI re-reads a run it follows.
const pollEvery = 250 * time.Millisecond

type playbookFlags struct {
	data, as, incident, run, to string
	params                      paramFlag
	asJSON                      bool
}

func runPlaybook(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usageError("usage: countersign playbook plan|run|status|resume|abort|approve [rollback] [flags]")
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(env, "playbook "+sub, "[rollback] [flags]")
	pf := playbookFlags{params: paramFlag{}}
	fs.StringVar(&pf.data, "data", "./world", "data directory of the running world")
	fs.StringVar(&pf.as, "as", "", "who acts (audit actor and approver name; default $USER)")
	fs.StringVar(&pf.incident, "incident", "", "incident the run is about (INC-N)")
	fs.StringVar(&pf.run, "run", "", "run id (default: the incident's run)")
	fs.BoolVar(&pf.asJSON, "json", false, "print JSON (plan: the plan report; run, status, resume: the final status)")
	if sub == "plan" || sub == "run" {
		fs.StringVar(&pf.to, "to", "", `release to roll back to: "last-known-good" (default) or a release id such as v1`)
		fs.Var(pf.params, "param", "playbook parameter KEY=VALUE (repeatable), e.g. --param canary_hold=30s")
	}
	step := fs.String("step", "", "approve: the step awaiting approval")
	var roles []string
	fs.Func("role", "approve: a role the approver holds (repeatable), e.g. incident-commander", func(s string) error {
		roles = append(roles, s)
		return nil
	})
	var kf kubeFlags
	if sub == "plan" || sub == "run" {
		kf.register(env, fs)
	}
	reason := fs.String("reason", "", "abort: why")
	noFollow := fs.Bool("no-follow", false, "run, resume: return once the run has started instead of following it")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 || (len(pos) == 1 && pos[0] != "rollback") {
		return usageError("this build has one playbook, rollback (playbooks/rollback.yaml); got %q", pos)
	}
	if pf.to != "" {
		pf.params["stable_release"] = pf.to
	}
	if on, err := kf.enabled(); err != nil {
		return err
	} else if on {
		if *noFollow {
			return usageError("--no-follow cannot be used with --fleet kube: the control plane runs in this command and stops with it")
		}
		w, err := startKubeControl(ctx, env, &kf, pf.data)
		if err != nil {
			return err
		}
		defer w.Close()
	}
	c, err := dialControl(env, pf.data, pf.as)
	if err != nil {
		return err
	}
	switch sub {
	case "plan":
		if pf.incident == "" {
			return usageError("--incident is required")
		}
		rep, err := c.Plan(ctx, pf.incident, pf.params)
		if err != nil {
			return err
		}
		if pf.asJSON {
			return printJSON(env, rep)
		}
		writePlan(env.stdout, rep)
		return nil
	case "run":
		if pf.incident == "" {
			return usageError("--incident is required")
		}
		id, err := c.Run(ctx, pf.incident, pf.params)
		if err != nil {
			return err
		}
		if *noFollow {
			fmt.Fprintf(env.stdout, "run %s started; follow it with: countersign playbook status --run %s\n", id, id)
			return nil
		}
		return follow(ctx, env, c, id, pf.asJSON)
	case "status":
		id, err := runID(ctx, c, pf)
		if err != nil {
			return err
		}
		st, err := c.Status(ctx, id)
		if err != nil {
			return err
		}
		return finish(env, st, pf.asJSON, awaitingHuman(ctx, c, st))
	case "resume":
		id, err := runID(ctx, c, pf)
		if err != nil {
			return err
		}
		if _, err := c.Resume(ctx, id); err != nil {
			return err
		}
		if *noFollow {
			fmt.Fprintf(env.stdout, "run %s resumed\n", id)
			return nil
		}
		return follow(ctx, env, c, id, pf.asJSON)
	case "abort":
		id, err := runID(ctx, c, pf)
		if err != nil {
			return err
		}
		if *reason == "" {
			return usageError("--reason is required: it goes into the journal and the audit log")
		}
		st, err := c.Abort(ctx, id, *reason)
		if err != nil {
			return err
		}
		if pf.asJSON {
			return printJSON(env, st)
		}
		fmt.Fprintf(env.stdout, "abort of run %s requested\n", id)
		return playbook.WriteStatus(env.stdout, st)
	case "approve":
		id, err := runID(ctx, c, pf)
		if err != nil {
			return err
		}
		if *step == "" || len(roles) == 0 {
			return usageError("approve needs --step STEP and --role ROLE")
		}
		st, err := c.Approve(ctx, id, *step, roles)
		if err != nil {
			return err
		}
		if pf.asJSON {
			return printJSON(env, st)
		}
		fmt.Fprintf(env.stdout, "approved step %s of run %s as %s\n", *step, id, strings.Join(roles, ", "))
		return nil
	}
	return usageError("unknown playbook command %q (plan, run, status, resume, abort, approve)", sub)
}

// runID resolves --run, or the run of --incident.
func runID(ctx context.Context, c *control.Client, pf playbookFlags) (string, error) {
	if pf.run != "" {
		return pf.run, nil
	}
	if pf.incident == "" {
		return "", usageError("give --run RUN or --incident INC-N")
	}
	inc, err := c.Incident(ctx, pf.incident)
	if err != nil {
		return "", err
	}
	if inc.RunID == "" {
		return "", fmt.Errorf("incident %s has no playbook run yet (start one with: countersign playbook run rollback --incident %s)", inc.ID, inc.ID)
	}
	return inc.RunID, nil
}

func writePlan(w io.Writer, rep playbook.PlanReport) {
	fmt.Fprintf(w, "plan of playbook %s (nothing is changed)\n", rep.Playbook)
	for _, k := range []string{"incident", "regressive_release", "stable_release", "canary_hold", "retry_after"} {
		if v, ok := rep.Params[k]; ok {
			fmt.Fprintf(w, "  %-19s %s\n", k, v)
		}
	}
	for i, s := range rep.Steps {
		fmt.Fprintf(w, "%2d. %s (%s)", i+1, s.ID, s.Action)
		if s.When != "" {
			fmt.Fprintf(w, "  when %s", s.When)
		}
		if s.Approval != nil {
			fmt.Fprintf(w, "  needs %d approval(s) by %s", s.Approval.Required, strings.Join(s.Approval.Roles, " or "))
		}
		fmt.Fprintln(w)
		for _, ch := range s.Plan.Changes {
			line := "      change " + ch.Target
			if ch.Field != "" {
				line += " " + ch.Field
			}
			line += ": "
			if ch.From != "" {
				line += ch.From + " → "
			}
			line += ch.To
			if ch.Detail != "" {
				line += "  (" + ch.Detail + ")"
			}
			fmt.Fprintln(w, line)
		}
		if len(s.Plan.Changes) == 0 && s.Error == "" {
			fmt.Fprintln(w, "      no change")
		}
		for _, n := range s.Plan.Notes {
			fmt.Fprintln(w, "      note: "+n)
		}
		switch {
		case s.Unavailable:
			fmt.Fprintln(w, "      UNAVAILABLE in this build: "+s.Error)
		case s.Error != "":
			fmt.Fprintln(w, "      ERROR: "+s.Error)
		}
	}
}

// awaitingHuman returns the step of st that waits for a human approval
// (not in drill worlds, whose policy approves), or "".
func awaitingHuman(ctx context.Context, c *control.Client, st playbook.Status) string {
	for _, s := range st.Steps {
		if s.State == playbook.StepAwaitingApproval {
			if ws, err := c.State(ctx); err == nil && ws.Drill {
				return ""
			}
			return s.ID
		}
	}
	return ""
}

// follow prints each step transition of a run until the run ends, pauses
// or waits for a human approval, then the step table.
func follow(ctx context.Context, env *cliEnv, c *control.Client, id string, asJSON bool) error {
	out := env.stdout
	if asJSON {
		out = env.stderr
	}
	seen := map[string]string{}
	for {
		st, err := c.Status(ctx, id)
		if err != nil {
			return err
		}
		for i, s := range st.Steps {
			k := string(s.State) + fmt.Sprint(s.Attempt)
			if s.State == playbook.StepPending || seen[s.ID] == k {
				continue
			}
			seen[s.ID] = k
			line := fmt.Sprintf("%s  [%2d/%d] %-14s %s", time.Now().Format("15:04:05"), i+1, len(st.Steps), s.ID, s.State)
			if !s.StartedAt.IsZero() && s.ElapsedSeconds > 0 {
				line += fmt.Sprintf(" %.1fs", s.ElapsedSeconds)
			}
			if s.Attempt > 1 {
				line += fmt.Sprintf(" (attempt %d)", s.Attempt)
			}
			if s.Error != "" {
				line += ": " + s.Error
			}
			fmt.Fprintln(out, line)
		}
		waiting := awaitingHuman(ctx, c, st)
		if st.State != playbook.RunRunning || waiting != "" {
			if !asJSON {
				fmt.Fprintln(out)
			}
			return finish(env, st, asJSON, waiting)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(env.stderr, "stopped following; the run goes on (countersign playbook status --run %s)\n", id)
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// finish prints the status (table or JSON), what the operator can do next,
// and maps the run state to the exit status.
func finish(env *cliEnv, st playbook.Status, asJSON bool, waiting string) error {
	if asJSON {
		if err := printJSON(env, st); err != nil {
			return err
		}
	} else if err := playbook.WriteStatus(env.stdout, st); err != nil {
		return err
	}
	hint := env.stdout
	if asJSON {
		hint = env.stderr
	}
	switch {
	case waiting != "":
		s := st.Step(waiting)
		fmt.Fprintf(hint, "step %s waits for approval by %s:\n  countersign playbook approve --run %s --step %s --role %s\n",
			waiting, strings.Join(s.ApprovalRoles, " or "), st.RunID, waiting, strings.Join(s.ApprovalRoles, " --role "))
	case st.State == playbook.RunPaused:
		fmt.Fprintf(hint, "the run is paused for an operator: fix the cause, then\n  countersign playbook resume --run %s\nor stop it with\n  countersign playbook abort --run %s --reason WHY\n", st.RunID, st.RunID)
		return &exitError{code: exitPaused, err: fmt.Errorf("run %s paused: %s", st.RunID, st.Note)}
	case st.State == playbook.RunFailed || st.State == playbook.RunAborted:
		return &exitError{code: 1, err: fmt.Errorf("run %s %s: %s", st.RunID, st.State, st.Note)}
	}
	return nil
}
