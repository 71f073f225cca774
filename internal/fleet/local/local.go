package local

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/fleet"
)

// EndpointSink learns the base URLs of a pool's replicas whenever the set
// changes: after new replicas are ready and before old ones stop (deploy,
// scale up), and before replicas stop (scale down, drain: an empty set).
// Wire it to the gateway's SetPool so traffic follows the fleet. If it
// fails, the operation fails and the previous replicas keep running.
type EndpointSink func(ctx context.Context, pool string, endpoints []string) error

// Defaults for Config fields left zero.
const (
	DefaultReadyTimeout      = 30 * time.Second
	DefaultReadyInterval     = 50 * time.Millisecond
	DefaultStopTimeout       = 30 * time.Second
	DefaultRestartBackoffMin = 100 * time.Millisecond
	DefaultRestartBackoffMax = 10 * time.Second
	DefaultBackoffReset      = 10 * time.Second
)

// Config configures a local fleet.
type Config struct {
	// StateDir holds fleet.json (revision history), artifacts/ (verified
	// copies), logs/ (one file per replica, stdout and stderr) and data/
	// (one working directory per replica). Required.
	StateDir string
	// ListenArgs are appended to a release's Args when none mentions
	// .Listen or .Port; default ["--listen", "{{.Listen}}"].
	ListenArgs []string
	// ReadyTimeout bounds the wait for new replicas to answer /readyz.
	ReadyTimeout time.Duration
	// ReadyInterval is the /readyz polling period.
	ReadyInterval time.Duration
	// StopTimeout is the grace period between SIGTERM and SIGKILL.
	StopTimeout time.Duration
	// RestartBackoffMin/Max bound the delay before restarting a replica that
	// exited unasked; the delay doubles per crash and is reset once a
	// replica has run for BackoffReset.
	RestartBackoffMin, RestartBackoffMax, BackoffReset time.Duration
	// Env is added to every replica's environment (after this process's
	// own, before the release's Env), KEY=value. Unlike a release's Args
	// and Env it is not recorded in fleet.json, so it may carry secrets
	// (an external queue URL with a password); it reaches every release.
	Env []string
	// Endpoints, if set, is told when a pool's endpoints change.
	Endpoints EndpointSink
	// Now is the clock of revision timestamps; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Fleet supervises node processes on this machine. It implements
// fleet.Fleet.
type Fleet struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client

	opsMu sync.Mutex             // guards ops
	ops   map[string]*sync.Mutex // one operation per pool at a time

	mu      sync.Mutex // guards st, running, live, closed
	st      *persisted
	running map[string][]*replica // the replicas of each pool's current revision
	live    map[*replica]bool     // every replica whose supervision has not ended
	closed  bool
}

var _ fleet.Fleet = (*Fleet)(nil)

// New opens (or creates) the state directory and loads the history. It
// starts nothing: call Resume to bring back the replicas the history says
// should run.
func New(cfg Config) (*Fleet, error) {
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: StateDir is required", fleet.ErrInvalid)
	}
	if len(cfg.ListenArgs) == 0 {
		cfg.ListenArgs = []string{"--listen", "{{.Listen}}"}
	}
	setDefault(&cfg.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&cfg.ReadyInterval, DefaultReadyInterval)
	setDefault(&cfg.StopTimeout, DefaultStopTimeout)
	setDefault(&cfg.RestartBackoffMin, DefaultRestartBackoffMin)
	setDefault(&cfg.RestartBackoffMax, DefaultRestartBackoffMax)
	setDefault(&cfg.BackoffReset, DefaultBackoffReset)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, d := range []string{"", "artifacts", "logs", "data"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o750); err != nil {
			return nil, fmt.Errorf("fleet/local: %w", err)
		}
	}
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Fleet{cfg: cfg, log: cfg.Logger, st: st, running: map[string][]*replica{}, live: map[*replica]bool{}, ops: map[string]*sync.Mutex{},
		http: &http.Client{Timeout: time.Second}}, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

var poolNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// lockPool serializes operations on one pool and returns the unlock.
func (f *Fleet) lockPool(pool string) (func(), error) {
	if !poolNameRE.MatchString(pool) {
		return nil, fmt.Errorf("%w: pool name %q must match %s", fleet.ErrInvalid, pool, poolNameRE)
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

// Deploy implements fleet.Fleet.
func (f *Fleet) Deploy(ctx context.Context, pool string, rel fleet.Release, replicas int) (fleet.Revision, error) {
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.Revision{}, err
	}
	defer unlock()
	return f.deployLocked(ctx, pool, rel, replicas, 0)
}

// deployLocked runs a deploy; the pool's operation lock must be held.
func (f *Fleet) deployLocked(ctx context.Context, pool string, rel fleet.Release, replicas, rollbackOf int) (fleet.Revision, error) {
	if replicas < 0 {
		return fleet.Revision{}, fmt.Errorf("%w: %d replicas", fleet.ErrInvalid, replicas)
	}
	if err := rel.Validate(); err != nil {
		return fleet.Revision{}, err
	}
	exe, err := f.installArtifact(rel)
	if err != nil {
		return fleet.Revision{}, err
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fleet.Revision{}, errClosed
	}
	ps := f.poolLocked(pool)
	rev := fleet.Revision{Pool: pool, Number: ps.nextNumber(), Release: rel.Clone(), CreatedAt: f.cfg.Now().UTC(),
		Status: fleet.StatusDeploying, RollbackOf: rollbackOf}
	ps.Revisions = append(ps.Revisions, rev)
	err = f.saveLocked()
	f.mu.Unlock()
	if err != nil {
		return fleet.Revision{}, err
	}
	log := f.log.With("pool", pool, "revision", rev.Number, "release", rel.ID)
	log.InfoContext(ctx, "fleet: deploying", "replicas", replicas, "rollback_of", rollbackOf)

	fresh, err := f.startReplicas(ctx, rev, exe, 0, replicas)
	if err == nil {
		err = f.waitReady(ctx, fresh)
	}
	if err == nil && f.cfg.Endpoints != nil {
		err = f.cfg.Endpoints(ctx, pool, urlsOf(fresh))
	}
	if err != nil {
		stopAll(fresh)
		f.setStatus(pool, rev.Number, fleet.StatusFailed)
		log.ErrorContext(ctx, "fleet: deploy failed, previous revision kept", "err", err)
		return fleet.Revision{}, fmt.Errorf("fleet/local: deploy %s to %s: %w", rel.ID, pool, err)
	}

	f.mu.Lock()
	old := f.running[pool]
	f.running[pool] = fresh
	ps = f.st.Pools[pool]
	for i := range ps.Revisions {
		if ps.Revisions[i].Status == fleet.StatusCurrent {
			ps.Revisions[i].Status = fleet.StatusSuperseded
		}
	}
	cur := ps.revision(rev.Number)
	cur.Status = fleet.StatusCurrent
	ps.Desired = replicas
	rev = *cur
	err = f.saveLocked()
	f.mu.Unlock()
	stopAll(old)
	log.InfoContext(ctx, "fleet: deployed", "replaced", len(old))
	return rev, err
}

func (f *Fleet) poolLocked(pool string) *poolState {
	ps, ok := f.st.Pools[pool]
	if !ok {
		ps = &poolState{}
		f.st.Pools[pool] = ps
	}
	return ps
}

func (f *Fleet) setStatus(pool string, number int, s fleet.RevisionStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.st.Pools[pool].revision(number); r != nil {
		r.Status = s
		if err := f.saveLocked(); err != nil {
			f.log.Error("fleet: save state", "err", err)
		}
	}
}

// startReplicas starts replicas [from, to) of rev; it does not wait.
func (f *Fleet) startReplicas(ctx context.Context, rev fleet.Revision, exe string, from, to int) ([]*replica, error) {
	var out []*replica
	for i := from; i < to; i++ {
		f.mu.Lock()
		closed := f.closed
		f.mu.Unlock()
		if closed {
			stopAll(out)
			return nil, errClosed
		}
		port, err := freePort()
		if err != nil {
			stopAll(out)
			return nil, fmt.Errorf("choose a port: %w", err)
		}
		inst := rev.Pool + "-r" + strconv.Itoa(rev.Number) + "-" + strconv.Itoa(i)
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &replica{f: f, pool: rev.Pool, index: i, rev: rev, exe: exe, instance: inst, port: port,
			dataDir: filepath.Join(f.cfg.StateDir, "data", rev.Pool+"-"+strconv.Itoa(i)),
			logPath: filepath.Join(f.cfg.StateDir, "logs", inst+".log"),
			cancel:  cancel, done: make(chan struct{})}
		f.mu.Lock()
		f.live[r] = true
		f.mu.Unlock()
		go func() {
			r.supervise(rctx)
			f.mu.Lock()
			delete(f.live, r)
			f.mu.Unlock()
		}()
		out = append(out, r)
	}
	return out, nil
}

// waitReady waits until every replica answered /readyz, ReadyTimeout
// passes, or ctx ends.
func (f *Fleet) waitReady(ctx context.Context, rs []*replica) error {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ReadyTimeout)
	defer cancel()
	t := time.NewTicker(f.cfg.ReadyInterval)
	defer t.Stop()
	for {
		ready := 0
		for _, r := range rs {
			if r.isReady() {
				ready++
			}
		}
		if ready == len(rs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d of %d ready after %s: %w", fleet.ErrNotReady, ready, len(rs), f.cfg.ReadyTimeout, ctx.Err())
		case <-t.C:
		}
	}
}

