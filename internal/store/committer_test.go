package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gatedStore is a SignatureCommitter test double whose commits block until
// the test releases them, so batch formation is deterministic. It refuses
// any write whose idempotency key is "poison", failing the whole batch as a
// real transaction would.
type gatedStore struct {
	mu      sync.Mutex
	gate    chan struct{}
	started chan int
	batches [][]string
	next    int64
}

func newGatedStore() *gatedStore {
	return &gatedStore{gate: make(chan struct{}), started: make(chan int, 100)}
}

func (g *gatedStore) CommitSignatures(ctx context.Context, ws []SignatureWrite) ([]WriteResult, error) {
	g.started <- len(ws)
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := make([]string, len(ws))
	for i, w := range ws {
		if w.Signature.IdempotencyKey == "poison" {
			return nil, errors.New("constraint violated")
		}
		keys[i] = w.Signature.IdempotencyKey
	}
	g.batches = append(g.batches, keys)
	rs := make([]WriteResult, len(ws))
	for i := range ws {
		rs[i] = WriteResult{AuditIndex: g.next}
		g.next++
	}
	return rs, nil
}

func sw(key string) SignatureWrite { return SignatureWrite{Signature: Signature{IdempotencyKey: key}} }

func TestCommitterBatchesWhileBusy(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{MaxBatch: 8})
	var wg sync.WaitGroup
	results := make(chan WriteResult, 20)
	commit := func(key string) {
		wg.Go(func() {
			r, err := c.Commit(t.Context(), sw(key))
			if err != nil {
				t.Error(err)
			}
			results <- r
		})
	}
	commit("first")
	if n := <-g.started; n != 1 {
		t.Fatalf("first batch = %d writes, want 1 (an idle writer commits at once)", n)
	}
	for i := range 12 {
		commit(fmt.Sprint(i))
	}
	// Wait until all 12 are queued behind the in-flight commit.
	for len(c.reqs) < 8 {
		time.Sleep(time.Millisecond)
	}
	close(g.gate)
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Writes != 13 || st.MaxBatch != 8 || st.Batches > 4 {
		t.Errorf("Stats = %+v: want 13 writes in few batches capped at 8", st)
	}
	seen := map[int64]bool{}
	close(results)
	for r := range results {
		if seen[r.AuditIndex] {
			t.Errorf("index %d given twice", r.AuditIndex)
		}
		seen[r.AuditIndex] = true
	}
}

func TestCommitterAbandonedWriteStillCommits(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Commit(ctx, sw("a"))
		errc <- err
	}()
	<-g.started // handed over and in flight
	cancel()
	if err := <-errc; !errors.Is(err, ErrAbandoned) || !errors.Is(err, context.Canceled) {
		t.Errorf("Commit after cancel = %v, want ErrAbandoned and context.Canceled", err)
	}
	close(g.gate)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(g.batches) != 1 || g.batches[0][0] != "a" {
		t.Errorf("batches = %v, want the abandoned write committed once", g.batches)
	}
	if _, err := c.Commit(t.Context(), sw("late")); !errors.Is(err, ErrCommitterClosed) {
		t.Errorf("Commit after Close = %v, want ErrCommitterClosed", err)
	}
}

func TestCommitterCancelledBeforeHandover(t *testing.T) {
	g := newGatedStore()
	close(g.gate)
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// With a free queue the send may win the race against ctx.Done; either
	// the write was refused (and never committed) or it committed.
	_, err := c.Commit(ctx, sw("x"))
	c.Close()
	committed := len(g.batches) == 1
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit = %v", err)
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, ErrAbandoned) && committed {
		t.Error("a write refused before handover was committed")
	}
}

func TestCommitterIsolatesBadWrite(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	var wg sync.WaitGroup
	errs := make(map[string]error)
	var mu sync.Mutex
	commit := func(key string) {
		wg.Go(func() {
			_, err := c.Commit(t.Context(), sw(key))
			mu.Lock()
			errs[key] = err
			mu.Unlock()
		})
	}
	commit("blocker")
	<-g.started
	for _, k := range []string{"ok1", "poison", "ok2"} {
		commit(k)
	}
	for len(c.reqs) < 3 {
		time.Sleep(time.Millisecond)
	}
	close(g.gate)
	wg.Wait()
	c.Close()
	if errs["poison"] == nil || errs["ok1"] != nil || errs["ok2"] != nil {
		t.Errorf("errors = %v: want only the poison write to fail", errs)
	}
	if st := c.Stats(); st.Failed != 1 || st.Writes != 3 {
		t.Errorf("Stats = %+v, want 3 writes, 1 failed", st)
	}
}

func TestCommitterCloseDrains(t *testing.T) {
	g := newGatedStore()
	c := NewCommitter(t.Context(), g, CommitterConfig{})
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if _, err := c.Commit(t.Context(), sw(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	first := <-g.started
	for len(c.reqs) < 5-first {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	close(g.gate)
	<-closed
	wg.Wait()
	n := 0
	for _, b := range g.batches {
		n += len(b)
	}
	if n != 5 {
		t.Errorf("committed %d writes before Close returned, want 5", n)
	}
}
