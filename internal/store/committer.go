package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBatch is the largest batch a Committer commits at once.
const DefaultMaxBatch = 256

// ErrCommitterClosed is returned by Committer.Commit after Close.
var ErrCommitterClosed = errors.New("store: committer closed")

// ErrAbandoned is wrapped (with the context's error) when a caller stopped
// waiting for a write it had already handed to the committer: the write
// still commits, and a retry with the same idempotency key finds it.
var ErrAbandoned = errors.New("store: stopped waiting; the write was handed over and will commit")

// SignatureCommitter is the one store method a Committer needs.
type SignatureCommitter interface {
	CommitSignatures(ctx context.Context, w []SignatureWrite) ([]WriteResult, error)
}

// BatchStats describes one committed batch, for metrics.
type BatchStats struct {
	Size     int           // writes in the batch
	Duration time.Duration // time spent in CommitSignatures
	Err      error
}

// The commit linger (CommitterConfig.Linger): DefaultLinger is what the
// node uses unless told otherwise (docs/benchmarks.md measures it); the
// others are the defaults of LingerMin and LingerUntil.
const (
	DefaultLinger      = 500 * time.Microsecond
	DefaultLingerMin   = 4
	DefaultLingerUntil = 32
)

// CommitterConfig configures a Committer. The zero value is valid.
type CommitterConfig struct {
	// MaxBatch caps the writes per transaction (default DefaultMaxBatch).
	MaxBatch int
	// Linger, if positive, is how long the writer may wait for more writes
	// before committing a batch that already holds at least LingerMin
	// writes but fewer than LingerUntil: like PostgreSQL's commit_delay
	// with commit_siblings, it only delays commits when other writes are
	// arriving, and never a lone write. A commit's fixed cost (its WAL
	// frames, the transaction's statements) is then shared by more
	// signatures. Zero commits whatever is queued at once.
	Linger time.Duration
	// LingerMin is the batch size from which the writer lingers (default
	// DefaultLingerMin); LingerUntil the size at which it stops (default
	// DefaultLingerUntil).
	LingerMin, LingerUntil int
	// Observe, if set, is called by the writer goroutine after each batch;
	// it must be quick (e.g. observe a histogram).
	Observe func(BatchStats)
	// Committed, if set, is called by the writer goroutine with every batch
	// that committed and its results (rs[i] is ws[i]'s), before the writes
	// are answered and, with deferred sync, before they are durable. It must
	// be quick and must not modify ws. The node hands the new events'
	// entries to the audit log's integrator with it
	// (auditlog.RecentEntries).
	Committed func(ws []SignatureWrite, rs []WriteResult)
}

// CommitterStats are cumulative counters since NewCommitter.
type CommitterStats struct {
	Batches  uint64 // CommitSignatures calls (a failed batch's one-by-one retries count too)
	Writes   uint64 // writes committed (or answered Existing)
	Failed   uint64 // writes answered with an error
	MaxBatch int    // largest batch seen
}

// MeanBatch is the mean number of writes per CommitSignatures call.
func (s CommitterStats) MeanBatch() float64 {
	if s.Batches == 0 {
		return 0
	}
	return float64(s.Writes+s.Failed) / float64(s.Batches)
}