// stopAll stops replicas in parallel and returns how many had to be killed.
func stopAll(rs []*replica) (killed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			if r.stop() {
				mu.Lock()
				killed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return killed
}

func urlsOf(rs []*replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.url()
	}
	return out
}

// current returns the pool's current revision.
func (f *Fleet) current(pool string) (fleet.Revision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fleet.Revision{}, errClosed
	}
	ps, ok := f.st.Pools[pool]
	if !ok || ps.current() == nil {
		return fleet.Revision{}, fmt.Errorf("%w: pool %q has no current revision", fleet.ErrNotFound, pool)
	}
	return *ps.current(), nil
}

// Scale implements fleet.Fleet.
func (f *Fleet) Scale(ctx context.Context, pool string, replicas int) error {
	if replicas < 0 {
		return fmt.Errorf("%w: %d replicas", fleet.ErrInvalid, replicas)
	}
	unlock, err := f.lockPool(pool)
	if err != nil {
		return err
	}
	defer unlock()
	return f.scaleLocked(ctx, pool, replicas)
}

func (f *Fleet) scaleLocked(ctx context.Context, pool string, replicas int) error {
	rev, err := f.current(pool)
	if err != nil {
		return err
	}
	f.mu.Lock()
	have := slices.Clone(f.running[pool])
	f.mu.Unlock()
	switch {
	case replicas > len(have):
		exe, err := f.installArtifact(rev.Release)
		if err != nil {
			return err
		}
		added, err := f.startReplicas(ctx, rev, exe, nextIndex(have), nextIndex(have)+replicas-len(have))
		if err == nil {
			err = f.waitReady(ctx, added)
		}
		all := append(have, added...)
		if err == nil && f.cfg.Endpoints != nil {
			err = f.cfg.Endpoints(ctx, pool, urlsOf(all))
		}
		if err != nil {
			stopAll(added)
			return fmt.Errorf("fleet/local: scale %s to %d: %w", pool, replicas, err)
		}
		return f.setRunning(pool, all, replicas)
	case replicas < len(have):
		keep, drop := have[:replicas], have[replicas:]
		if f.cfg.Endpoints != nil {
			if err := f.cfg.Endpoints(ctx, pool, urlsOf(keep)); err != nil {
				return fmt.Errorf("fleet/local: scale %s to %d: %w", pool, replicas, err)
			}
		}
		if err := f.setRunning(pool, keep, replicas); err != nil {
			return err
		}
		stopAll(drop)
		return nil
	default:
		return f.setRunning(pool, have, replicas)
	}
}

func nextIndex(rs []*replica) int {
	n := 0
	for _, r := range rs {
		n = max(n, r.index+1)
	}
	return n
}

func (f *Fleet) setRunning(pool string, rs []*replica, desired int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[pool] = rs
	f.st.Pools[pool].Desired = desired
	return f.saveLocked()
}

