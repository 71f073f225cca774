package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/fleet/kube"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
	"github.com/countersign/countersign/internal/traffic/httproute"
)

// kubeFlags are the flags of a control plane that drives Kubernetes
// (countersign control, and playbook plan|run --fleet kube).
type kubeFlags struct {
	fleet          string
	kubeconfig     string
	kubeContext    string
	namespace      string
	image          string
	queueURL       string
	nats           string
	podDataDir     string
	traffic        string
	route          string
	gatewayAdmin   string
	gatewayURL     string
	adminTokenFile string
	poolEndpoints  paramFlag
	readyTimeout   time.Duration
	snapshotStore  string
}

// Traffic backends of a Kubernetes control plane.
const (
	trafficHTTPRoute    = "httproute"
	trafficGatewayAdmin = "gateway-admin"
)

func (k *kubeFlags) register(env *cliEnv, fs *flag.FlagSet) {
	k.poolEndpoints = paramFlag{}
	fs.StringVar(&k.fleet, "fleet", "", `where releases run: "kube" (Kubernetes Deployments); empty: the local fleet of 'countersign up'`)
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config, or the pod's ServiceAccount in a cluster)")
	fs.StringVar(&k.kubeContext, "kube-context", "", "kubeconfig context (default: its current context)")
	fs.StringVar(&k.namespace, "namespace", kube.DefaultNamespace, "namespace of the Countersign objects")
	fs.StringVar(&k.image, "image", "", "countersign image pinned by digest (repo@sha256:HEX) that releases run")
	fs.StringVar(&k.queueURL, "queue-url", env.getenv("COUNTERSIGN_QUEUE_URL"),
		"the queue the pools' workers use: nats://HOST:4222[,...] (NATS JetStream) or kafka://HOST:9092[,...][/TOPIC][?OPTIONS] (env COUNTERSIGN_QUEUE_URL)")
	fs.StringVar(&k.nats, "nats", env.getenv("COUNTERSIGN_NATS_URL"), "NATS JetStream URL(s): the older spelling of --queue-url for NATS (env COUNTERSIGN_NATS_URL)")
	fs.StringVar(&k.podDataDir, "pod-data-dir", control.DefaultPodDataDir, "where the manifests mount the installation in node pods")
	fs.StringVar(&k.traffic, "traffic", trafficHTTPRoute, `what routes: "httproute" (a Gateway API HTTPRoute) or "gateway-admin" (countersign gateway's admin API)`)
	fs.StringVar(&k.route, "route", httproute.DefaultRoute, "HTTPRoute name (--traffic httproute)")
	fs.StringVar(&k.gatewayAdmin, "gateway-admin", "", "admin API URL of countersign gateway (--traffic gateway-admin)")
	fs.StringVar(&k.gatewayURL, "gateway-url", "", "data-plane URL clients use (reported; the drill's load uses it)")
	fs.StringVar(&k.adminTokenFile, "admin-token-file", "", "file holding the gateway admin token (--traffic gateway-admin)")
	fs.Var(k.poolEndpoints, "pool-endpoint", "POOL=URL: reach a pool's pods at URL instead of its Service DNS name (repeatable; for a control plane outside the cluster)")
	fs.DurationVar(&k.readyTimeout, "ready-timeout", kube.DefaultReadyTimeout, "how long a rollout or scale may take")
	fs.StringVar(&k.snapshotStore, "snapshot-store", "", "where incident snapshots go: s3://BUCKET[/PREFIX]?endpoint=...&mode=compliance (docs/snapshots-s3.md); default DIR/snapshots")
}

// enabled reports whether --fleet kube was given; any other non-empty
// value is a usage error.
func (k *kubeFlags) enabled() (bool, error) {
	switch k.fleet {
	case "":
		return false, nil
	case "kube":
		return true, nil
	}
	return false, usageError("--fleet %q: want kube (or leave it unset for the local fleet)", k.fleet)
}

// queue is the queue URL of --queue-url or --nats.
func (k *kubeFlags) queue() (string, error) { return resolveQueueURL(k.queueURL, k.nats) }

