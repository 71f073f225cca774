package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// clockStore records each batch's keys and the (bubble) time it was
// committed at; the first commit blocks until the test releases it, so
// writes can pile up behind it.
type clockStore struct {
	mu      sync.Mutex
	hold    chan struct{} // closed: commits proceed
	batches [][]string
	at      []time.Time
}

func (s *clockStore) CommitSignatures(ctx context.Context, ws []SignatureWrite) ([]WriteResult, error) {
	<-s.hold
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, len(ws))
	for i := range ws {
		keys[i] = ws[i].Signature.IdempotencyKey
	}
	s.batches = append(s.batches, keys)
	s.at = append(s.at, time.Now())
	return make([]WriteResult, len(ws)), nil
}

func (s *clockStore) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n []int
	for _, b := range s.batches {
		n = append(n, len(b))
	}
	return n
}

func TestCommitterLinger(t *testing.T) {
	const linger = time.Millisecond
	cfg := CommitterConfig{MaxBatch: 64, Linger: linger, LingerMin: 3, LingerUntil: 8}

	t.Run("lone write commits at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &clockStore{hold: make(chan struct{})}
			close(s.hold)
			c := NewCommitter(t.Context(), s, cfg)
			t0 := time.Now()
			if _, err := c.Commit(t.Context(), sw("alone")); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); d != 0 {
				t.Errorf("a lone write waited %v; want no delay", d)
			}
			c.Close()
		})
	})

	// Writes queued behind a commit form a batch of LingerMin or more:
	// the writer waits up to Linger for more, and a write arriving in that
	// window joins the batch.
	t.Run("a forming batch waits for more writes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &clockStore{hold: make(chan struct{})}
			c := NewCommitter(t.Context(), s, cfg)
			var wg sync.WaitGroup
			commit := func(key string) {
				wg.Go(func() {
					if _, err := c.Commit(context.Background(), sw(key)); err != nil {
						t.Error(err)
					}
				})
			}
			commit("first") // the writer takes it and blocks in the store
			synctest.Wait()
			for i := range 4 {
				commit(fmt.Sprint("queued-", i))
			}
			synctest.Wait() // all four wait in the queue
			t0 := time.Now()
			close(s.hold)
			time.Sleep(linger / 2)
			commit("late") // arrives while the writer lingers
			wg.Wait()
			c.Close()
			if got := s.sizes(); fmt.Sprint(got) != "[1 5]" {
				t.Fatalf("batches %v, want [1 5]: the late write joins the lingering batch", got)
			}
			if d := s.at[1].Sub(t0); d != linger {
				t.Errorf("second batch committed %v after it formed, want the linger (%v)", d, linger)
			}
		})
	})

	// A batch that reaches LingerUntil commits without waiting out the
	// linger.
	t.Run("a full enough batch commits at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &clockStore{hold: make(chan struct{})}
			c := NewCommitter(t.Context(), s, cfg)
			var wg sync.WaitGroup
			for i := range 9 {
				wg.Go(func() {
					if _, err := c.Commit(context.Background(), sw(fmt.Sprint(i))); err != nil {
						t.Error(err)
					}
				})
				if i == 0 {
					synctest.Wait() // the first is in the store, the rest queue
				}
			}
			synctest.Wait()
			t0 := time.Now()
			close(s.hold)
			wg.Wait()
			c.Close()
			if got := s.sizes(); fmt.Sprint(got) != "[1 8]" {
				t.Fatalf("batches %v, want [1 8]", got)
			}
			if d := s.at[1].Sub(t0); d != 0 {
				t.Errorf("a batch of LingerUntil writes waited %v", d)
			}
		})
	})

	// Close while the writer lingers commits what it holds.
	t.Run("close during linger commits the batch", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &clockStore{hold: make(chan struct{})}
			c := NewCommitter(t.Context(), s, cfg)
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					if _, err := c.Commit(context.Background(), sw(fmt.Sprint(i))); err != nil {
						t.Error(err)
					}
				})
				if i == 0 {
					synctest.Wait()
				}
			}
			synctest.Wait()
			close(s.hold)
			synctest.Wait() // the writer now lingers on a batch of 3
			c.Close()
			wg.Wait()
			if got := s.sizes(); fmt.Sprint(got) != "[1 3]" {
				t.Fatalf("batches %v, want [1 3]", got)
			}
		})
	})
}
