// Package podrun stands in for the kubelet and the Service proxy of the
// test control plane, for Countersign's own pods only.
//
// KWOK marks pods Running and Ready without running anything, so on the
// testbed nothing would answer behind a node Service. podrun closes that
// gap: it runs one container of each Running pod the selector picks as a
// local process of the countersign binary the image stands for (refused,
// as an image pull would be, when the image's digest is not the binary's
// SHA-256), with the pod's arguments and environment as the kubelet would
// give them ($(VAR) expansion, downward API, Secret and ConfigMap
// references) and its volumes laid out from the API (emptyDir, ConfigMap
// and Secret, subPath included) in a directory standing in for its file
// system. Each pool's Service is a loopback
// reverse proxy balancing over the pool's ready processes. A pod that is
// deleted (or scaled away) gets SIGTERM and, after its grace period,
// SIGKILL — as on a node.
//
// It is a test harness, named for what it replaces: the playbook and the
// fleet drive the real API server; only "run this container" is emulated.
package podrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/countersign/countersign/internal/fleet"
)

// Config says which pods to run and how.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	// Selector picks the pods to run, e.g.
	// "app.kubernetes.io/name=countersign,app.kubernetes.io/component=node".
	Selector string
	// PoolLabel is the pod label naming its pool (and Service):
	// countersign.dev/pool.
	PoolLabel string
	// Container is the container of the pod to run (default "node").
	Container string
	// Binary stands in for the container image.
	Binary string
	// Mounts maps the mountPath of a Secret volume to a local directory
	// holding what the Secret would (e.g. the installation directory).
	Mounts map[string]string
	// Env is appended to every process's environment.
	Env []string
	// Dir holds materialised ConfigMaps and process logs.
	Dir      string
	Interval time.Duration // how often pods are listed (default 200ms)
	Logger   *slog.Logger
}

// Runner runs pods' containers; see the package doc.
type Runner struct {
	cfg    Config
	digest string
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	procs map[string]*proc    // pod UID → running process
	pools map[string]*service // pool → its Service stand-in
}

// Start checks the binary and begins reconciling pods.
func Start(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.Selector == "" || cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("podrun: Client, Namespace, Selector, Binary and Dir are required")
	}
	if cfg.Container == "" {
		cfg.Container = "node"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sum, err := fleet.FileSHA256(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("podrun: %w", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Runner{cfg: cfg, digest: sum, log: cfg.Logger, cancel: cancel, done: make(chan struct{}),
		procs: map[string]*proc{}, pools: map[string]*service{}}
	go r.loop(ctx)
	return r, nil
}

// Digest is the SHA-256 of the binary: an image "repo@sha256:<Digest>"
// runs here.
func (r *Runner) Digest() string { return r.digest }

// ServiceURL is the loopback address standing in for the pool's Service.
// It is stable for the Runner's life; with no ready process behind it, it
// answers 503.
func (r *Runner) ServiceURL(pool string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.pools[pool]; ok {
		return s.url, nil
	}
	s, err := newService(pool)
	if err != nil {
		return "", err
	}
	r.pools[pool] = s
	return s.url, nil
}

// Running returns the names of the pods whose process runs, sorted.
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.procs {
		out = append(out, p.pod)
	}
	sort.Strings(out)
	return out
}

// Stop stops every process (SIGTERM, then SIGKILL) and every Service.
func (r *Runner) Stop() error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	procs := r.procs
	r.procs = map[string]*proc{}
	pools := r.pools
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(10 * time.Second) }()
	}
	wg.Wait()
	for _, s := range pools {
		s.close()
	}
	return nil
}

// loop reconciles on every pod event (a watch, so a terminating pod leaves
// its Service as soon as the API server says so, before the pod object is
// gone) and every Interval.
func (r *Runner) loop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	var wi watch.Interface
	var events <-chan watch.Event
	defer func() {
		if wi != nil {
			wi.Stop()
		}
	}()
	for {
		if events == nil {
			if wi != nil {
				wi.Stop()
			}
			var err error
			if wi, err = r.cfg.Client.CoreV1().Pods(r.cfg.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: r.cfg.Selector}); err == nil {
				events = wi.ResultChan()
			} else {
				wi = nil
			}
		}
		if err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("podrun: reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		case <-t.C:
		}
	}
}

