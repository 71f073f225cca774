package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/queue/queueurl"
)

func init() {
	register("up", "run the embedded default: store, keys, gateway, control plane and a local fleet on release v1", runUp)
}

// paramFlag collects repeated KEY=VALUE flags.
type paramFlag map[string]string

func (p paramFlag) String() string { return fmt.Sprint(map[string]string(p)) }

func (p paramFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	p[k] = v
	return nil
}

func runUp(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "up", "--data DIR [--drill] [flags]")
	data := fs.String("data", "./world", "data directory (initialised with a dev tenant, token and key if it holds no installation)")
	listen := fs.String("listen", "127.0.0.1:7400", "gateway (data plane) address; port 0 picks one")
	adminListen := fs.String("admin-listen", "127.0.0.1:7401", "gateway admin API address")
	controlListen := fs.String("control-listen", "127.0.0.1:7402", "control API address (what release, incident and playbook call)")
	drill := fs.Bool("drill", false, "drill world: releases may carry fault scenarios and playbook approval gates are approved by the drill policy")
	auto := fs.Bool("auto", false, "start the rollback playbook when an alert opens an incident (default: on with --drill, off otherwise)")
	autoContain := fs.Bool("auto-contain", true, "on alert, zero the alerting canary pool's weight and turn the maintenance gate on at once")
	base := fs.String("base-release", "v1", "release the stable pool runs when the world is first brought up")
	replicas := fs.Int("replicas", 1, "node processes per pool")
	artifact := fs.String("artifact", "", "countersign binary the fleet runs as every release (default: this executable)")
	canaryHold := fs.Duration("canary-hold", 0, "rollback playbook canary hold per stage (default: the playbook's, 2m)")
	probeEvery := fs.Duration("probe-interval", 0, "synthetic probe period (default 250ms)")
	params := paramFlag{}
	fs.Var(params, "param", "rollback playbook parameter KEY=VALUE (repeatable), e.g. --param retry_after=30s")
	crashAt := fs.String("crash-at", "", "drill only, for crash-resume tests: SIGKILL this process when the playbook journals STEP/STATE[+DELAY], e.g. snapshot/succeeded")
	logPath := fs.String("log", "", "control-plane log file (default DIR/control.log)")
	notifyWebhook := fs.String("notify-webhook", "", "also deliver every incident notice to this webhook (Standard Webhooks, HMAC-SHA256)")
	notifySecretFile := fs.String("notify-webhook-secret-file", "", "file holding the webhook HMAC secret (required with --notify-webhook)")
	snapshotStore := fs.String("snapshot-store", "", "where incident snapshots go: s3://BUCKET[/PREFIX]?endpoint=...&mode=compliance (docs/snapshots-s3.md); default DIR/snapshots")
	verbose := fs.Bool("v", false, "log to stderr instead of the log file")
	extQ := addExternalQueueFlags(env, fs, "instead of the embedded JetStream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	queueURL, err := extQ.value()
	if err != nil {
		return err
	}
	var webhookSecret notify.Secret
	if *notifyWebhook != "" {
		if *notifySecretFile == "" {
			return usageError("--notify-webhook needs --notify-webhook-secret-file")
		}
		b, err := os.ReadFile(*notifySecretFile)
		if err != nil {
			return err
		}
		if webhookSecret = notify.NewSecret([]byte(strings.TrimSpace(string(b))), "file:"+*notifySecretFile); webhookSecret.Empty() {
			return fmt.Errorf("%s is empty", *notifySecretFile)
		}
	}
	if fs.NArg() > 0 {
		return usageError("up takes no arguments")
	}
	autoSet := false
	fs.Visit(func(f *flag.Flag) { autoSet = autoSet || f.Name == "auto" })
	if !autoSet {
		*auto = *drill
	}
	if *canaryHold > 0 {
		params["canary_hold"] = canaryHold.String()
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	out := env.stdout
	if err := initIfMissing(ctx, env, dir); err != nil {
		return err
	}

	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(env.stderr, nil))
	} else {
		if *logPath == "" {
			*logPath = filepath.Join(dir, "control.log")
		}
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		logger = slog.New(slog.NewJSONHandler(f, nil))
	}

	created, err := flags.EnsureFile(control.FlagsPath(dir))
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(out, "wrote the default flag file %s\n", control.FlagsPath(dir))
	}
	ims, err := openSnapshotStore(ctx, *snapshotStore, logger)
	if err != nil {
		return err
	}
	// A control.json left by a process that was killed names dead URLs.
	os.Remove(filepath.Join(dir, control.EndpointsFile))
	fmt.Fprintf(out, "starting the world in %s (stable pool on %s)...\n", dir, *base)
	w, err := control.Start(ctx, control.Config{Dir: dir, Listen: *listen, AdminListen: *adminListen, ControlListen: *controlListen,
		BaseRelease: *base, Replicas: *replicas, Drill: *drill, AutoRun: *auto, NoAutoContain: !*autoContain,
		ProbeInterval: *probeEvery, Artifact: *artifact, Params: params, CrashAt: *crashAt, WriteEndpoints: true, Logger: logger,
		NotifyWebhook: *notifyWebhook, NotifyWebhookSecret: webhookSecret, SnapshotStore: ims, QueueURL: queueURL})
	if err != nil {
		return err
	}
	u := w.URLs()
	printUp(out, dir, u, queueURL, w.QueueURL(), *drill, *auto, *autoContain, w.Incidents())

	<-ctx.Done()
	fmt.Fprintln(out, "stopping: draining the fleet...")
	start := time.Now()
	if err := w.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintf(out, "stopped in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// initIfMissing makes a development installation in dir unless it holds one.
func initIfMissing(ctx context.Context, env *cliEnv, dir string) error {
	if _, err := os.Stat(filepath.Join(dir, install.ConfigFile)); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	o := install.Options{Dev: true}
	if s := env.getenv(install.PassphraseEnv); s != "" {
		o.Passphrase = soft.NewPassphrase([]byte(s))
	}
	made, err := install.Init(ctx, dir, o)
	if err != nil {
		return err
	}
	w := env.stdout
	fmt.Fprintf(w, "initialised %s (development setup)\n", made.Dir)
	fmt.Fprintf(w, "  store            %s\n", made.Store)
	if made.PassphraseFile != "" {
		fmt.Fprintf(w, "  DEV passphrase   %s (development only: production takes $%s)\n", made.PassphraseFile, install.PassphraseEnv)
	}
	fmt.Fprintf(w, "  tenant           %s, signing key %s (%s)\n", made.Tenant, made.Key, made.Algorithm)
	fmt.Fprintf(w, "  API token        %s\n", made.TokenFile)
	return nil
}

// printUp says what runs where; external is the --queue-url given (empty:
// the embedded JetStream at queueURL).
func printUp(w io.Writer, dir string, u control.URLs, external, queueURL string, drill, auto, contain bool, incs []control.Incident) {
	fmt.Fprintf(w, "world up\n")
	fmt.Fprintf(w, "  gateway          %s   (sign and verify here)\n", u.Gateway)
	fmt.Fprintf(w, "  gateway admin    %s\n", u.Admin)
	fmt.Fprintf(w, "  control API      %s\n", u.Control)
	fmt.Fprintf(w, "  admin token      %s\n", filepath.Join(dir, control.AdminTokenFile))
	fmt.Fprintf(w, "  endpoints file   %s\n", filepath.Join(dir, control.EndpointsFile))
	if external != "" {
		fmt.Fprintf(w, "  queue            %s   (external; POST /v1/sign:async, GET /v1/jobs/{id})\n", queueurl.Redact(external))
	} else {
		fmt.Fprintf(w, "  queue            %s   (embedded JetStream, store %s; POST /v1/sign:async, GET /v1/jobs/{id})\n",
			queueURL, filepath.Join(dir, control.QueueStoreDir))
	}
	fmt.Fprintf(w, "  flags            %s   (each release gets %s)\n", control.FlagsPath(dir),
		filepath.Join(dir, control.ReleasesDir, "<release>.flagd.json"))
	mode := "production-like: approval gates wait for `countersign playbook approve`"
	if drill {
		mode = "DRILL: fault scenarios allowed, approval gates approved by the drill policy"
	}
	fmt.Fprintf(w, "  mode             %s\n", mode)
	fmt.Fprintf(w, "  on alert         contain: %v; start the rollback playbook: %v\n", contain, auto)
	for _, inc := range incs {
		if inc.State != control.IncidentClosed {
			fmt.Fprintf(w, "  incident         %s %s on %s, run %s %s\n", inc.ID, inc.State, inc.Release, orNone(inc.RunID), inc.RunState)
		}
	}
	fmt.Fprintf(w, "stop with Ctrl-C (the fleet is drained gracefully)\n")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
