package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/queue/queueurl"
)

func init() {
	register("control", "run the control plane against a fleet elsewhere: --fleet kube (probes, detector, incidents, playbook, control API)", runControl)
}

func runControl(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "control", "--data DIR --fleet kube --image REPO@sha256:HEX --queue-url URL [flags]")
	data := fs.String("data", "./data", "installation directory made by 'countersign init --store postgres://...'")
	listen := fs.String("listen", "127.0.0.1:7402", "control API address")
	drill := fs.Bool("drill", false, "drill world: releases may carry fault scenarios and approval gates are approved by the drill policy")
	auto := fs.Bool("auto", false, "start the rollback playbook when an alert opens an incident")
	autoContain := fs.Bool("auto-contain", true, "on alert, zero the alerting canary pool's weight and turn the maintenance gate on at once")
	replicas := fs.Int("replicas", 1, "replicas of a pool a release is deployed or rolled back into")
	probeEvery := fs.Duration("probe-interval", 0, "synthetic probe period (default 250ms)")
	params := paramFlag{}
	fs.Var(params, "param", "rollback playbook parameter KEY=VALUE (repeatable)")
	prepare := fs.Bool("prepare", false, "create the probe tenant, token and key in the installation, then exit (before its keys become the nodes' Secret)")
	var kf kubeFlags
	kf.register(env, fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("control takes no arguments")
	}
	if *prepare {
		return prepareInstallation(ctx, env, *data)
	}
	if on, err := kf.enabled(); err != nil {
		return err
	} else if !on {
		return usageError("control drives a fleet elsewhere: give --fleet kube (the embedded default is 'countersign up')")
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(env.stderr, nil))
	if _, err := flags.EnsureFile(control.FlagsPath(dir)); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, control.EndpointsFile))
	cfg := control.Config{Dir: dir, ControlListen: *listen, Replicas: *replicas, Drill: *drill, AutoRun: *auto,
		NoAutoContain: !*autoContain, ProbeInterval: *probeEvery, Params: params, WriteEndpoints: true, Logger: logger}
	if err := kf.worldConfig(ctx, &cfg, logger); err != nil {
		return err
	}
	w, err := control.Start(ctx, cfg)
	if err != nil {
		return err
	}
	u := w.URLs()
	fmt.Fprintf(env.stdout, "control plane up (fleet kube, namespace %s, traffic %s)\n", kf.namespace, w.Router())
	fmt.Fprintf(env.stdout, "  control API      %s\n", u.Control)
	fmt.Fprintf(env.stdout, "  queue            %s\n", queueurl.Redact(cfg.QueueURL))
	<-ctx.Done()
	start := time.Now()
	if err := w.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintf(env.stdout, "stopped in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// prepareInstallation creates what the control plane needs in the
// installation before node pods read its keys (control --prepare).
func prepareInstallation(ctx context.Context, env *cliEnv, data string) error {
	inst, err := install.Open(ctx, data, install.OpenOptions{Release: "control", Instance: "prepare"})
	if err != nil {
		return err
	}
	defer inst.Close()
	_, kvs, err := control.EnsureProbeIdentity(ctx, inst)
	if err != nil {
		return err
	}
	if err := control.EnsureLeadKey(ctx, inst, control.NewRecorder(inst.Store, "control", "prepare", nil)); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "incident lead key ready: %s, %s\n", filepath.Join(inst.Dir, control.LeadKeyURIFile), filepath.Join(inst.Dir, control.LeadKeyPubFile))
	fmt.Fprintf(env.stdout, "probe identity ready: tenant %s, key %s (%d version(s)), token in %s\n",
		control.ProbeTenant, control.ProbeKey, len(kvs), filepath.Join(inst.Dir, "probe-token"))
	fmt.Fprintf(env.stdout, "now make the soft-key Secret from %s (docs/kubernetes.md)\n", filepath.Join(inst.Dir, inst.Config.SoftKeyDir))
	return nil
}