// Committer is group commit for signatures: concurrent callers queue
// writes, and one writer goroutine commits everything queued since its
// previous commit (up to MaxBatch) in one CommitSignatures transaction, so
// a durable commit's fsync, and the transaction's fixed costs, are paid
// once per batch, not once per signature. An idle writer commits a lone
// write at once, and batches form while a commit is in flight; with
// CommitterConfig.Linger the writer also waits briefly for more writes when
// several are already arriving (docs/benchmarks.md).
//
// On a store that is a DeferredSyncer (SQLite) the writer commits without
// waiting for the fsync, hands the batch to a second goroutine that fsyncs
// once for every batch committed meanwhile and only then answers them
// (syncer.go): the next batch commits while the previous one is made
// durable.
//
// Invariant: a write handed to the writer is committed exactly once (or
// fails as a whole) whatever happens to its caller's context, and is
// answered as committed only once durable; Close commits everything handed
// over before it returns.
type Committer struct {
	s    SignatureCommitter
	ctx  context.Context
	cfg  CommitterConfig
	reqs chan *pendingWrite
	done chan struct{}

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool

	batches, writes, failed atomic.Uint64
	maxSeen                 atomic.Int64

	// lingerTimer is linger's, made on first use; only the writer
	// goroutine touches it.
	lingerTimer *time.Timer

	// jobs group-commits async job writes when s is a JobBatchStore
	// (jobcommitter.go); nil otherwise.
	jobs *jobBatching

	// def is s when it is a DeferredSyncer (syncer.go): committed
	// batches go to syncQ and are answered by syncLoop once durable.
	def      DeferredSyncer
	syncQ    chan []delivery
	syncDone chan struct{}
	durErr   atomic.Pointer[error] // the latched ErrNotDurable
}

type pendingWrite struct {
	w   SignatureWrite
	res chan writeOutcome // Commit's: buffered 1, the writer never blocks on it
	grp *writeGroup       // CommitAll's: the outcome goes to grp's slot i
	i   int
}

type writeOutcome struct {
	r   WriteResult
	err error
}

// NewCommitter starts the writer goroutine. Commits run under ctx (not
// the callers' contexts, which may be cancelled after handing a write
// over); cancel ctx only after Close.
func NewCommitter(ctx context.Context, s SignatureCommitter, cfg CommitterConfig) *Committer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.LingerMin <= 0 {
		cfg.LingerMin = DefaultLingerMin
	}
	if cfg.LingerUntil <= 0 {
		cfg.LingerUntil = DefaultLingerUntil
	}
	c := &Committer{s: s, ctx: ctx, cfg: cfg,
		reqs: make(chan *pendingWrite, cfg.MaxBatch), done: make(chan struct{})}
	if js, ok := s.(JobBatchStore); ok {
		c.jobs = newJobBatching(ctx, js, cfg.MaxBatch)
	}
	if d, ok := s.(DeferredSyncer); ok {
		c.def, c.syncQ, c.syncDone = d, make(chan []delivery, 64), make(chan struct{})
		go c.syncLoop()
	}
	go c.run()
	return c
}

// Commit queues w and waits for its result. If ctx ends before the write
// is handed over, nothing is written and ctx's error is returned; if it
// ends after, the write still commits and the error wraps ErrAbandoned.
func (c *Committer) Commit(ctx context.Context, w SignatureWrite) (WriteResult, error) {
	p := &pendingWrite{w: w, res: make(chan writeOutcome, 1)}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return WriteResult{}, ErrCommitterClosed
	}
	select {
	case c.reqs <- p:
		c.mu.RUnlock()
	case <-ctx.Done():
		c.mu.RUnlock()
		return WriteResult{}, ctx.Err()
	}
	select {
	case o := <-p.res:
		return o.r, o.err
	case <-ctx.Done():
		return WriteResult{}, fmt.Errorf("%w: %w", ErrAbandoned, ctx.Err())
	}
}

// Close stops accepting writes, commits every write already handed over,
// and waits for the writer to finish.
func (c *Committer) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.reqs)
	}
	c.mu.Unlock()
	<-c.done
	if c.syncDone != nil {
		<-c.syncDone
	}
	c.jobs.close()
	return nil
}

// Stats returns the cumulative counters.
func (c *Committer) Stats() CommitterStats {
	return CommitterStats{Batches: c.batches.Load(), Writes: c.writes.Load(),
		Failed: c.failed.Load(), MaxBatch: int(c.maxSeen.Load())}
}

