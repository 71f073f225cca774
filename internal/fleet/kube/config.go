package kube

import (
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/countersign/countersign/internal/fleet"
)

// Defaults for Config fields left zero.
const (
	DefaultNamespace    = "countersign"
	DefaultFieldManager = "countersign-control"
	// DefaultReadyTimeout bounds a rollout; images are pulled on real
	// clusters, so it is longer than fleet/local's.
	DefaultReadyTimeout = 5 * time.Minute
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultKillSlack is how long a terminating pod may outlive its grace
	// period before a drain counts it as killed.
	DefaultKillSlack = 2 * time.Second
	// DefaultDataDir is the node's data directory inside the pod; the
	// manifests mount a volume there.
	DefaultDataDir = "/var/lib/countersign"
)

// Port is the node's HTTP port in the pod (container port "http").
const Port = 7300

// Config configures a Kubernetes fleet.
type Config struct {
	// Client talks to the API server. Required. ClientFromKubeconfig
	// builds one.
	Client kubernetes.Interface
	// Namespace holds the pools; default DefaultNamespace.
	Namespace string
	// FieldManager names this writer in server-side apply; default
	// DefaultFieldManager.
	FieldManager string
	// DeploymentName maps a pool to its Deployment; default
	// "countersign-node-<pool>". Listing pools reads the
	// countersign.dev/pool label, so a custom mapping must keep it.
	DeploymentName func(pool string) string
	// Endpoint is the base URL that reaches a pool's ready pods, reported
	// by Status; default the pool's Service,
	// http://<deployment>.<namespace>.svc:7300.
	Endpoint func(pool string) string
	// ReadyTimeout bounds the wait for a rollout or a scale to complete.
	ReadyTimeout time.Duration
	// PollInterval is the period of reading Deployments and pods while
	// waiting.
	PollInterval time.Duration
	// KillSlack: a draining pod still present this long after its grace
	// period ended is counted as killed.
	KillSlack time.Duration
	// DataDir is .DataDir for argument templates; default DefaultDataDir.
	DataDir string
	// ListenArgs are appended to a release's Args when none mentions
	// .Listen or .Port; default ["--listen", "{{.Listen}}"].
	ListenArgs []string
	// Customize, if set, may add fields to the pod template applied for a
	// release (resources, node selectors) after this package has set its
	// own. It is not called on a rollback, which copies an earlier
	// template as it was.
	Customize func(pool string, rel fleet.Release, tmpl *corev1ac.PodTemplateSpecApplyConfiguration) error
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock of known-good and failed marks; default time.Now.
	Now func() time.Time
}

// Fleet drives pool Deployments. It implements fleet.Fleet and
// fleet.Planner.
type Fleet struct {
	cfg Config
	c   kubernetes.Interface
	ns  string
	log *slog.Logger

	opsMu sync.Mutex             // guards ops
	ops   map[string]*sync.Mutex // one operation per pool at a time
}

var (
	_ fleet.Fleet   = (*Fleet)(nil)
	_ fleet.Planner = (*Fleet)(nil)
)

// New checks cfg and fills in defaults. It makes no request.
func New(cfg Config) (*Fleet, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: fleet/kube: Client is required", fleet.ErrInvalid)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.FieldManager == "" {
		cfg.FieldManager = DefaultFieldManager
	}
	if cfg.DeploymentName == nil {
		cfg.DeploymentName = func(pool string) string { return "countersign-node-" + pool }
	}
	if cfg.Endpoint == nil {
		ns, name := cfg.Namespace, cfg.DeploymentName
		cfg.Endpoint = func(pool string) string {
			return "http://" + name(pool) + "." + ns + ".svc:" + strconv.Itoa(Port)
		}
	}
	setDefault(&cfg.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&cfg.PollInterval, DefaultPollInterval)
	setDefault(&cfg.KillSlack, DefaultKillSlack)
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if len(cfg.ListenArgs) == 0 {
		cfg.ListenArgs = []string{"--listen", "{{.Listen}}"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Fleet{cfg: cfg, c: cfg.Client, ns: cfg.Namespace, log: cfg.Logger, ops: map[string]*sync.Mutex{}}, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func checkPool(pool string) error {
	if !poolNameRE.MatchString(pool) {
		return fmt.Errorf("%w: pool name %q must match %s", fleet.ErrInvalid, pool, poolNameRE)
	}
	return nil
}

// lockPool serializes operations on one pool and returns the unlock.
func (f *Fleet) lockPool(pool string) (func(), error) {
	if err := checkPool(pool); err != nil {
		return nil, err
	}
	f.opsMu.Lock()
	m, ok := f.ops[pool]
	if !ok {
		m = &sync.Mutex{}
		f.ops[pool] = m
	}
	f.opsMu.Unlock()
	m.Lock()
	return m.Unlock, nil
}
