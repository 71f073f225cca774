package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// JobBatchStore is what a Committer needs of a store to group-commit async
// job writes: WriteJobs runs creations, then completions, in one
// transaction (CreateJobs' and CompleteJobs' semantics per item), so the
// accept path and the worker share each fsync. Both backends implement it.
type JobBatchStore interface {
	WriteJobs(ctx context.Context, cs []JobCreate, ps []JobCompletion) ([]JobCreateResult, []JobCompleteResult, error)
}

// ErrNoJobBatching is returned by Committer.CreateJob and CompleteJob when
// the Committer's store does not implement JobBatchStore.
var ErrNoJobBatching = errors.New("store: the committer's store has no batched job writes")

// jobOp is one job write queued on a Committer: a creation or a completion.
type jobOp struct {
	create   *JobCreate
	complete *JobCompletion
}

type jobOpResult struct {
	create   JobCreateResult
	complete JobCompleteResult
}

// jobBatching is a Committer's group commit of job writes: one writer
// goroutine, the Committer's no-timer batching, one WriteJobs transaction
// for everything queued (creations from the accept path and completions
// from the worker alike).
type jobBatching struct {
	b *batcher[jobOp, jobOpResult]
}

func newJobBatching(ctx context.Context, s JobBatchStore, maxBatch int) *jobBatching {
	return &jobBatching{b: newBatcher(ctx, maxBatch, func(ctx context.Context, ops []jobOp) ([]jobOpResult, error) {
		var cs []JobCreate
		var ps []JobCompletion
		for _, op := range ops {
			if op.create != nil {
				cs = append(cs, *op.create)
			} else {
				ps = append(ps, *op.complete)
			}
		}
		cres, pres, err := s.WriteJobs(ctx, cs, ps)
		if err != nil {
			return nil, err
		}
		if len(cres) != len(cs) || len(pres) != len(ps) {
			return nil, fmt.Errorf("store: WriteJobs returned %d+%d results for %d+%d writes", len(cres), len(pres), len(cs), len(ps))
		}
		out := make([]jobOpResult, len(ops))
		for i, op := range ops {
			if op.create != nil {
				out[i].create, cres = cres[0], cres[1:]
			} else {
				out[i].complete, pres = pres[0], pres[1:]
			}
		}
		return out, nil
	})}
}

func (b *jobBatching) close() {
	if b != nil {
		b.b.close()
	}
}

// CreateJob is JobStore.CreateJob through group commit: concurrent calls
// (and completions) share one WriteJobs transaction.
func (c *Committer) CreateJob(ctx context.Context, j Job, ev AuditEvent) (*Job, error) {
	if c.jobs == nil {
		return nil, ErrNoJobBatching
	}
	r, err := c.jobs.b.do(ctx, jobOp{create: &JobCreate{Job: j, Event: ev}})
	if err != nil {
		return nil, err
	}
	return r.create.Existing, r.create.Err
}

// CompleteJob is JobStore.CompleteJob through group commit: concurrent
// calls (and creations) share one WriteJobs transaction.
func (c *Committer) CompleteJob(ctx context.Context, jc JobCompletion) (WriteResult, error) {
	if c.jobs == nil {
		return WriteResult{}, ErrNoJobBatching
	}
	r, err := c.jobs.b.do(ctx, jobOp{complete: &jc})
	if err != nil {
		return WriteResult{}, err
	}
	return r.complete.WriteResult, r.complete.Err
}

// CreateJob runs one JobCreate through s.WriteJobs.
func CreateJob(ctx context.Context, s JobBatchStore, j Job, ev AuditEvent) (*Job, error) {
	rs, _, err := s.WriteJobs(ctx, []JobCreate{{Job: j, Event: ev}}, nil)
	if err != nil {
		return nil, err
	}
	return rs[0].Existing, rs[0].Err
}

// CompleteJob runs one JobCompletion through s.WriteJobs.
func CompleteJob(ctx context.Context, s JobBatchStore, c JobCompletion) (WriteResult, error) {
	_, rs, err := s.WriteJobs(ctx, nil, []JobCompletion{c})
	if err != nil {
		return WriteResult{}, err
	}
	return rs[0].WriteResult, rs[0].Err
}

// batcher is the group commit loop shared by the job writers: callers
// queue items, one goroutine commits everything queued since its previous
// commit (up to max) with one call of commit. Like Committer it has no
// timer, and an item handed over commits whatever its caller's context
// does; a failed batch is retried item by item so one bad item fails alone.
type batcher[I, O any] struct {
	ctx    context.Context
	max    int
	commit func(context.Context, []I) ([]O, error)
	reqs   chan *pending[I, O]
	done   chan struct{}

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
}

type pending[I, O any] struct {
	in  I
	res chan outcome[O] // buffered 1
}

type outcome[O any] struct {
	out O
	err error
}

func newBatcher[I, O any](ctx context.Context, max int, commit func(context.Context, []I) ([]O, error)) *batcher[I, O] {
	b := &batcher[I, O]{ctx: ctx, max: max, commit: commit,
		reqs: make(chan *pending[I, O], max), done: make(chan struct{})}
	go b.run()
	return b
}

func (b *batcher[I, O]) do(ctx context.Context, in I) (O, error) {
	var zero O
	p := &pending[I, O]{in: in, res: make(chan outcome[O], 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return zero, ErrCommitterClosed
	}
	select {
	case b.reqs <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return zero, ctx.Err()
	}
	select {
	case o := <-p.res:
		return o.out, o.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %w", ErrAbandoned, ctx.Err())
	}
}

func (b *batcher[I, O]) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.reqs)
	}
	b.mu.Unlock()
	<-b.done
}

func (b *batcher[I, O]) run() {
	defer close(b.done)
	batch := make([]*pending[I, O], 0, b.max)
	for {
		p, ok := <-b.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], p)
		runtime.Gosched() // as Committer.run: let woken callers queue first
		open := b.drain(&batch)
		b.commitBatch(batch)
		if !open {
			return
		}
	}
}

// drain appends every queued item (up to max) without blocking and
// reports whether reqs is still open. Only the writer goroutine calls it.
func (b *batcher[I, O]) drain(batch *[]*pending[I, O]) bool {
	for len(*batch) < b.max {
		select {
		case p, ok := <-b.reqs:
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

func (b *batcher[I, O]) commitBatch(batch []*pending[I, O]) {
	ins := make([]I, len(batch))
	for i, p := range batch {
		ins[i] = p.in
	}
	outs, err := b.commit(b.ctx, ins)
	if err == nil && len(outs) != len(ins) {
		err = fmt.Errorf("store: batch commit returned %d results for %d items", len(outs), len(ins))
	}
	if err != nil && len(batch) > 1 && b.ctx.Err() == nil {
		for _, p := range batch {
			b.commitBatch([]*pending[I, O]{p})
		}
		return
	}
	for i, p := range batch {
		if err != nil {
			p.res <- outcome[O]{err: err}
			continue
		}
		p.res <- outcome[O]{out: outs[i]}
	}
}
