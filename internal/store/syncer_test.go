package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// syncingStore is a DeferredSyncer test double that logs commits and
// syncs in order. A sync blocks until the test releases it, so batches
// committed meanwhile must wait for the next one.
type syncingStore struct {
	mu      sync.Mutex
	log     []string // "commit <keys>", "sync-start <n>", "sync-end <n>"
	next    int64
	syncs   int
	gate    chan struct{} // each sync takes one value
	failAt  int           // the sync number that fails (0: none)
	commits int
}

func (s *syncingStore) record(e string) {
	s.mu.Lock()
	s.log = append(s.log, e)
	s.mu.Unlock()
}

func (s *syncingStore) CommitSignatures(context.Context, []SignatureWrite) ([]WriteResult, error) {
	return nil, errors.New("CommitSignatures called on a DeferredSyncer")
}

func (s *syncingStore) CommitSignaturesNoSync(_ context.Context, ws []SignatureWrite) ([]WriteResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits++
	rs := make([]WriteResult, len(ws))
	keys := ""
	for i, w := range ws {
		rs[i] = WriteResult{AuditIndex: s.next}
		s.next++
		keys += w.Signature.IdempotencyKey + ","
	}
	s.log = append(s.log, "commit "+keys)
	return rs, nil
}

func (s *syncingStore) SyncCommitted(context.Context) error {
	s.mu.Lock()
	s.syncs++
	n := s.syncs
	s.log = append(s.log, fmt.Sprintf("sync-start %d", n))
	s.mu.Unlock()
	<-s.gate
	s.record(fmt.Sprintf("sync-end %d", n))
	if n == s.failAt {
		return errors.New("fsync: input/output error")
	}
	return nil
}

// durableAt reports whether the log shows key's commit followed by a sync
// that started after it and ended.
func (s *syncingStore) durableAt(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	committed, started := false, ""
	for _, e := range s.log {
		switch {
		case !committed && len(e) > 7 && e[:7] == "commit " && contains(e[7:], key+","):
			committed = true
		case committed && started == "" && len(e) > 11 && e[:11] == "sync-start ":
			started = e[11:]
		case started != "" && e == "sync-end "+started:
			return true
		}
	}
	return false
}

func contains(list, item string) bool {
	for i := 0; i+len(item) <= len(list); i++ {
		if (i == 0 || list[i-1] == ',') && list[i:i+len(item)] == item {
			return true
		}
	}
	return false
}

// A write is answered only once an fsync begun after its commit has
// ended; batches committed while an fsync runs share the next one.
func TestCommitterAnswersAfterSync(t *testing.T) {
	s := &syncingStore{gate: make(chan struct{}, 100)}
	c := NewCommitter(t.Context(), s, CommitterConfig{MaxBatch: 4})
	answered := make(chan string, 32)
	var wg sync.WaitGroup
	commit := func(key string) {
		wg.Go(func() {
			if _, err := c.Commit(t.Context(), sw(key)); err != nil {
				t.Error(err)
				return
			}
			if !s.durableAt(key) {
				t.Errorf("%s answered before an fsync that began after its commit ended", key)
			}
			answered <- key
		})
	}
	commit("a")
	// a is committed and its fsync is blocked: more batches commit meanwhile.
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.syncs == 1 })
	for i := range 10 {
		commit(fmt.Sprint(i))
	}
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.commits >= 4 })
	select {
	case k := <-answered:
		t.Fatalf("%s answered while the first fsync is still running", k)
	case <-time.After(50 * time.Millisecond):
	}
	for range 100 {
		s.gate <- struct{}{}
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Writes != 11 || st.Failed != 0 {
		t.Errorf("Stats = %+v, want 11 writes", st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncs >= s.commits {
		t.Errorf("%d syncs for %d commits: the batches committed during an fsync should share the next", s.syncs, s.commits)
	}
}

// A failed fsync fails the writes it was to confirm and every write
// after it, without committing them.
func TestCommitterLatchesFailedSync(t *testing.T) {
	s := &syncingStore{gate: make(chan struct{}, 100), failAt: 1}
	for range 100 {
		s.gate <- struct{}{}
	}
	c := NewCommitter(t.Context(), s, CommitterConfig{})
	defer c.Close()
	if err := c.Err(); err != nil {
		t.Fatalf("Err before any failure = %v", err)
	}
	if _, err := c.Commit(t.Context(), sw("a")); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Commit whose fsync failed = %v, want ErrNotDurable", err)
	}
	if err := c.Err(); !errors.Is(err, ErrNotDurable) {
		t.Errorf("Err after a failed fsync = %v, want ErrNotDurable", err)
	}
	_, errs := c.CommitAll(t.Context(), []SignatureWrite{sw("b"), sw("c")})
	for i, err := range errs {
		if !errors.Is(err, ErrNotDurable) {
			t.Errorf("write %d after a failed fsync = %v, want ErrNotDurable", i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commits != 1 {
		t.Errorf("%d commits: writes after a failed fsync must not be committed", s.commits)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
