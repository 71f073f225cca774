package control

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/fleet/local"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/probe"
	"github.com/countersign/countersign/internal/snapshot"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/traffic"
)

// Pools of the embedded default.
const (
	PoolStable = "stable"
	PoolCanary = "canary"
)

// Probe identity: a dedicated tenant and key, so probe signatures never mix
// with customers' and the probe's expectations are pinned.
const (
	ProbeTenant = "countersign-probe"
	ProbeKey    = "probe"
)

// Config configures a World. Zero values take the documented defaults.
type Config struct {
	// Dir is the data directory (made by install.Init).
	Dir string
	// Listen is the gateway's data-plane address (default 127.0.0.1:7400),
	// AdminListen its admin API (127.0.0.1:7401), ControlListen the control
	// API (127.0.0.1:7402). Port 0 picks a free port.
	Listen, AdminListen, ControlListen string
	// BaseRelease is the release the stable pool runs at first (default "v1").
	BaseRelease string
	// Replicas per pool (default 1).
	Replicas int
	// Drill allows fault scenarios in releases and auto-approves playbook
	// gates with the drill policy (said so in the journal).
	Drill bool
	// AutoRun starts the rollback playbook when the detector raises an
	// alert. Without it the alert opens an incident (and contains, see
	// NoAutoContain) and an operator starts the playbook.
	AutoRun bool
	// NoAutoContain turns off containment on alert. By default an alert
	// zeroes the alerting canary pool's weight and turns the maintenance
	// gate on at once, before the incident is even recorded: containment
	// needs no human and no playbook.
	NoAutoContain bool
	// ProbeInterval (default 250ms).
	ProbeInterval time.Duration
	// Artifact is the countersign binary the fleet runs as every release
	// (default: this executable).
	Artifact string
	// CrashAt arms a crash point for crash-resume drills (Drill only):
	// "STEP/STATE[+DELAY]" kills this process with SIGKILL DELAY after the
	// journal records STATE for STEP, e.g. "snapshot/succeeded".
	CrashAt string
	// WriteEndpoints writes <Dir>/control.json (the URLs, for the CLI)
	// once everything listens, before /readyz answers 200; Close removes it.
	WriteEndpoints bool
	// NoticeCheckInterval is how often due notice updates are looked for
	// (default notify.DefaultCheckInterval).
	NoticeCheckInterval time.Duration
	// Params are extra rollback playbook parameters (e.g. canary_hold).
	Params map[string]string
	// NotifyWebhook, when set, receives every incident notice as well as
	// the file channel (<Dir>/incidents/<id>/notices/), signed with
	// NotifyWebhookSecret (HMAC-SHA256, Standard Webhooks headers).
	NotifyWebhook       string
	NotifyWebhookSecret notify.Secret
	// QueueAckWait is how long a job message delivered to a worker that
	// stops without acknowledging it waits before redelivery (default
	// DefaultQueueAckWait).
	QueueAckWait time.Duration
	// QueueURL is an external queue (package queueurl): a NATS JetStream
	// server or cluster, or a Kafka cluster (e.g. the ones a Kubernetes
	// installation uses); empty starts the embedded JetStream in
	// <Dir>/jetstream.
	QueueURL string
	// Backends. A nil Fleet means fleet/local: node processes on this
	// machine started from Artifact, behind the embedded gateway. With
	// Fleet set (fleet/kube), Router and Pods must be set too (Router:
	// traffic.Admin for our gateway running elsewhere, traffic/httproute
	// for a Gateway API route), and the world starts no gateway and no node
	// of its own: it drives what runs.
	Fleet fleet.Fleet
	// Router is called once the store is open, with the recorder every
	// routing change must be recorded through before it takes effect.
	Router func(rec gateway.Recorder) (traffic.Router, error)
	Pods   *PodSpec
	// SnapshotStore receives incident snapshots (default: the write-once
	// directory <Dir>/snapshots); e.g. an S3 bucket under Object Lock
	// (snapshot/s3lock).
	SnapshotStore snapshot.ImmutableStore
	// GatewayURL is where clients reach the data plane when Router routes
	// elsewhere (reported by URLs; the drill's load uses it).
	GatewayURL string
	Logger     *slog.Logger
	Now        func() time.Time
}