func (c *Committer) run() {
	defer close(c.done)
	if c.syncQ != nil {
		defer close(c.syncQ)
	}
	batch := make([]*pendingWrite, 0, c.cfg.MaxBatch)
	for {
		p, ok := <-c.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], p)
		// Let callers woken by the previous batch's results queue their
		// next writes before draining; with nothing runnable this returns
		// at once, so an idle writer adds no latency. Under load the yield
		// costs the writer ~0.7 ms at the back of the run queue per batch
		// (runtime trace, c=64), and that wait is what fills the batch:
		// without it batches fell from 26 to 17 rows and throughput and
		// CPU per signature got worse (docs/benchmarks.md).
		runtime.Gosched()
		open := c.drain(&batch)
		if open && c.cfg.Linger > 0 && len(batch) >= c.cfg.LingerMin && len(batch) < c.cfg.LingerUntil {
			open = c.linger(&batch)
		}
		c.commit(batch)
		if !open {
			return
		}
	}
}

// linger waits up to Linger for more writes, until the batch holds
// LingerUntil, then takes whatever else is queued (up to MaxBatch). Only
// the writer goroutine calls it. It reports whether reqs is still open.
func (c *Committer) linger(batch *[]*pendingWrite) bool {
	if c.lingerTimer == nil {
		c.lingerTimer = time.NewTimer(c.cfg.Linger)
	} else {
		c.lingerTimer.Reset(c.cfg.Linger)
	}
	defer c.lingerTimer.Stop()
	for len(*batch) < min(c.cfg.LingerUntil, c.cfg.MaxBatch) {
		select {
		case p, ok := <-c.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, p)
		case <-c.lingerTimer.C:
			return c.drain(batch)
		}
	}
	return c.drain(batch)
}

// drain appends every queued write (up to MaxBatch) without blocking.
// Only the writer goroutine calls it. It reports whether reqs is still open.
func (c *Committer) drain(batch *[]*pendingWrite) bool {
	for len(*batch) < c.cfg.MaxBatch {
		select {
		case p, ok := <-c.reqs:
			if !ok {
				return false
			}
			*batch = append(*batch, p)
		default:
			return true
		}
	}
	return true
}

func (c *Committer) commit(batch []*pendingWrite) {
	ds := make([]delivery, len(batch))
	for i, p := range batch {
		ds[i].p = p
	}
	if err := c.Err(); err != nil {
		c.answer(ds, err)
		return
	}
	ws := make([]SignatureWrite, len(batch))
	for i, p := range batch {
		ws[i] = p.w
	}
	start := time.Now()
	var rs []WriteResult
	var err error
	if c.def != nil {
		rs, err = c.def.CommitSignaturesNoSync(c.ctx, ws)
	} else {
		rs, err = c.s.CommitSignatures(c.ctx, ws)
	}
	if err == nil && len(rs) != len(ws) {
		err = fmt.Errorf("store: CommitSignatures returned %d results for %d writes", len(rs), len(ws))
	}
	c.observe(len(batch), time.Since(start), err)
	if err != nil && len(batch) > 1 && c.ctx.Err() == nil {
		// One bad write must not fail its neighbours: the transaction rolled
		// back as a whole, so retry each write on its own.
		for _, p := range batch {
			c.commit([]*pendingWrite{p})
		}
		return
	}
	if err != nil {
		c.answer(ds, err)
		return
	}
	for i := range ds {
		ds[i].o = writeOutcome{r: rs[i]}
	}
	if c.cfg.Committed != nil {
		c.cfg.Committed(ws, rs)
	}
	if c.def != nil {
		c.syncQ <- ds // answered by syncLoop once an fsync begun after this commit ends
		return
	}
	c.answer(ds, nil)
}

// answer delivers each write's outcome, or err to every write when err is
// set, and counts them.
func (c *Committer) answer(ds []delivery, err error) {
	for _, d := range ds {
		if err != nil {
			c.failed.Add(1)
			d.p.deliver(writeOutcome{err: err})
			continue
		}
		c.writes.Add(1)
		d.p.deliver(d.o)
	}
}

func (c *Committer) observe(n int, d time.Duration, err error) {
	c.batches.Add(1)
	for {
		m := c.maxSeen.Load()
		if int64(n) <= m || c.maxSeen.CompareAndSwap(m, int64(n)) {
			break
		}
	}
	if c.cfg.Observe != nil {
		c.cfg.Observe(BatchStats{Size: n, Duration: d, Err: err})
	}
}