// reconcile starts a process for every Running pod without one and stops
// the processes of pods that are gone or terminating.
func (r *Runner) reconcile(ctx context.Context) error {
	pods, err := r.cfg.Client.CoreV1().Pods(r.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: r.cfg.Selector})
	if err != nil {
		return err
	}
	want := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			want[string(p.UID)] = p
		}
	}
	r.mu.Lock()
	var stop []*proc
	for uid, p := range r.procs {
		if _, ok := want[uid]; !ok {
			stop = append(stop, p)
			delete(r.procs, uid)
		}
	}
	var start []*corev1.Pod
	for uid, p := range want {
		if _, ok := r.procs[uid]; !ok {
			start = append(start, p)
		}
	}
	r.mu.Unlock()
	for _, p := range stop {
		r.serviceOf(p.pool).remove(p.url)
		go func() {
			grace := p.grace
			p.stop(grace)
			r.log.Info("podrun: stopped", "pod", p.pod, "killed", p.killed.Load())
		}()
	}
	for _, pod := range start {
		p, err := r.run(ctx, pod)
		if err != nil {
			r.log.Warn("podrun: cannot run pod", "pod", pod.Name, "err", err)
			r.mu.Lock()
			// Remember the failure so the pod is not retried every tick;
			// a new pod (new UID) is tried afresh.
			r.procs[string(pod.UID)] = &proc{pod: pod.Name, failed: true}
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		r.procs[string(pod.UID)] = p
		r.mu.Unlock()
		go r.admitWhenReady(ctx, p)
	}
	return nil
}

func (r *Runner) serviceOf(pool string) *service {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.pools[pool]
	if !ok {
		var err error
		if s, err = newService(pool); err != nil {
			r.log.Error("podrun: service", "pool", pool, "err", err)
			return &service{}
		}
		r.pools[pool] = s
	}
	return s
}

// admitWhenReady adds the process to its pool's Service once /readyz
// answers 200, as endpoints follow readiness.
func (r *Runner) admitWhenReady(ctx context.Context, p *proc) {
	hc := &http.Client{Timeout: time.Second}
	for i := 0; i < 600; i++ {
		if p.exited.Load() || ctx.Err() != nil {
			return
		}
		resp, err := hc.Get(p.url + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.serviceOf(p.pool).add(p.url)
				r.log.Info("podrun: ready", "pod", p.pod, "url", p.url)
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.log.Warn("podrun: never ready", "pod", p.pod)
}

// service is a pool's Service: a loopback reverse proxy over its ready
// processes, round robin.
type service struct {
	url  string
	srv  *http.Server
	next atomic.Uint64

	mu       sync.Mutex
	backends []string
}

func newService(pool string) (*service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("podrun: service %s: %w", pool, err)
	}
	s := &service{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// holdFor is how long a request waits for a ready process behind its
// Service. On KWOK a new pod is Ready the moment it is scheduled and the
// old one goes at once, while the process standing in for it needs a
// moment to open its keys: a request arriving in that gap waits, as a
// client of a real Service would not have noticed the handover.
const holdFor = 15 * time.Second

func (s *service) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var bs []string
	for deadline := time.Now().Add(holdFor); ; {
		s.mu.Lock()
		bs = s.backends
		s.mu.Unlock()
		if len(bs) > 0 || time.Now().After(deadline) || req.Context().Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(bs) == 0 {
		http.Error(w, "podrun: no ready endpoints behind this Service", http.StatusServiceUnavailable)
		return
	}
	u, err := url.Parse(bs[s.next.Add(1)%uint64(len(bs))])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, req)
}

func (s *service) add(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backends = append(s.backends, u)
}

func (s *service) remove(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.backends[:0:0]
	for _, b := range s.backends {
		if b != u {
			out = append(out, b)
		}
	}
	s.backends = out
}

func (s *service) close() {
	if s.srv != nil {
		s.srv.Close()
	}
}

// localPath maps a path inside the pod to the local file system through
// the pod's volume mounts.
func localPath(p string, mounts map[string]string) (string, bool) {
	best := ""
	for m := range mounts {
		if (p == m || strings.HasPrefix(p, strings.TrimSuffix(m, "/")+"/")) && len(m) > len(best) {
			best = m
		}
	}
	if best == "" {
		return p, false
	}
	return filepath.Join(mounts[best], strings.TrimPrefix(p, best)), true
}
