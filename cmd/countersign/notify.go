package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("notify", "incident notices: preview, send, channels, postmortem, example", runNotify)
}

const notifyUsage = `<subcommand> [flags]

subcommands:
  preview     --phase A|B|C|D --incident-file F [--tenant T] [--revision N] [--next-update TIME]
              [--templates DIR] [--config FILE] [--json]
              print exactly what would be sent (subject, digest, body; with --config
              also the channels, delivery IDs and whether a sign-off is needed)
  send        --config FILE --data DIR --phase P --incident-file F [--tenant T] [--revision N]
              [--next-update TIME] [--approved-by WHO --approve-digest sha256:...]
              render and deliver; every delivery is an audit event in DIR's log
  channels    --config FILE   list the configured channels and check their secrets
  postmortem  --incident-file F [--templates DIR]   print the postmortem draft (Markdown)
  example     print a complete incident file to start from

The incident file is the notify input model as JSON (docs/notify.md).
TIME is RFC 3339 (2026-03-02T10:15:00Z) or a duration from now (1h).`

func runNotify(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(env.stderr, "usage: countersign notify %s\n", notifyUsage)
		if len(args) == 0 {
			return usageError("notify: missing subcommand")
		}
		return nil
	}
	nc := &notifyCmd{env: env, sub: args[0]}
	fs := newFlagSet(env, "notify "+nc.sub, "[flags]")
	switch nc.sub {
	case "preview", "send":
		fs.StringVar(&nc.phase, "phase", "", "notice phase: A|B|C|D (or internal|customer|regulator|remediation)")
		fs.StringVar(&nc.tenant, "tenant", "", "tenant (phases B and D)")
		fs.IntVar(&nc.revision, "revision", 1, "revision of this phase's notice (bump it when the text changes)")
		fs.StringVar(&nc.next, "next-update", "", "next update time: RFC 3339 or a duration from now (default: the phase's interval from now, to the minute)")
		fs.StringVar(&nc.incidentFile, "incident-file", "", "incident input (JSON)")
		fs.StringVar(&nc.templates, "templates", "", "directory of operator templates (default: the config's, else the shipped ones)")
		fs.StringVar(&nc.config, "config", "", "notify configuration (YAML)")
		if nc.sub == "preview" {
			fs.BoolVar(&nc.json, "json", false, "print the notice as JSON")
		} else {
			fs.StringVar(&nc.data, "data", "", "Countersign data directory whose audit log records the deliveries")
			fs.StringVar(&nc.approvedBy, "approved-by", "", "who signed off the notice (phases that need approval)")
			fs.StringVar(&nc.approveDigest, "approve-digest", "", "the digest that was signed off (from preview)")
		}
	case "channels":
		fs.StringVar(&nc.config, "config", "", "notify configuration (YAML)")
	case "postmortem":
		fs.StringVar(&nc.incidentFile, "incident-file", "", "incident input (JSON)")
		fs.StringVar(&nc.templates, "templates", "", "directory of operator templates")
	case "example":
	default:
		return usageError("notify: unknown subcommand %q\nusage: countersign notify %s", nc.sub, notifyUsage)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("notify %s: unexpected arguments %q", nc.sub, fs.Args())
	}
	switch nc.sub {
	case "preview":
		return nc.preview()
	case "send":
		return nc.send(ctx)
	case "channels":
		return nc.channels()
	case "postmortem":
		return nc.postmortem()
	default:
		return nc.example()
	}
}

type notifyCmd struct {
	env                                    *cliEnv
	sub, phase, tenant, next, incidentFile string
	templates, config, data                string
	approvedBy, approveDigest              string
	revision                               int
	json                                   bool
	cfg                                    *notify.Config
}

func (nc *notifyCmd) loadConfig(required bool) error {
	if nc.config == "" {
		if required {
			return usageError("notify %s: --config is required", nc.sub)
		}
		nc.cfg = &notify.Config{}
		return nil
	}
	c, err := notify.LoadConfig(nc.config)
	if err != nil {
		return err
	}
	nc.cfg = c
	return nil
}

