package node_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/store"
)

// TestSyncSignOnAJobKey checks the answer to POST /v1/sign for a key an
// async job holds: 409 in flight while the job is accepted, 422 once it
// failed, and the stored signature once it is signed.
func TestSyncSignOnAJobKey(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{})
	req := docRequest("held")
	r := n.submit(t, "held", req, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit = %d %s", r.status, r.body)
	}
	job := decodeJob(t, r)
	body, _ := json.Marshal(req)
	sync := func() (int, api.Problem) {
		r := n.do(t, http.MethodPost, "/v1/sign", map[string]string{"Idempotency-Key": "held"}, body)
		var p api.Problem
		json.Unmarshal(r.body, &p)
		return r.status, p
	}
	if st, p := sync(); st != http.StatusConflict || p.Type != api.TypeIdempotencyInFlight {
		t.Errorf("sync sign on an accepted job's key = %d %s, want 409 %s", st, p.Type, api.TypeIdempotencyInFlight)
	}
	ctx := context.Background()
	j, err := n.inst.Store.Job(ctx, "dev", job.ID)
	if err != nil {
		t.Fatal(err)
	}
	ev := store.AuditEvent{Time: time.Now().UTC().Truncate(time.Microsecond), Type: "job.failed", Actor: "test",
		TenantID: "dev", Subject: "job:" + j.ID, Entry: []byte(`{"type":"job.failed"}`)}
	if err := n.inst.Store.FailJob(ctx, j.ID, []byte(`{"status":422}`), ev); err != nil {
		t.Fatal(err)
	}
	if st, p := sync(); st != http.StatusUnprocessableEntity || p.Type != api.TypeIdempotencyMismatch {
		t.Errorf("sync sign on a failed job's key = %d %s, want 422 %s", st, p.Type, api.TypeIdempotencyMismatch)
	}
}

