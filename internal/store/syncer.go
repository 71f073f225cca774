package store

import (
	"context"
	"errors"
	"fmt"
)

// DeferredSyncer is implemented by stores whose signature commits can
// return before they are durable, with a separate call that makes them
// durable (the SQLite store: a commit writes its WAL frames, SyncCommitted
// fsyncs the WAL). A Committer on such a store commits the next batch
// while the previous one is being made durable, and answers a write only
// after a SyncCommitted that began after the write's commit returned:
// what an answered write has survived is what it survives without this.
type DeferredSyncer interface {
	// CommitSignaturesNoSync is CommitSignatures, except that the commit
	// may not be durable yet when it returns.
	CommitSignaturesNoSync(ctx context.Context, w []SignatureWrite) ([]WriteResult, error)
	// SyncCommitted makes durable every commit that returned before it
	// was called.
	SyncCommitted(ctx context.Context) error
}

// ErrNotDurable is returned for writes the store committed but could not
// confirm durable (an fsync failed), and for every write after that: the
// kernel may have dropped the pages a failed fsync was writing, so a later
// fsync that succeeds proves nothing. Restart the process; SQLite recovers
// the database from what reached the disk, and clients retry with their
// idempotency keys.
var ErrNotDurable = errors.New("store: commits could not be made durable; restart the process")

// delivery is one write's outcome, held until it may be answered.
type delivery struct {
	p *pendingWrite
	o writeOutcome
}

// syncLoop answers committed writes once they are durable: it takes every
// batch the writer has handed over, runs one SyncCommitted for all of them
// (fsyncs coalesce while commits go on), and delivers. It stops when the
// writer closes syncQ.
func (c *Committer) syncLoop() {
	defer close(c.syncDone)
	var pend [][]delivery
	for first := range c.syncQ {
		pend = append(pend[:0], first)
	drain:
		for {
			select {
			case more, ok := <-c.syncQ:
				if !ok {
					break drain
				}
				pend = append(pend, more)
			default:
				break drain
			}
		}
		err := c.Err()
		if err == nil {
			if serr := c.def.SyncCommitted(context.WithoutCancel(c.ctx)); serr != nil {
				err = fmt.Errorf("%w: %w", ErrNotDurable, serr)
				c.durErr.CompareAndSwap(nil, &err)
			}
		}
		for _, ds := range pend {
			c.answer(ds, err)
		}
	}
}

// Err returns the error that stops the Committer from accepting writes
// (a latched ErrNotDurable), or nil: a node reports itself not ready while
// it is set.
func (c *Committer) Err() error {
	if e := c.durErr.Load(); e != nil {
		return *e
	}
	return nil
}