// World is a running embedded Countersign installation.
type World struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	inst *install.Installation
	rec  *recorder

	gw       *gateway.Gateway // the embedded gateway; nil with an external Router
	router   traffic.Router   // what the playbook routes through (embeddedRouter over gw, or Config.Router)
	gwURL    string
	adminURL string
	ctlURL   string
	token    string // admin/control token
	servers  []*http.Server

	queue    *worldQueue // embedded JetStream: async signing
	fleet    fleet.Fleet
	local    *local.Fleet  // fleet when it is fleet/local (resume, shutdown); nil otherwise
	artifact fleet.Release // base release template of fleet/local (artifact + checksum)

	prober   *probe.Prober
	detector *probe.Detector
	probeTok string

	engine    *playbook.Engine
	actions   *playbook.Registry
	incidents *incidents
	sched     *notify.Scheduler
	crash     *crashPoint

	runCtx context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// routeMu orders containment and a deploy's weight change, so a deploy
	// never raises the weight of a release an alert has just contained;
	// contained holds such releases until their incident is recorded.
	routeMu   sync.Mutex
	contained map[string]bool

	closeOnce sync.Once
	closeErr  error

	ready   atomic.Bool // Start has finished: /readyz answers 200
	startMu sync.Mutex  // serialises StartPlaybook
	mu      sync.Mutex
	driving map[string]bool // run id → driven by a goroutine of this process; w.mu must be held
}

// URLs of a running world.
type URLs struct {
	Gateway string `json:"gateway"`
	Admin   string `json:"admin"`
	Control string `json:"control"`
}

