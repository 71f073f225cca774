package kubetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running test control plane. Its fields are read-only.
type Cluster struct {
	Dir        string       // working dir (certs, logs, kubeconfig)
	Kubeconfig string       // admin kubeconfig path (token in group system:masters)
	Config     *rest.Config // admin
	Client     kubernetes.Interface

	log     *slog.Logger
	ownsDir bool
	procs   []*process // in start order: etcd first

	stopOnce sync.Once
	stopErr  error

	gatewayMu        sync.Mutex
	gatewayInstalled bool
}

// Options configure Start.
type Options struct {
	// Dir is the working directory. Empty: a new temporary directory, which
	// Stop removes. A given Dir is kept (its etcd data is reset by Start).
	Dir string
	// Logger receives progress (process starts, readiness, timings); nil
	// discards it.
	Logger *slog.Logger
	// Nodes is the number of KWOK nodes; 0 means 1.
	Nodes int
}

const (
	startTimeout = 2 * time.Minute
	stopGrace    = 10 * time.Second
	tailN        = 15 // log lines of each process in a Start error
)

// errPortInUse marks a start that lost a race for a port picked by
// freePorts; Start retries those with new ports.
var errPortInUse = errors.New("address already in use")

// Start builds nothing: it runs the binaries made by scripts/kube-testbed.sh
// build (dir from env COUNTERSIGN_KUBE_BIN, default
// $HOME/.cache/countersign/kube-v1.37.2/bin): etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok on free loopback ports;
// it waits for /readyz, for the controller manager to have created the
// default ServiceAccount and for every KWOK node to be Ready. A missing
// binary fails at once with an error naming it and the build command; any
// other failure stops what was started and includes the last log lines of
// every process.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	began := time.Now()
	binDir, err := binDir()
	if err != nil {
		return nil, err
	}
	bins, err := binaryPaths(binDir)
	if err != nil {
		return nil, err
	}
	stages, err := kwokStageFiles()
	if err != nil {
		return nil, err
	}
	if o.Nodes < 0 {
		return nil, fmt.Errorf("kubetest: Options.Nodes = %d, want >= 0", o.Nodes)
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	for attempt := 1; ; attempt++ {
		c, err := newCluster(o)
		if err != nil {
			return nil, err
		}
		err = c.start(ctx, bins, stages, o.Nodes)
		if err == nil {
			c.log.Info("kubetest: cluster up", "dir", c.Dir, "server", c.Config.Host,
				"nodes", o.Nodes, "elapsed", time.Since(began).Round(time.Millisecond))
			return c, nil
		}
		if stopErr := c.Stop(); stopErr != nil {
			c.log.Warn("kubetest: stop after failed start", "err", stopErr)
		}
		if !errors.Is(err, errPortInUse) || attempt == 3 {
			return nil, err
		}
		c.log.Info("kubetest: port taken by another process, retrying with new ports", "attempt", attempt)
	}
}

