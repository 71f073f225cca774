package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue"
)

// BenchmarkAsyncVsSync measures, in the same run and on the same node,
// synchronous signing (POST /v1/sign → 200) and asynchronous signing end to
// end (POST /v1/sign:async → 202 → signature persisted by the worker on
// embedded JetStream), with 16 concurrent clients. It reports both rates
// and async/sync.
func BenchmarkAsyncVsSync(b *testing.B) {
	n := newAsyncNode(b, asyncOptions{runWorker: true, worker: node.WorkerConfig{Concurrency: 8}})
	const clients = 16
	fire := func(path, prefix string) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					key := fmt.Sprintf("%s-%d", prefix, i)
					body, _ := json.Marshal(api.SignRequest{Key: "default", Format: api.FormatRaw, Document: []byte(key)})
					req, _ := http.NewRequest(http.MethodPost, n.ts.URL+path, strings.NewReader(string(body)))
					req.Header.Set("Authorization", "Bearer "+n.token)
					req.Header.Set("Idempotency-Key", key)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
						b.Errorf("%s: %d", path, resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	b.ResetTimer()
	syncTime := fire("/v1/sign", fmt.Sprintf("s%d", b.N))
	base := storeSignatureCount(b, n)
	start := time.Now()
	fire("/v1/sign:async", fmt.Sprintf("a%d", b.N))
	accepted := time.Since(start)
	for storeSignatureCount(b, n) < base+b.N {
		if time.Since(start) > 5*time.Minute {
			b.Fatal("async signatures not persisted within 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	asyncTime := time.Since(start)
	b.StopTimer()
	syncRate := float64(b.N) / syncTime.Seconds()
	asyncRate := float64(b.N) / asyncTime.Seconds()
	b.ReportMetric(syncRate, "sync-sig/s")
	b.ReportMetric(asyncRate, "async-sig/s")
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "async-202/s")
	b.ReportMetric(asyncRate/syncRate, "async/sync")
}

// BenchmarkReplayRate measures how closely Replay keeps to its rate limit
// while signing each quarantined job with the worker: it reports the
// achieved rate and its relative error against the requested one.
func BenchmarkReplayRate(b *testing.B) {
	const msgs, rate = 40, 80.0
	for range b.N {
		b.StopTimer()
		n := newAsyncNode(b, asyncOptions{})
		var ids []string
		for i := range msgs {
			k := fmt.Sprintf("r-%d", i)
			if r := n.submit(b, k, docRequest(k), nil); r.status != http.StatusAccepted {
				b.Fatalf("submit: %d %s", r.status, r.body)
			}
			ids = append(ids, node.MessageID("dev", k))
		}
		if _, err := n.q.Quarantine(context.Background(), queue.Selector{IDs: ids}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		res, err := n.q.Replay(context.Background(), queue.ReplayOptions{Rate: rate, Handler: n.worker.Process})
		elapsed := time.Since(start)
		if err != nil || len(res.IDs) != msgs {
			b.Fatalf("Replay = %d ids, %v", len(res.IDs), err)
		}
		// n deliveries at rate r take (n-1)/r seconds with a burst of one.
		achieved := float64(msgs-1) / elapsed.Seconds()
		b.ReportMetric(achieved, "replay-msg/s")
		b.ReportMetric((achieved-rate)/rate*100, "rate-error-%")
		if achieved > rate*1.05 {
			b.Errorf("replay ran at %.1f/s, above the %.0f/s limit", achieved, rate)
		}
	}
}