func (nc *notifyCmd) input() (notify.Input, error) {
	if nc.incidentFile == "" {
		return notify.Input{}, usageError("notify %s: --incident-file is required", nc.sub)
	}
	b, err := os.ReadFile(nc.incidentFile)
	if err != nil {
		return notify.Input{}, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var in notify.Input
	if err := dec.Decode(&in); err != nil {
		return notify.Input{}, fmt.Errorf("%s: %w (docs/notify.md describes the format; `countersign notify example` prints one)", nc.incidentFile, err)
	}
	return in, nil
}

func (nc *notifyCmd) loadTemplates() (*notify.Templates, error) {
	dir := nc.templates
	if dir == "" && nc.cfg != nil {
		dir = nc.cfg.Templates
	}
	return notify.LoadTemplates(dir)
}

// render builds the notice the flags describe.
func (nc *notifyCmd) render() (notify.Notice, error) {
	if nc.phase == "" {
		return notify.Notice{}, usageError("notify %s: --phase is required", nc.sub)
	}
	p, err := notify.ParsePhase(nc.phase)
	if err != nil {
		return notify.Notice{}, usageError("%v", err)
	}
	in, err := nc.input()
	if err != nil {
		return notify.Notice{}, err
	}
	tpl, err := nc.loadTemplates()
	if err != nil {
		return notify.Notice{}, err
	}
	next, err := nc.nextUpdate(p)
	if err != nil {
		return notify.Notice{}, err
	}
	n, err := tpl.Render(in, notify.RenderOptions{Phase: p, Tenant: nc.tenant, Revision: nc.revision, NextUpdateAt: next})
	if errors.Is(err, notify.ErrTenantRequired) || errors.Is(err, notify.ErrUnknownTenant) {
		var ids []string
		for _, t := range in.Impact.Tenants {
			ids = append(ids, t.ID)
		}
		return notify.Notice{}, usageError("%v (affected tenants: %s)", err, strings.Join(ids, ", "))
	}
	return n, err
}

func (nc *notifyCmd) nextUpdate(p notify.Phase) (time.Time, error) {
	if nc.next == "" {
		d := nc.cfg.NextUpdate(p)
		if d == 0 {
			return time.Time{}, nil
		}
		return time.Now().Add(d).UTC().Truncate(time.Minute), nil
	}
	if t, err := time.Parse(time.RFC3339, nc.next); err == nil {
		return t.UTC(), nil
	}
	if d, err := time.ParseDuration(nc.next); err == nil {
		return time.Now().Add(d).UTC().Truncate(time.Minute), nil
	}
	return time.Time{}, usageError("--next-update %q: want RFC 3339 or a duration", nc.next)
}

func (nc *notifyCmd) preview() error {
	if err := nc.loadConfig(false); err != nil {
		return err
	}
	n, err := nc.render()
	if err != nil {
		return err
	}
	w := nc.env.stdout
	if nc.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(n)
	}
	fmt.Fprintf(w, "Subject: %s\nDigest: %s\n", n.Subject, n.Digest)
	if !n.NextUpdateAt.IsZero() {
		fmt.Fprintf(w, "Next-Update: %s\n", n.NextUpdateAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "\n%s", n.Body)
	if nc.config == "" {
		return nil
	}
	s, err := nc.cfg.Sender(notify.BuildOptions{Getenv: nc.env.getenv, Recorder: discardRecorder{}})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\n---")
	if s.NeedsApproval(n.Phase) {
		fmt.Fprintf(w, "needs a sign-off: send with --approved-by WHO --approve-digest %s\n", n.Digest)
	}
	plan := s.Plan(n)
	if len(plan) == 0 {
		fmt.Fprintln(w, "no configured channel takes this notice")
	}
	for _, p := range plan {
		fmt.Fprintf(w, "would deliver to %s (%s) with delivery id %s\n", p.Channel, p.Kind, p.DeliveryID)
	}
	return nil
}

type discardRecorder struct{}

func (discardRecorder) Record(context.Context, string, string, map[string]any) error { return nil }

// storeRecorder appends notice events to an installation's audit log.
type storeRecorder struct {
	st    store.Store
	actor string
}

func (r storeRecorder) Record(ctx context.Context, typ, subject string, details map[string]any) error {
	tenant, _ := details["tenant"].(string)
	ev, err := auditlog.Event{Type: typ, Time: time.Now(), Actor: r.actor, TenantID: tenant, Instance: "cli",
		Subject: subject, Details: details}.Record()
	if err != nil {
		return err
	}
	_, err = r.st.AppendEvents(ctx, []store.AuditEvent{ev})
	return err
}

func (nc *notifyCmd) send(ctx context.Context) error {
	if err := nc.loadConfig(true); err != nil {
		return err
	}
	if nc.data == "" {
		return usageError("notify send: --data is required (every delivery is recorded in the audit log)")
	}
	n, err := nc.render()
	if err != nil {
		return err
	}
	if nc.approvedBy != "" || nc.approveDigest != "" {
		if nc.approvedBy == "" || nc.approveDigest == "" {
			return usageError("notify send: --approved-by and --approve-digest go together")
		}
		n.Approval = &notify.Approval{By: nc.approvedBy, At: time.Now().UTC(), Digest: nc.approveDigest}
	}
	inst, err := install.Open(ctx, nc.data, install.OpenOptions{Release: envOr(nc.env, "COUNTERSIGN_RELEASE", ""), Instance: "cli",
		Logger: slog.New(slog.NewTextHandler(nc.env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer inst.Close()
	s, err := nc.cfg.Sender(notify.BuildOptions{Getenv: nc.env.getenv, Recorder: storeRecorder{st: inst.Store, actor: cliActor()},
		Logger: slog.New(slog.NewTextHandler(nc.env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	outs, err := s.Send(ctx, n)
	for _, o := range outs {
		line := fmt.Sprintf("%-9s %s (%s) delivery %s, %d attempt(s)", o.Result, o.Channel, o.Kind, o.DeliveryID, o.Attempts)
		if o.Error != "" {
			line += ": " + o.Error
		}
		fmt.Fprintln(nc.env.stdout, line)
	}
	var ae *notify.ApprovalError
	if errors.As(err, &ae) {
		return fmt.Errorf("%w\npreview it, get the sign-off, then: --approved-by WHO --approve-digest %s", err, n.Digest)
	}
	return err
}

func (nc *notifyCmd) channels() error {
	if err := nc.loadConfig(true); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(nc.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tPHASES\tTENANTS\tDESTINATION\tSTATUS")
	bad := 0
	for _, ch := range nc.cfg.Channels {
		status := "ready"
		if _, err := nc.cfg.Channel(ch, notify.BuildOptions{Getenv: nc.env.getenv}); err != nil {
			status, bad = err.Error(), bad+1
		}
		phases := "all"
		if len(ch.Phases) > 0 {
			var ps []string
			for _, p := range ch.Phases {
				ps = append(ps, string(p))
			}
			phases = strings.Join(ps, ",")
		}
		tenants := "all"
		if len(ch.Tenants) > 0 {
			tenants = strings.Join(ch.Tenants, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ch.Name, ch.Type, phases, tenants, ch.Destination(), status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(nc.cfg.Approval.Phases) > 0 {
		var ps []string
		for _, p := range nc.cfg.Approval.Phases {
			ps = append(ps, string(p))
		}
		fmt.Fprintf(nc.env.stdout, "sign-off required for phases: %s\n", strings.Join(ps, ", "))
	}
	if bad > 0 {
		return fmt.Errorf("%d channel(s) not ready", bad)
	}
	return nil
}

func (nc *notifyCmd) postmortem() error {
	in, err := nc.input()
	if err != nil {
		return err
	}
	tpl, err := nc.loadTemplates()
	if err != nil {
		return err
	}
	md, err := tpl.Postmortem(in)
	if err != nil {
		return err
	}
	_, err = io.WriteString(nc.env.stdout, md)
	return err
}

func (nc *notifyCmd) example() error {
	enc := json.NewEncoder(nc.env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(notify.ExampleInput())
}