func newCluster(o Options) (*Cluster, error) {
	c := &Cluster{log: o.Logger}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "kubetest-")
		if err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		c.Dir, c.ownsDir = d, true
	} else {
		d, err := filepath.Abs(o.Dir)
		if err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		// Old etcd data would hold objects signed by an old service-account key.
		if err := os.RemoveAll(layout{d}.etcdData()); err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		c.Dir = d
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, bins map[string]string, stages []string, nodes int) error {
	l := layout{c.Dir}
	p, err := freePorts(3)
	if err != nil {
		return err
	}
	pt := ports{EtcdClient: p[0], EtcdPeer: p[1], APIServer: p[2]}
	caPEM, token, err := writePKI(l)
	if err != nil {
		return err
	}
	server := loopbackURL("https", pt.APIServer)
	kc, err := renderKubeconfig(server, caPEM, adminUser, token, "")
	if err != nil {
		return fmt.Errorf("kubetest: kubeconfig: %w", err)
	}
	c.Kubeconfig = l.kubeconfig()
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	c.Config, err = clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		return fmt.Errorf("kubetest: kubeconfig: %w", err)
	}
	// Tests create objects in bursts; the client-side default (5 QPS) would
	// make them wait on the client rather than on the cluster.
	c.Config.QPS, c.Config.Burst = 100, 200
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("kubetest: client: %w", err)
	}

	t0 := time.Now()
	if err := c.run("etcd", bins["etcd"], etcdArgs(l, pt)); err != nil {
		return err
	}
	if err := c.run("kube-apiserver", bins["kube-apiserver"], apiserverArgs(l, pt)); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver /readyz", c.apiserverReady); err != nil {
		return err
	}
	c.log.Info("kubetest: apiserver ready", "elapsed", time.Since(t0).Round(time.Millisecond))
	for _, s := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", controllerManagerArgs(l)},
		{"kube-scheduler", schedulerArgs(l)},
		{"kwok", kwokArgs(l, stages)},
	} {
		if err := c.run(s.name, bins[s.name], s.args); err != nil {
			return err
		}
	}
	if err := c.createNodes(ctx, nodes); err != nil {
		return c.withTails(err)
	}
	if err := c.waitFor(ctx, fmt.Sprintf("%d KWOK node(s) Ready", nodes), c.nodesReady(nodes)); err != nil {
		return err
	}
	// The controller manager creates each namespace's default ServiceAccount;
	// once it exists, ReplicaSets can create pods.
	return c.waitFor(ctx, "ServiceAccount default/default (controller manager)", c.defaultServiceAccount)
}

func (c *Cluster) run(name, bin string, args []string) error {
	p, err := startProcess(name, bin, layout{c.Dir}.log(name), args, os.Environ())
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	c.log.Debug("kubetest: started", "process", name, "pid", p.cmd.Process.Pid, "log", p.log)
	return nil
}

func (c *Cluster) apiserverReady(ctx context.Context) (bool, error) {
	body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err == nil && strings.TrimSpace(string(body)) == "ok", nil
}

// waitFor polls cond every 100 ms until it is true, ctx ends or a process
// exits; errors carry the last log lines of every process.
func (c *Cluster) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range c.procs {
			if done, err := p.exited(); done {
				return c.withTails(fmt.Errorf("kubetest: %s exited (%v) while waiting for %s", p.name, err, what))
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			return c.withTails(fmt.Errorf("kubetest: waiting for %s: %w", what, err))
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return c.withTails(fmt.Errorf("kubetest: waiting for %s: %w", what, ctx.Err()))
		case <-tick.C:
		}
	}
}

// withTails appends the last log lines of every process to err, and marks
// it errPortInUse when a process lost a port race.
func (c *Cluster) withTails(err error) error {
	var b strings.Builder
	portRace := false
	for _, p := range c.procs {
		fmt.Fprintf(&b, "\n  %s (%s):\n%s", p.name, p.log, p.logTail(tailN))
		if data, rerr := os.ReadFile(p.log); rerr == nil && strings.Contains(string(data), "address already in use") {
			portRace = true
		}
	}
	if portRace {
		return fmt.Errorf("%w [%w]%s", err, errPortInUse, b.String())
	}
	return fmt.Errorf("%w%s", err, b.String())
}

// Stop stops every process, etcd last (the others then shut down in
// seconds instead of retrying etcd), and removes Dir if Start created it.
// It reports processes that had crashed before Stop. Idempotent.
func (c *Cluster) Stop() error { return c.stop(false) }

// stop with keep leaves Dir in place (logs of a failed test run).
func (c *Cluster) stop(keep bool) error {
	c.stopOnce.Do(func() {
		var errs []error
		var etcd *process
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range c.procs {
			if p.name == "etcd" {
				etcd = p
				continue
			}
			wg.Go(func() {
				if err := p.stop(stopGrace); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if etcd != nil {
			if err := etcd.stop(stopGrace); err != nil {
				errs = append(errs, err)
			}
		}
		if c.ownsDir && !keep {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("kubetest: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// freePorts returns n distinct loopback ports that were free a moment ago;
// all n listeners are open together so the kernel cannot hand one out twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubetest: free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