// worldConfig fills cfg's Kubernetes backends from the flags.
func (k *kubeFlags) worldConfig(ctx context.Context, cfg *control.Config, logger *slog.Logger) error {
	qurl, err := k.queue()
	if err != nil {
		return err
	}
	if k.image == "" || qurl == "" {
		return usageError("--fleet kube needs --image REPO@sha256:HEX and --queue-url URL")
	}
	client, rc, err := kube.ClientFromKubeconfig(k.kubeconfig, k.kubeContext)
	if err != nil {
		return err
	}
	kc := kube.Config{Client: client, Namespace: k.namespace, ReadyTimeout: k.readyTimeout, DataDir: k.podDataDir, Logger: logger}
	if len(k.poolEndpoints) > 0 {
		eps := map[string]string(k.poolEndpoints)
		kc.Endpoint = func(pool string) string { return eps[pool] }
	}
	f, err := kube.New(kc)
	if err != nil {
		return err
	}
	router, err := k.router(rc, logger)
	if err != nil {
		return err
	}
	cfg.Fleet, cfg.Router, cfg.QueueURL, cfg.GatewayURL = f, router, qurl, k.gatewayURL
	cfg.Pods = &control.PodSpec{Image: k.image, DataDir: k.podDataDir}
	if cfg.SnapshotStore, err = openSnapshotStore(ctx, k.snapshotStore, logger); err != nil {
		return err
	}
	return checkNoClusterControl(ctx, client, k.namespace, cfg.ControlListen)
}

func (k *kubeFlags) router(rc *rest.Config, logger *slog.Logger) (func(gateway.Recorder) (traffic.Router, error), error) {
	switch k.traffic {
	case trafficHTTPRoute:
		dc, err := dynamic.NewForConfig(rc)
		if err != nil {
			return nil, err
		}
		pools := map[string]httproute.Backend{}
		for _, p := range []string{control.PoolStable, control.PoolCanary} {
			pools[p] = httproute.Backend{Service: "countersign-node-" + p, Port: kube.Port}
		}
		return func(rec gateway.Recorder) (traffic.Router, error) {
			return httproute.New(httproute.Config{Client: dc, Namespace: k.namespace, Route: k.route, Pools: pools,
				Maintenance: httproute.Backend{Service: "countersign-maintenance", Port: 8080}, Recorder: rec, Logger: logger})
		}, nil
	case trafficGatewayAdmin:
		if k.gatewayAdmin == "" || k.adminTokenFile == "" {
			return nil, usageError("--traffic gateway-admin needs --gateway-admin URL and --admin-token-file FILE")
		}
		b, err := os.ReadFile(k.adminTokenFile)
		if err != nil {
			return nil, err
		}
		c := gateway.NewAdminClient(k.gatewayAdmin, strings.TrimSpace(string(b)), nil)
		return func(gateway.Recorder) (traffic.Router, error) { return traffic.Admin(c, k.gatewayAdmin), nil }, nil
	}
	return nil, usageError("--traffic %q: want %s or %s", k.traffic, trafficHTTPRoute, trafficGatewayAdmin)
}

// checkNoClusterControl refuses to start a second control plane beside the
// in-cluster one (countersign-control with ready replicas) unless this is
// that one: two control planes would drive the same pools and integrate
// the same audit log.
func checkNoClusterControl(ctx context.Context, c kubernetes.Interface, ns, listen string) error {
	if os.Getenv("COUNTERSIGN_IN_CLUSTER_CONTROL") == "1" {
		return nil // the manifests set this on the control Deployment itself
	}
	d, err := c.AppsV1().Deployments(ns).Get(ctx, "countersign-control", metav1.GetOptions{})
	if err != nil {
		return nil // absent (or not readable): nothing runs there to collide with
	}
	if d.Status.ReadyReplicas > 0 {
		return fmt.Errorf("the in-cluster control plane %s/countersign-control has %d ready replica(s): drive it through its control API "+
			"instead of starting a second control plane, or scale it to 0 first", ns, d.Status.ReadyReplicas)
	}
	return nil
}

// startKubeControl runs a control plane in this process for the duration
// of a playbook command (playbook plan|run --fleet kube): it drives the
// cluster's pools and route, and its control API on a loopback port is
// what the command then talks to, exactly as to 'countersign control'.
func startKubeControl(ctx context.Context, env *cliEnv, kf *kubeFlags, data string) (*control.World, error) {
	dir, err := filepath.Abs(data)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if _, err := flags.EnsureFile(control.FlagsPath(dir)); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, control.EndpointsFile))
	// Contain-on-alert and auto-run stay off: this process is here to run
	// the operator's command, not to react to probes on its own.
	cfg := control.Config{Dir: dir, ControlListen: "127.0.0.1:0", NoAutoContain: true, WriteEndpoints: true, Logger: logger}
	if err := kf.worldConfig(ctx, &cfg, logger); err != nil {
		return nil, err
	}
	return control.Start(ctx, cfg)
}
