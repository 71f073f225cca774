package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// openGate returns a gatedStore whose commits go through at once.
func openGate() *gatedStore {
	g := newGatedStore()
	close(g.gate)
	return g
}

func sws(keys ...string) []SignatureWrite {
	ws := make([]SignatureWrite, len(keys))
	for i, k := range keys {
		ws[i] = sw(k)
	}
	return ws
}

func TestCommitAllQueuesTogether(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{MaxBatch: 64})
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := c.Commit(t.Context(), sw("blocker")); err != nil {
			t.Error(err)
		}
	})
	<-g.started // the writer is busy: the group queues behind it
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprint("item-", i)
	}
	var rs []WriteResult
	var errs []error
	wg.Go(func() { rs, errs = c.CommitAll(t.Context(), sws(keys...)) })
	for len(c.reqs) < len(keys) {
		time.Sleep(time.Millisecond)
	}
	close(g.gate)
	wg.Wait()
	c.Close()
	if len(g.batches) != 2 || len(g.batches[1]) != len(keys) {
		t.Fatalf("batches = %v, want the blocker, then the whole group in one batch", g.batches)
	}
	for i := range keys {
		if errs[i] != nil || rs[i].AuditIndex != int64(i+1) || g.batches[1][i] != keys[i] {
			t.Errorf("item %d: result %+v, err %v, committed as %q: want index %d in order", i, rs[i], errs[i], g.batches[1][i], i+1)
		}
	}
}

func TestCommitAllIsolatesBadWrite(t *testing.T) {
	g := newGatedStore()
	close(g.gate)
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	_, errs := c.CommitAll(t.Context(), sws("a", "poison", "b"))
	c.Close()
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Errorf("errors = %v: want only the poison write to fail", errs)
	}
}

func TestCommitAllAfterClose(t *testing.T) {
	c := NewCommitter(t.Context(), openGate(), CommitterConfig{})
	c.Close()
	_, errs := c.CommitAll(t.Context(), sws("a", "b"))
	for i, err := range errs {
		if !errors.Is(err, ErrCommitterClosed) {
			t.Errorf("write %d after Close: %v, want ErrCommitterClosed", i, err)
		}
	}
}

func TestCommitAllAbandoned(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan []error, 1)
	go func() { _, errs := c.CommitAll(ctx, sws("a", "b")); done <- errs }()
	n := <-g.started // in flight; the other write is in it or queued behind it
	for n < 2 && len(c.reqs) == 0 {
		select {
		case m := <-g.started:
			n += m
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	errs := <-done
	for i, err := range errs {
		if !errors.Is(err, ErrAbandoned) || !errors.Is(err, context.Canceled) {
			t.Errorf("write %d: %v, want ErrAbandoned and context.Canceled", i, err)
		}
	}
	close(g.gate)
	c.Close()
	n = 0
	for _, b := range g.batches {
		n += len(b)
	}
	if n != 2 {
		t.Errorf("%d writes committed, want both abandoned writes committed", n)
	}
}
