package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/internal/control"
)

func init() {
	register("incident", "open, list and show incidents of the running world", runIncident)
}

func runIncident(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usageError("usage: countersign incident open|list|show [flags]")
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(env, "incident "+sub, "[flags]")
	data := fs.String("data", "./world", "data directory of the running world")
	as := fs.String("as", "", "who acts (audit actor; default $USER)")
	asJSON := fs.Bool("json", false, "print JSON")
	switch sub {
	case "open":
		class := fs.String("classify", "corruption", "classification: corruption | availability | performance")
		release := fs.String("release", "", "the suspected release (required)")
		summary := fs.String("summary", "", "one line on what is wrong")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *release == "" {
			return usageError("--release is required")
		}
		c, err := dialControl(env, *data, *as)
		if err != nil {
			return err
		}
		inc, err := c.OpenIncident(ctx, control.OpenIncidentRequest{Classification: *class, Release: *release, Summary: *summary})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, inc)
		}
		fmt.Fprintf(env.stdout, "opened %s: %s on release %s\n", inc.ID, inc.Classification, inc.Release)
		fmt.Fprintf(env.stdout, "next: countersign playbook plan rollback --data %s --incident %s\n", shellQuote(*data), inc.ID)
		return nil
	case "list":
		if err := fs.Parse(args); err != nil {
			return err
		}
		c, err := dialControl(env, *data, *as)
		if err != nil {
			return err
		}
		incs, err := c.Incidents(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, incs)
		}
		return writeIncidents(env.stdout, incs)
	case "show":
		id := fs.String("incident", "", "incident id (or give it as the argument)")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		if len(pos) == 1 && *id == "" {
			*id = pos[0]
		}
		if *id == "" {
			return usageError("usage: countersign incident show INC-N")
		}
		c, err := dialControl(env, *data, *as)
		if err != nil {
			return err
		}
		inc, err := c.Incident(ctx, *id)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, inc)
		}
		return writeIncident(env.stdout, inc)
	}
	return usageError("unknown incident command %q (open, list, show)", sub)
}

func writeIncidents(w io.Writer, incs []control.Incident) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCLASS\tRELEASE\tDETECTED\tRUN\tRUN STATE")
	for _, i := range incs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.State, i.Classification, i.Release,
			i.DetectedAt.Local().Format(time.DateTime), orNone(i.RunID), i.RunState)
	}
	return tw.Flush()
}

func writeIncident(w io.Writer, i control.Incident) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format(time.RFC3339Nano)
	}
	row("incident", i.ID)
	row("state", i.State)
	row("classification", i.Classification)
	row("release", i.Release)
	row("pool", i.Pool)
	row("commander", i.Commander)
	row("summary", i.Summary)
	row("first bad", ts(i.FirstBadAt))
	row("detected", ts(i.DetectedAt))
	row("contained", ts(i.ContainedAt))
	row("restored", ts(i.RestoredAt))
	row("closed", ts(i.ClosedAt))
	row("playbook run", i.RunID)
	row("run state", i.RunState)
	return tw.Flush()
}