// TestWorkerLinksExistingSignature creates exactly the incomplete record
// the worker must finish: an accepted job whose key already holds the
// signature of the same request (here: signed synchronously under another
// key, then the job's key moved onto it with raw SQL, as a release blind to
// jobs would leave it). The worker completes the job with that signature,
// records job.completed_from_existing, and signs nothing.
func TestWorkerLinksExistingSignature(t *testing.T) {
	for _, first := range []bool{true, false} {
		name := map[bool]string{true: "first delivery", false: "redelivery"}[first]
		t.Run(name, func(t *testing.T) {
			n := newAsyncNode(t, asyncOptions{})
			req := docRequest("linked")
			r := n.submit(t, "job-key", req, nil)
			if r.status != http.StatusAccepted {
				t.Fatalf("submit = %d %s", r.status, r.body)
			}
			jobID := decodeJob(t, r).ID
			body, _ := json.Marshal(req)
			sr := n.do(t, http.MethodPost, "/v1/sign", map[string]string{"Idempotency-Key": "sig-key"}, body)
			if sr.status != http.StatusOK {
				t.Fatalf("sync sign = %d %s", sr.status, sr.body)
			}
			var resp api.SignResponse
			if err := json.Unmarshal(sr.body, &resp); err != nil {
				t.Fatal(err)
			}
			db, err := sql.Open("sqlite", filepath.Join(n.dir, "countersign.db"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(`UPDATE jobs SET idempotency_key = 'sig-key' WHERE id = ?`, jobID); err != nil {
				t.Fatal(err)
			}
			db.Close()
			before := storeSignatureCount(t, n)
			m := queue.Message{ID: node.MessageID("dev", "sig-key"), Tenant: "dev", Body: []byte(`{"job_id":"` + jobID + `"}`)}
			if first {
				runWorkerUntil(t, n, func() bool {
					j, err := n.inst.Store.Job(context.Background(), "dev", jobID)
					return err == nil && j.State == store.JobSigned
				})
			} else if err := n.worker.Process(context.Background(), m); err != nil {
				t.Fatalf("Process: %v", err)
			}
			v, _ := n.waitJob(t, jobID)
			if v.State != node.JobStateSigned {
				t.Fatalf("job = %+v, want signed", v)
			}
			var got api.SignResponse
			if err := json.Unmarshal(v.Signature, &got); err != nil {
				t.Fatal(err)
			}
			if got.ID != resp.ID || got.Signature != resp.Signature {
				t.Errorf("job's signature = %s, want the existing %s", got.ID, resp.ID)
			}
			if after := storeSignatureCount(t, n); after != before {
				t.Errorf("%d signatures after completing, want %d: nothing signed again", after, before)
			}
			size, _ := n.inst.Store.AuditSize(context.Background())
			evs, err := n.inst.Store.AuditEvents(context.Background(), 0, size)
			if err != nil {
				t.Fatal(err)
			}
			linked := 0
			for _, ev := range evs {
				if ev.Type == "job.completed_from_existing" && ev.Subject == "job:"+jobID && strings.Contains(string(ev.Entry), resp.ID) {
					linked++
				}
			}
			if linked != 1 {
				t.Errorf("%d job.completed_from_existing events naming %s, want 1", linked, resp.ID)
			}
		})
	}
}

// TestSweeperResendsUndeliveredCallbacks leaves a signed job whose
// callback was never answered (the state a crash between ack and callback
// leaves: no attempt recorded) and checks that the sweeper sends it after
// SweepAfter, backs off after a refused attempt, records the delivery, and
// then leaves the job alone.
func TestSweeperResendsUndeliveredCallbacks(t *testing.T) {
	firstSeen, firstGone := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	calls, delivered := 0, 0
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		mu.Lock()
		calls++
		call := calls
		mu.Unlock()
		switch call {
		case 1: // hangs until the sender dies
			close(firstSeen)
			<-r.Context().Done()
			close(firstGone)
		case 2:
			w.WriteHeader(http.StatusBadRequest) // refused: no in-process retry
		default:
			mu.Lock()
			delivered++
			mu.Unlock()
		}
	}))
	defer cb.Close()
	var clockMu sync.Mutex
	now := time.Now()
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	n := newAsyncNode(t, asyncOptions{worker: node.WorkerConfig{SweepAfter: 30 * time.Second, CallbackAttempts: 5,
		CallbackBackoff: time.Minute, Now: clock}})
	r := n.submit(t, "cb", docRequest("cb"), map[string]string{node.CallbackHeader: cb.URL})
	if r.status != http.StatusAccepted {
		t.Fatalf("submit = %d %s", r.status, r.body)
	}
	jobID := decodeJob(t, r).ID
	ctx := context.Background()
	pctx, die := context.WithCancel(ctx)
	m := queue.Message{ID: node.MessageID("dev", "cb"), Tenant: "dev", Body: []byte(`{"job_id":"` + jobID + `"}`)}
	if err := n.worker.Process(pctx, m); err != nil {
		t.Fatal(err)
	}
	<-firstSeen
	die() // the process "dies" with the callback in flight
	<-firstGone
	job := func() store.Job {
		j, err := n.inst.Store.Job(ctx, "dev", jobID)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	if j := job(); j.State != store.JobSigned || j.CallbackAttempts != 0 || !j.CallbackDeliveredAt.IsZero() {
		t.Fatalf("job after the crash = %s, %d attempts, delivered %v; want signed, 0, never", j.State, j.CallbackAttempts, j.CallbackDeliveredAt)
	}
	sweep := func() int {
		t.Helper()
		k, err := n.worker.SweepCallbacks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	if k := sweep(); k != 0 {
		t.Errorf("sweep before SweepAfter started %d callbacks, want 0 (the job's own worker delivers first)", k)
	}
	advance(40 * time.Second)
	waitFor(t, func() bool { return sweep() == 1 }) // once the dead sender has let go
	waitFor(t, func() bool { return job().CallbackAttempts == 1 })
	if k := sweep(); k != 0 {
		t.Errorf("sweep right after a refused attempt started %d, want 0 (backoff)", k)
	}
	advance(61 * time.Second)
	if k := sweep(); k != 1 {
		t.Errorf("sweep after the backoff started %d, want 1", k)
	}
	waitFor(t, func() bool { return !job().CallbackDeliveredAt.IsZero() })
	advance(time.Hour)
	if k := sweep(); k != 0 {
		t.Errorf("sweep after delivery started %d, want 0", k)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 || delivered != 1 {
		t.Errorf("callback server saw %d calls, %d delivered; want 3 and 1", calls, delivered)
	}
	if j := job(); j.CallbackAttempts != 2 {
		t.Errorf("CallbackAttempts = %d, want 2 recorded (the dead sender's is not)", j.CallbackAttempts)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