// Start brings the world up: store, audit integrator, flag files, the
// embedded JetStream queue, gateway, fleet (the stable pool on
// BaseRelease, its nodes signing sync and async), probes, detector, playbook engine and
// the control API.
func Start(ctx context.Context, cfg Config) (w *World, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:7400"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "127.0.0.1:7401"
	}
	if cfg.ControlListen == "" {
		cfg.ControlListen = "127.0.0.1:7402"
	}
	if cfg.BaseRelease == "" {
		cfg.BaseRelease = "v1"
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if (cfg.Fleet == nil) != (cfg.Router == nil) || (cfg.Fleet == nil) != (cfg.Pods == nil) {
		return nil, errors.New("control: Fleet, Router and Pods go together (an external fleet) or are all unset (the local one)")
	}
	if cfg.Pods != nil {
		if err := cfg.Pods.validate(); err != nil {
			return nil, err
		}
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = probe.DefaultInterval
	}
	crash, err := parseCrashPoint(cfg.CrashAt)
	if err != nil {
		return nil, err
	}
	if crash != nil && !cfg.Drill {
		return nil, errCrashNeedsDrill
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w = &World{cfg: cfg, log: cfg.Logger, now: cfg.Now, runCtx: runCtx, cancel: cancel, driving: map[string]bool{}, crash: crash}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	instance := fmt.Sprintf("control-%d", os.Getpid())
	w.inst, err = install.Open(ctx, dir, install.OpenOptions{Migrate: true, Release: "control", Instance: instance, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := auditlog.CheckFork(ctx, w.inst.Store, w.inst.HistoryPath()); err != nil {
		return nil, err
	}
	w.rec = &recorder{st: w.inst.Store, release: "control", instance: instance, now: cfg.Now}
	w.incidents = newIncidents(w.inst.Store, w.rec, cfg.Now)
	if err := w.startScheduler(); err != nil {
		return nil, err
	}
	if err := w.startIntegrator(ctx); err != nil {
		return nil, err
	}
	if err := w.ensureLeadKey(ctx); err != nil {
		return nil, err
	}
	if w.token, err = adminToken(dir); err != nil {
		return nil, err
	}
	if _, err := flags.EnsureFile(FlagsPath(dir)); err != nil {
		return nil, err
	}
	if err := w.startQueue(ctx); err != nil {
		return nil, err
	}
	if err := w.startGateway(ctx); err != nil {
		return nil, err
	}
	if err := w.startFleet(ctx); err != nil {
		return nil, err
	}
	if err := w.startEngine(); err != nil {
		return nil, err
	}
	if err := w.startProbes(ctx); err != nil {
		return nil, err
	}
	if err := w.startControlAPI(); err != nil {
		return nil, err
	}
	if err := w.recoverRuns(ctx); err != nil {
		return nil, err
	}
	if cfg.WriteEndpoints {
		if err := WriteEndpoints(dir, w.URLs()); err != nil {
			return nil, err
		}
	}
	w.ready.Store(true)
	w.rec.note(TimelineEntry{Time: w.now(), Kind: "world.up", Details: map[string]any{"gateway": w.gwURL, "control": w.ctlURL}})
	return w, nil
}

func (w *World) startIntegrator(ctx context.Context) error {
	signer, err := w.inst.NoteSigner(ctx)
	if err != nil {
		return err
	}
	integ, err := auditlog.NewIntegrator(w.inst.Store, auditlog.Config{Signer: signer, HistoryPath: w.inst.HistoryPath(), Logger: w.log})
	if err != nil {
		return err
	}
	w.goRun("audit integrator", func(ctx context.Context) error { return integ.Run(ctx) })
	return nil
}

func (w *World) startGateway(ctx context.Context) error {
	if w.cfg.Router != nil {
		r, err := w.cfg.Router(w.rec)
		if err != nil {
			return fmt.Errorf("control: router: %w", err)
		}
		w.router, w.gwURL = r, w.cfg.GatewayURL
		return nil
	}
	// A restarted control plane routes as the previous one left it: the
	// gate stays on and a zeroed pool stays at zero.
	rt, err := loadRouting(ctx, w.inst.Store)
	if err != nil {
		return err
	}
	weights := map[string]int{PoolStable: 100, PoolCanary: 0}
	if rt.Weights != nil && rt.Weights[PoolStable]+rt.Weights[PoolCanary] == 100 {
		weights = map[string]int{PoolStable: rt.Weights[PoolStable], PoolCanary: rt.Weights[PoolCanary]}
	}
	gw, err := gateway.New(gateway.Config{
		Pools:          map[string][]string{PoolStable: nil, PoolCanary: nil},
		Weights:        weights,
		Recorder:       w.rec,
		HealthInterval: 250 * time.Millisecond,
		Logger:         w.log,
	})
	if err != nil {
		return err
	}
	w.gw, w.router = gw, traffic.Embedded(gw)
	if rt.Gate != nil && rt.Gate.On {
		if _, err := gw.SetGate(gateway.WithActor(ctx, ActorRestart), *rt.Gate); err != nil {
			return fmt.Errorf("control: restore maintenance gate: %w", err)
		}
	}
	w.goRun("gateway health", func(ctx context.Context) error { return gw.Run(ctx) })
	admin, err := gateway.NewAdmin(gw, w.token)
	if err != nil {
		return err
	}
	if w.gwURL, err = w.serve(w.cfg.Listen, gw); err != nil {
		return fmt.Errorf("control: gateway listener: %w", err)
	}
	if w.adminURL, err = w.serve(w.cfg.AdminListen, admin); err != nil {
		return fmt.Errorf("control: gateway admin listener: %w", err)
	}
	return nil
}

func (w *World) startFleet(ctx context.Context) error {
	if w.cfg.Fleet != nil {
		w.fleet = w.cfg.Fleet
		st, err := w.fleet.Status(ctx)
		if err != nil {
			return fmt.Errorf("control: fleet %T: %w", w.fleet, err)
		}
		for _, p := range st {
			if p.Pool == PoolStable && p.Revision > 0 {
				return nil
			}
		}
		// A control plane comes up before the first release: it is what
		// deploys it (countersign release deploy --pool stable).
		w.log.Warn("the stable pool runs no release yet: deploy one (countersign release deploy --pool stable)", "fleet", fmt.Sprintf("%T", w.fleet))
		return nil
	}
	f, err := local.New(local.Config{
		StateDir:     filepath.Join(w.cfg.Dir, "fleet"),
		Env:          w.queue.nodeEnv,
		ReadyTimeout: 60 * time.Second,
		StopTimeout:  15 * time.Second,
		Endpoints: func(ctx context.Context, pool string, eps []string) error {
			_, err := w.gw.SetPool(gateway.WithActor(ctx, "fleet"), pool, eps)
			return err
		},
		Logger: w.log,
	})
	if err != nil {
		return err
	}
	w.fleet, w.local = f, f
	exe := w.cfg.Artifact
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	sum, err := fleet.FileSHA256(exe)
	if err != nil {
		return err
	}
	w.artifact = fleet.Release{Artifact: exe, SHA256: sum, SchemaMin: store.DefaultSchemaMin, SchemaMax: store.DefaultSchemaMax}
	if err := f.Resume(ctx); err != nil {
		return fmt.Errorf("control: resume fleet: %w", err)
	}
	st, err := f.Status(ctx)
	if err != nil {
		return err
	}
	for _, p := range st {
		if p.Pool == PoolStable && p.Revision > 0 {
			return nil // resumed a world that was already up
		}
	}
	rev, err := w.deploy(ctx, ReleaseSpec{ID: w.cfg.BaseRelease, Pool: PoolStable})
	if err != nil {
		return err
	}
	return f.MarkGood(ctx, PoolStable, rev.Number)
}

// ReleaseSpec describes a release to ship into a pool.
type ReleaseSpec struct {
	ID   string `json:"id"`
	Pool string `json:"pool"`
	// Weight is the pool's traffic share after the deploy (percent); for
	// the canary pool the stable pool gets the rest.
	Weight int `json:"weight"`
	// Fault is a drill fault scenario the release's nodes inject (drill
	// worlds only) and FaultRate the share of requests it hits.
	Fault     string  `json:"fault,omitempty"`
	FaultRate float64 `json:"fault_rate,omitempty"`
	// SchemaMin/SchemaMax override the release's declared schema range.
	SchemaMin int `json:"schema_min,omitempty"`
	SchemaMax int `json:"schema_max,omitempty"`
	Replicas  int `json:"replicas,omitempty"`
	// Flags is the release's own flagd-format flag file; it is validated
	// and stored as <Dir>/releases/<ID>.flagd.json. Without it the release
	// keeps the file it has, or gets a copy of the world's defaults.
	Flags json.RawMessage `json:"flags,omitempty"`
}

// release builds the fleet release for spec: this very binary, started as
// `countersign node` against the world's data directory, its queue (each
// node runs an async worker) and the release's flag file.
func (w *World) release(spec ReleaseSpec, flagsPath string) (fleet.Release, error) {
	rel := w.artifact.Clone()
	rel.ID = spec.ID
	if p := w.cfg.Pods; p != nil {
		// A pod: the image is the artifact, the installation is mounted,
		// the flag file becomes a ConfigMap (fleet/kube renders
		// {{.FlagsFile}} as its mount path), and the queue URL and the
		// passphrase come from the manifests' Secrets as environment
		// variables — never from the release, whose arguments anyone who
		// may read Deployments can read.
		rel = fleet.Release{ID: spec.ID, Artifact: p.Image, SHA256: p.digest(), SchemaMin: store.DefaultSchemaMin, SchemaMax: store.DefaultSchemaMax,
			FlagsFile: flagsPath}
		rel.Args = []string{"node", "--data", p.DataDir, "--listen", "{{.Listen}}", "--release", "{{.Release}}",
			"--instance", "{{.Instance}}", "--integrate=false",
			"--worker", "--queue-ack-wait", w.ackWait().String(), "--flags", "{{.FlagsFile}}"}
	} else {
		rel.Args = []string{"node", "--data", w.cfg.Dir, "--listen", "{{.Listen}}", "--release", "{{.Release}}",
			"--instance", "{{.Instance}}", "--integrate=false"}
		rel.Args = append(rel.Args, w.queue.nodeArgs...)
		rel.Args = append(rel.Args, "--worker", "--queue-ack-wait", w.ackWait().String(), "--flags", flagsPath)
	}
	if spec.Fault != "" {
		if !w.cfg.Drill {
			return fleet.Release{}, errors.New("control: fault scenarios are honoured only in drill worlds")
		}
		rate := spec.FaultRate
		if rate == 0 {
			rate = 1
		}
		rel.Args = append(rel.Args, "--drill", "--fault", spec.Fault, "--fault-rate", fmt.Sprint(rate))
		rel.Labels = map[string]string{"drill-fault": spec.Fault}
	}
	if spec.SchemaMin > 0 {
		rel.SchemaMin = spec.SchemaMin
	}
	if spec.SchemaMax > 0 {
		rel.SchemaMax = spec.SchemaMax
	}
	rel.Args = append(rel.Args, "--schema-min", fmt.Sprint(rel.SchemaMin), "--schema-max", fmt.Sprint(rel.SchemaMax))
	if pass := os.Getenv(install.PassphraseEnv); pass != "" && w.cfg.Pods == nil {
		rel.Env = append(rel.Env, install.PassphraseEnv+"="+pass)
	}
	return rel, rel.Validate()
}

func (w *World) deploy(ctx context.Context, spec ReleaseSpec) (fleet.Revision, error) {
	if spec.Pool == "" {
		spec.Pool = PoolCanary
	}
	flagsPath, err := w.ensureReleaseFlags(ctx, spec)
	if err != nil {
		return fleet.Revision{}, err
	}
	rel, err := w.release(spec, flagsPath)
	if err != nil {
		return fleet.Revision{}, err
	}
	replicas := spec.Replicas
	if replicas <= 0 {
		replicas = w.cfg.Replicas
	}
	if err := w.rec.Record(ctx, "release.deploying", "pool/"+spec.Pool, map[string]any{"release": spec.ID, "fault": spec.Fault, "flags": flagsPath,
		"schema_min": rel.SchemaMin, "schema_max": rel.SchemaMax, "artifact_sha256": rel.SHA256}); err != nil {
		return fleet.Revision{}, err
	}
	rev, err := w.fleet.Deploy(ctx, spec.Pool, rel, replicas)
	if err != nil {
		return fleet.Revision{}, err
	}
	w.rec.note(TimelineEntry{Time: w.now(), Kind: "release.deployed", Subject: "pool/" + spec.Pool,
		Details: map[string]any{"release": spec.ID, "revision": rev.Number}})
	return rev, nil
}

// Deploy ships a release into a pool and sets its weight. Deploying into
// the canary pool leaves the stable pool at full size. A release contained
// by an alert while it rolled out (or with an open incident) is deployed
// but keeps the weight containment gave it.
func (w *World) Deploy(ctx context.Context, spec ReleaseSpec) (fleet.Revision, error) {
	rev, err := w.deploy(ctx, spec)
	if err != nil {
		return rev, err
	}
	if spec.Pool == PoolCanary || spec.Pool == "" {
		w.checkHealth(ctx)
		// Under routeMu: an alert on this release may have contained it
		// while it rolled out; its weight must then stay at 0.
		w.routeMu.Lock()
		defer w.routeMu.Unlock()
		inc, open, err := w.incidents.openFor(ctx, spec.ID)
		if err != nil {
			return rev, err
		}
		if w.contained[spec.ID] || open {
			// Deployed, but contained before it took traffic: the weight
			// stays where containment put it.
			w.log.Warn("release contained before its weight was set; weight unchanged", "release", spec.ID, "incident", inc.ID, "weight", spec.Weight)
			w.rec.note(TimelineEntry{Time: w.now(), Kind: "release.contained_before_traffic", Subject: "pool/" + spec.Pool,
				Details: map[string]any{"release": spec.ID, "weight_asked": spec.Weight, "incident": inc.ID}})
			return rev, nil
		}
		if err := w.router.SetWeights(gateway.WithActor(ctx, "release"), map[string]int{PoolStable: 100 - spec.Weight, PoolCanary: spec.Weight}); err != nil {
			return rev, err
		}
	}
	return rev, nil
}

// ensureProbeKey creates the probe tenant, token and key on first start.
func (w *World) ensureProbeKey(ctx context.Context) (token string, kvs []store.KeyVersion, err error) {
	return EnsureProbeIdentity(ctx, w.inst)
}

// EnsureProbeIdentity creates, once, the tenant, API token (written to
// <dir>/probe-token) and signing key the synthetic probes use, and returns
// the token and the key's versions. The control plane calls it at start;
// on Kubernetes run it before the soft-key Secret is made (countersign
// control --prepare), since node pods read keys only from that Secret.
func EnsureProbeIdentity(ctx context.Context, inst *install.Installation) (token string, kvs []store.KeyVersion, err error) {
	tokFile := filepath.Join(inst.Dir, "probe-token")
	if b, err := os.ReadFile(tokFile); err == nil {
		kvs, err := inst.Store.KeyVersions(ctx, ProbeTenant, ProbeKey)
		return strings.TrimSpace(string(b)), kvs, err
	}
	tok, err := inst.CreateTenant(ctx, ProbeTenant, "control")
	if err != nil && !errors.Is(err, store.ErrExists) {
		return "", nil, err
	}
	if errors.Is(err, store.ErrExists) {
		if tok, err = inst.CreateToken(ctx, ProbeTenant, "control"); err != nil {
			return "", nil, err
		}
	}
	if _, err := inst.Keys.Create(ctx, ProbeTenant, ProbeKey, keys.ECDSAP256, soft.Scheme, "control"); err != nil && !errors.Is(err, store.ErrExists) {
		return "", nil, err
	}
	if err := os.WriteFile(tokFile, []byte(string(tok)+"\n"), 0o600); err != nil {
		return "", nil, err
	}
	kvs, err = inst.Store.KeyVersions(ctx, ProbeTenant, ProbeKey)
	return string(tok), kvs, err
}

func (w *World) startProbes(ctx context.Context) error {
	tok, kvs, err := w.ensureProbeKey(ctx)
	if err != nil {
		return fmt.Errorf("control: probe identity: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(w.inst.CA.Cert)
	trust, err := probe.TrustSetFromKeyVersions(roots, kvs)
	if err != nil {
		return err
	}
	policy := &probe.Policy{Keys: []probe.KeyPolicy{{Tenant: ProbeTenant, Key: ProbeKey, Algorithm: keys.ECDSAP256, Digest: "sha256",
		MinVersion: kvs[0].Version, MaxVersion: kvs[len(kvs)-1].Version}}}
	w.detector = probe.NewDetector(probe.DetectorConfig{Now: w.now, OnAlert: func(a probe.Alert) {
		go w.onAlert(a) // hand off at once: containment budget
	}})
	w.prober, err = probe.New(probe.Config{
		Targets: probe.FleetTargets(w.fleet), Policy: policy, Trust: trust, Token: tok, Tenant: ProbeTenant,
		Interval: w.cfg.ProbeInterval, Sink: w.observe, Now: w.now, Logger: w.log,
	})
	if err != nil {
		return err
	}
	w.probeTok = tok
	w.goRun("prober", func(ctx context.Context) error { return w.prober.Run(ctx) })
	return nil
}

func (w *World) observe(f probe.Finding) {
	if f.Kind != probe.KindOK {
		w.rec.note(TimelineEntry{Time: f.Time, Kind: "probe." + string(f.Kind), Subject: "pool/" + f.Pool,
			Details: map[string]any{"release": f.Release, "instance": f.Instance, "format": f.Format, "detail": f.Detail}})
	}
	w.detector.Observe(f)
}

// onAlert opens an incident and, with AutoRun, starts the rollback playbook.
func (w *World) onAlert(a probe.Alert) {
	ctx := gateway.WithActor(w.runCtx, "detector")
	if _, open, err := w.incidents.openFor(ctx, a.Release); open || err != nil {
		if err != nil {
			w.log.Error("alert: look up incidents", "err", err)
		}
		return
	}
	// Contain before anything else (DESIGN: steps 1–2 run at once when the
	// installation allows it): stop sending traffic to the alerting pool
	// and refuse writes. Both changes are audited by the gateway's recorder
	// before they take effect. The playbook's block-ingress step finds them
	// done.
	var contained *time.Time
	if !w.cfg.NoAutoContain {
		t := w.contain(ctx, a)
		contained = &t
	}
	inc, err := w.incidents.open(ctx, string(a.Classification), a.Release, a.Pool, a.Reason, &a, contained)
	if err != nil {
		w.log.Error("open incident", "err", err)
		return
	}
	// From here the open incident keeps a deploy from raising the weight.
	w.routeMu.Lock()
	delete(w.contained, a.Release)
	w.routeMu.Unlock()
	w.log.Warn("incident opened", "incident", inc.ID, "classification", inc.Classification, "release", inc.Release, "reason", a.Reason)
	if !w.cfg.AutoRun {
		return
	}
	if _, err := w.StartPlaybook(ctx, inc.ID, "detector", nil); err != nil {
		w.log.Error("start rollback playbook", "incident", inc.ID, "err", err)
	}
}

// contain zeroes the weight of the alerting pool (unless it is the only
// pool) and turns the maintenance gate on.
func (w *World) contain(ctx context.Context, a probe.Alert) time.Time {
	w.routeMu.Lock()
	defer w.routeMu.Unlock()
	if w.contained == nil {
		w.contained = map[string]bool{}
	}
	w.contained[a.Release] = true
	if a.Pool != PoolStable {
		if err := w.router.SetWeights(ctx, map[string]int{PoolStable: 100, a.Pool: 0}); err != nil {
			w.log.Error("containment: zero weight", "pool", a.Pool, "err", err)
		}
	}
	if _, err := w.router.SetGate(ctx, gateway.Gate{On: true, RetryAfter: retryAfterSeconds(w.cfg.Params["retry_after"]), Reason: "alert on pool " + a.Pool + ": " + a.Reason}); err != nil {
		w.log.Error("containment: gate", "err", err)
	}
	now := w.now()
	w.rec.note(TimelineEntry{Time: now, Kind: "incident.contained", Subject: "pool/" + a.Pool, Details: map[string]any{"release": a.Release}})
	return now
}

// goRun runs f until the world closes, logging a failure.
func (w *World) goRun(name string, f func(ctx context.Context) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := f(w.runCtx); err != nil && !errors.Is(err, context.Canceled) {
			w.log.Error(name+" stopped", "err", err)
		}
	}()
}

func (w *World) serve(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	w.servers = append(w.servers, srv)
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}

// URLs reports where the world listens.
func (w *World) URLs() URLs { return URLs{Gateway: w.gwURL, Admin: w.adminURL, Control: w.ctlURL} }

// Token is the admin/control API token.
func (w *World) Token() string { return w.token }

// Installation exposes the data directory's store and keys.
func (w *World) Installation() *install.Installation { return w.inst }

// Gateway exposes the embedded gateway (state, counters); nil when the
// world routes through an external Router.
func (w *World) Gateway() *gateway.Gateway { return w.gw }

// Router is what the world routes through.
func (w *World) Router() traffic.Router { return w.router }

// Fleet exposes the fleet.
func (w *World) Fleet() fleet.Fleet { return w.fleet }

// Timeline returns what happened so far.
func (w *World) Timeline() []TimelineEntry { return w.rec.Timeline() }

// Incidents lists incidents, oldest first, each with its run's state. A
// store error yields what could be read and is logged.
func (w *World) Incidents() []Incident {
	incs, err := w.ListIncidents(w.runCtx)
	if err != nil {
		w.log.Error("list incidents", "err", err)
	}
	return incs
}

// Close stops everything: control API, probes, fleet processes (gracefully),
// gateway, integrator, store. Later calls return the first call's result.
func (w *World) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.close() })
	return w.closeErr
}

func (w *World) close() error {
	w.ready.Store(false)
	if w.cfg.WriteEndpoints {
		os.Remove(filepath.Join(w.cfg.Dir, EndpointsFile))
	}
	w.cancel()
	var errs []error
	shCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if w.local != nil {
		errs = append(errs, w.local.Shutdown(shCtx))
	}
	for _, s := range w.servers {
		s.Shutdown(shCtx)
	}
	w.wg.Wait()
	errs = append(errs, w.queue.close())
	if w.inst != nil {
		errs = append(errs, w.inst.Close())
	}
	return errors.Join(errs...)
}

func adminToken(dir string) (string, error) {
	p := filepath.Join(dir, AdminTokenFile)
	if b, err := os.ReadFile(p); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := "csa_" + hex.EncodeToString(b[:])
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}
