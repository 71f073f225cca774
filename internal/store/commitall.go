package store

import (
	"context"
	"fmt"
	"sync"
)

// writeGroup collects the outcomes of one CommitAll call.
type writeGroup struct {
	mu        sync.Mutex
	out       []writeOutcome
	delivered []bool
	left      int
	done      chan struct{} // closed when left reaches 0
}

// deliver hands the writer's outcome to the waiting caller.
func (p *pendingWrite) deliver(o writeOutcome) {
	if p.grp == nil {
		p.res <- o
		return
	}
	g := p.grp
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out[p.i], g.delivered[p.i] = o, true
	if g.left--; g.left == 0 {
		close(g.done)
	}
}

// CommitAll is Commit for several writes at once (a batch request's
// items): it queues them in order, without a goroutine or a result channel
// per write, and waits for all their outcomes. The writes may land in
// different transactions. Per write, the results and errors are Commit's:
// a write not handed over before ctx ends (or after Close) is not written
// and gets ctx's error (ErrCommitterClosed); one handed over still commits
// if ctx ends while waiting, and its error then wraps ErrAbandoned.
func (c *Committer) CommitAll(ctx context.Context, ws []SignatureWrite) ([]WriteResult, []error) {
	rs, errs := make([]WriteResult, len(ws)), make([]error, len(ws))
	if len(ws) == 0 {
		return rs, errs
	}
	g := &writeGroup{out: make([]writeOutcome, len(ws)), delivered: make([]bool, len(ws)),
		left: len(ws), done: make(chan struct{})}
	ps := make([]pendingWrite, len(ws))
	handed := 0
	c.mu.RLock()
	refused := error(ErrCommitterClosed)
	if !c.closed {
		refused = nil
	send:
		for i := range ws {
			ps[i] = pendingWrite{w: ws[i], grp: g, i: i}
			select {
			case c.reqs <- &ps[i]:
				handed++
			case <-ctx.Done():
				refused = ctx.Err()
				break send
			}
		}
	}
	c.mu.RUnlock()
	if handed < len(ws) {
		// Writes never handed over: answered here, as if delivered.
		g.mu.Lock()
		for i := handed; i < len(ws); i++ {
			g.out[i], g.delivered[i] = writeOutcome{err: refused}, true
			if g.left--; g.left == 0 {
				close(g.done)
			}
		}
		g.mu.Unlock()
	}
	var abandoned error
	select {
	case <-g.done:
	case <-ctx.Done():
		abandoned = fmt.Errorf("%w: %w", ErrAbandoned, ctx.Err())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, o := range g.out {
		if !g.delivered[i] {
			errs[i] = abandoned
			continue
		}
		rs[i], errs[i] = o.r, o.err
	}
	return rs, errs
}