// Drain implements fleet.Fleet.
func (f *Fleet) Drain(ctx context.Context, pool string) (fleet.DrainReport, error) {
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.DrainReport{}, err
	}
	defer unlock()
	if _, err := f.current(pool); err != nil {
		return fleet.DrainReport{}, err
	}
	start := time.Now()
	if f.cfg.Endpoints != nil {
		if err := f.cfg.Endpoints(ctx, pool, []string{}); err != nil {
			return fleet.DrainReport{}, fmt.Errorf("fleet/local: drain %s: %w", pool, err)
		}
	}
	f.mu.Lock()
	rs := f.running[pool]
	f.mu.Unlock()
	if err := f.setRunning(pool, nil, 0); err != nil {
		return fleet.DrainReport{}, err
	}
	killed := stopAll(rs)
	rep := fleet.DrainReport{Pool: pool, Stopped: len(rs) - killed, Killed: killed, Duration: time.Since(start)}
	f.log.InfoContext(ctx, "fleet: drained", "pool", pool, "stopped", rep.Stopped, "killed", rep.Killed, "duration", rep.Duration)
	return rep, nil
}

// Rollback implements fleet.Fleet.
func (f *Fleet) Rollback(ctx context.Context, pool string, toRevision int) (fleet.Revision, error) {
	unlock, err := f.lockPool(pool)
	if err != nil {
		return fleet.Revision{}, err
	}
	defer unlock()
	f.mu.Lock()
	ps, ok := f.st.Pools[pool]
	var target *fleet.Revision
	if ok {
		target = ps.revision(toRevision)
	}
	if target == nil {
		f.mu.Unlock()
		return fleet.Revision{}, fmt.Errorf("%w: pool %q has no revision %d", fleet.ErrNotFound, pool, toRevision)
	}
	rel, replicas := target.Release.Clone(), max(ps.Desired, 1)
	f.mu.Unlock()
	return f.deployLocked(ctx, pool, rel, replicas, toRevision)
}

// MarkGood implements fleet.Fleet.
func (f *Fleet) MarkGood(ctx context.Context, pool string, revision int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps, ok := f.st.Pools[pool]
	var r *fleet.Revision
	if ok {
		r = ps.revision(revision)
	}
	switch {
	case r == nil:
		return fmt.Errorf("%w: pool %q has no revision %d", fleet.ErrNotFound, pool, revision)
	case r.Status == fleet.StatusFailed || r.Status == fleet.StatusDeploying:
		return fmt.Errorf("%w: revision %d of %s is %s", fleet.ErrInvalid, revision, pool, r.Status)
	case r.Good:
		return nil
	}
	r.Good, r.MarkedGoodAt = true, f.cfg.Now().UTC()
	f.log.InfoContext(ctx, "fleet: revision marked good", "pool", pool, "revision", revision, "release", r.Release.ID)
	return f.saveLocked()
}

// LastKnownGood implements fleet.Fleet.
func (f *Fleet) LastKnownGood(ctx context.Context) (fleet.Revision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var best *fleet.Revision
	for _, name := range slices.Sorted(maps.Keys(f.st.Pools)) {
		for i := range f.st.Pools[name].Revisions {
			r := &f.st.Pools[name].Revisions[i]
			if r.Good && (best == nil || r.CreatedAt.After(best.CreatedAt)) {
				best = r
			}
		}
	}
	if best == nil {
		return fleet.Revision{}, fleet.ErrNoKnownGood
	}
	out := *best
	out.Release = out.Release.Clone()
	return out, nil
}

// History implements fleet.Fleet.
func (f *Fleet) History(ctx context.Context, pool string) ([]fleet.Revision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps, ok := f.st.Pools[pool]
	if !ok {
		return nil, fmt.Errorf("%w: pool %q", fleet.ErrNotFound, pool)
	}
	out := make([]fleet.Revision, len(ps.Revisions))
	for i, r := range ps.Revisions {
		r.Release = r.Release.Clone()
		out[i] = r
	}
	return out, nil
}

// Status implements fleet.Fleet. Endpoints lists replicas that answered
// /readyz since they last started.
func (f *Fleet) Status(ctx context.Context) ([]fleet.PoolStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fleet.PoolStatus
	for _, name := range slices.Sorted(maps.Keys(f.st.Pools)) {
		ps := f.st.Pools[name]
		s := fleet.PoolStatus{Pool: name, Desired: ps.Desired, Endpoints: []string{}}
		if cur := ps.current(); cur != nil {
			s.Revision, s.Release = cur.Number, cur.Release.Clone()
		}
		for _, r := range f.running[name] {
			s.Restarts += r.restartCount()
			if r.isReady() {
				s.Ready++
				s.Endpoints = append(s.Endpoints, r.url())
			}
		}
		out = append(out, s)
	}
	return out, nil
}
