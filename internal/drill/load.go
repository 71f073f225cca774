package drill

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/api"
)

// outcome is one client request's final answer.
type outcome struct {
	Key      string // idempotency key
	Status   string // accepted | refused | error
	SigID    string
	Release  string
	Detail   string
	Finished time.Time
	Async    bool // signed through POST /v1/sign:async
}

// asyncShare is how many of every 8 load clients sign asynchronously, so
// that queued, in-flight work exists when the incident hits.
const asyncShare = 2

// load drives closed-loop sign requests through the gateway until stopped:
// most clients sign synchronously, asyncShare of every 8 through the queue.
type load struct {
	c       *client.Client
	async   *asyncClient
	key     string
	workers int

	sent atomic.Int64
	mu   sync.Mutex
	outs []outcome
	wg   sync.WaitGroup
	stop chan struct{}
}

func newLoad(gatewayURL, token, key string, workers int) (*load, error) {
	c, err := client.New(gatewayURL, token, client.WithRetry(client.RetryPolicy{
		MaxAttempts: 1000, Budget: 45 * time.Second, MaxDelay: 2 * time.Second, BaseDelay: 50 * time.Millisecond}))
	if err != nil {
		return nil, err
	}
	ac := &asyncClient{base: gatewayURL, token: token, hc: &http.Client{Timeout: 30 * time.Second}}
	return &load{c: c, async: ac, key: key, workers: workers, stop: make(chan struct{})}, nil
}

// isAsync says whether load client w signs asynchronously.
func (l *load) isAsync(w int) bool {
	return w%8 < asyncShare
}

func (l *load) start(ctx context.Context) {
	formats := []client.Format{client.FormatCMS, client.FormatJWS, client.FormatRaw}
	for w := range l.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				doc := make([]byte, 256)
				rand.Read(doc)
				key := fmt.Sprintf("drill-%d-%d-%x", w, i, doc[:6])
				l.sent.Add(1)
				if l.isAsync(w) {
					o := l.async.sign(context.WithoutCancel(ctx), api.SignRequest{Key: l.key, Format: api.Format(formats[(w+i)%3]), Document: doc}, key)
					o.Async = true
					l.mu.Lock()
					l.outs = append(l.outs, o)
					l.mu.Unlock()
					continue
				}
				// Each request runs to its final answer even when the
				// drill is stopping: an abandoned request would be "lost".
				resp, err := l.c.Sign(context.WithoutCancel(ctx), client.SignRequest{Key: l.key, Format: formats[(w+i)%3], Document: doc},
					client.WithIdempotencyKey(key))
				o := outcome{Key: key, Finished: time.Now()}
				switch {
				case err == nil:
					o.Status, o.SigID, o.Release = "accepted", resp.ID, resp.Release
				case client.IsProblem(err, client.TypeMaintenance) || client.IsProblem(err, client.TypeUnavailable):
					o.Status, o.Detail = "refused", err.Error()
				default:
					// A problem answer (4xx/5xx) is a final answer the client
					// can act on; a transport error that outlived every
					// retry is no answer at all.
					var p *client.Problem
					var re *client.RetriesExhaustedError
					switch {
					case errors.As(err, &p) && errors.As(err, &re):
						o.Status, o.Detail = "refused", err.Error()
					case errors.As(err, &p):
						o.Status, o.Detail = "failed", err.Error()
					default:
						o.Status, o.Detail = "no-answer", err.Error()
					}
				}
				l.mu.Lock()
				l.outs = append(l.outs, o)
				l.mu.Unlock()
			}
		}()
	}
}

// finish stops sending and waits for every request to get its final answer.
func (l *load) finish() []outcome {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]outcome(nil), l.outs...)
}
