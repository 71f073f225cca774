package auditlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

// Many writers append while the Integrator runs: the sequence is gap-free,
// every checkpoint extends the previous one, checkpoints are rate-limited,
// and the final tree verifies.
func TestConcurrentWritersAndRun(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	const interval = 20 * time.Millisecond
	in, err := NewIntegrator(l.st, Config{Signer: l.in.cfg.Signer, HistoryPath: l.history, Interval: interval, BatchSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- in.Run(runCtx) }()

	const writers, rounds, batch = 8, 40, 5
	var wg sync.WaitGroup
	idxs := make([][]int64, writers)
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				evs := make([]store.AuditEvent, batch)
				for i := range evs {
					evs[i] = testEvent(t, w*100000+r*batch+i)
				}
				got, err := l.st.AppendEvents(ctx, evs)
				if err != nil {
					t.Error(err)
					return
				}
				idxs[w] = append(idxs[w], got...)
			}
		})
	}
	wg.Wait()
	stop()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	elapsed := time.Since(start)
	cp, err := in.IntegrateOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const total = writers * rounds * batch
	if cp.Size != total {
		t.Fatalf("checkpoint size %d, want %d", cp.Size, total)
	}
	seen := make([]bool, total)
	for _, ws := range idxs {
		for i, x := range ws {
			if x < 0 || x >= total || seen[x] {
				t.Fatalf("index %d duplicated or out of range", x)
			}
			if i%batch > 0 && x != ws[i-1]+1 {
				t.Fatalf("a batch was not given consecutive indexes: %d after %d", x, ws[i-1])
			}
			seen[x] = true
		}
	}
	if _, err := Verify(ctx, StoreSource{R: l.st}, l.vkey, VerifyOptions{}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := CheckFork(ctx, l.st, l.history); err != nil {
		t.Fatalf("CheckFork: %v", err)
	}
	// Every recorded checkpoint is consistent with the final tree, sizes
	// only grow, and there was at most one per interval (plus the final).
	recs := readHistory(t, l.history)
	if max := int(elapsed/interval) + 2; len(recs) > max {
		t.Errorf("%d checkpoints in %v, more than one per %v", len(recs), elapsed, interval)
	}
	prev := int64(0)
	for _, r := range recs {
		c, err := OpenCheckpoint([]byte(r.Note), l.vkey)
		if err != nil {
			t.Fatal(err)
		}
		if c.Size <= prev {
			t.Fatalf("history sizes not increasing: %d after %d", c.Size, prev)
		}
		prev = c.Size
		if _, err := Verify(ctx, StoreSource{R: l.st}, l.vkey, VerifyOptions{Since: c.Note}); err != nil {
			t.Fatalf("checkpoint %d not consistent with the final tree: %v", c.Size, err)
		}
	}
}

func readHistory(t *testing.T, path string) []historyRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []historyRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r historyRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
