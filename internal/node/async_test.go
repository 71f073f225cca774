package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/store"
)

// asyncNode is a real installation (SQLite, soft keys) with an embedded
// JetStream queue, served over loopback HTTP, with an optional worker.
type asyncNode struct {
	dir    string
	inst   *install.Installation
	q      *jetstream.Queue
	srv    *node.Server
	ts     *httptest.Server
	token  string
	worker *node.Worker
}

type asyncOptions struct {
	runWorker bool
	worker    node.WorkerConfig
	// publisher wraps the queue the HTTP path publishes to.
	publisher func(node.Publisher) node.Publisher
}

func newAsyncNode(t testing.TB, o asyncOptions) *asyncNode {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := install.Init(ctx, dir, install.Options{Dev: true, ScryptN: 1 << 10, Logger: asyncQuietLogger()}); err != nil {
		t.Fatalf("install.Init: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "dev-token"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := install.Open(ctx, dir, install.OpenOptions{ScryptN: 1 << 10, Release: "async-r1", Instance: "async-1", Logger: asyncQuietLogger()})
	if err != nil {
		t.Fatalf("install.Open: %v", err)
	}
	q, err := jetstream.OpenEmbedded(ctx, jetstream.ServerConfig{StoreDir: filepath.Join(dir, "jetstream")}, jetstream.Config{AckWait: 2 * time.Second, Logger: asyncQuietLogger()})
	if err != nil {
		inst.Close()
		t.Fatalf("jetstream.OpenEmbedded: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	committer := store.NewCommitter(runCtx, inst.Store, store.CommitterConfig{})
	var pub node.Publisher = q
	if o.publisher != nil {
		pub = o.publisher(q)
	}
	srv, err := node.New(node.Config{Store: inst.Store, Committer: committer, Keys: inst.Keys, Jobs: inst.Store, Queue: pub,
		Release: "async-r1", Instance: "async-1", Logger: asyncQuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	n := &asyncNode{dir: dir, inst: inst, q: q, srv: srv, ts: httptest.NewServer(srv), token: strings.TrimSpace(string(tok))}
	wcfg := o.worker
	wcfg.Queue = q
	if wcfg.Logger == nil {
		wcfg.Logger = asyncQuietLogger()
	}
	if n.worker, err = node.NewWorker(srv, wcfg); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wctx, stopWorker := context.WithCancel(ctx)
	if o.runWorker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.worker.Run(wctx); err != nil {
				t.Errorf("worker.Run: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		stopWorker()
		wg.Wait()
		n.ts.Close()
		committer.Close()
		cancel()
		q.Close()
		inst.Close()
	})
	return n
}

func asyncQuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// asyncReply is one HTTP answer.
type asyncReply struct {
	status int
	header http.Header
	body   []byte
}

func (n *asyncNode) do(t testing.TB, method, path string, hdr map[string]string, body []byte) asyncReply {
	t.Helper()
	req, err := http.NewRequest(method, n.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return asyncReply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (n *asyncNode) submit(t testing.TB, idem string, req api.SignRequest, hdr map[string]string) asyncReply {
	t.Helper()
	h := map[string]string{"Idempotency-Key": idem}
	for k, v := range hdr {
		h[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return n.do(t, http.MethodPost, "/v1/sign:async", h, b)
}

func decodeJob(t testing.TB, r asyncReply) node.JobView {
	t.Helper()
	var v node.JobView
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("job body %s: %v", r.body, err)
	}
	return v
}

// waitJob polls GET /v1/jobs/{id} until the job is finished.
func (n *asyncNode) waitJob(t testing.TB, id string) (node.JobView, asyncReply) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := n.do(t, http.MethodGet, "/v1/jobs/"+id, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /v1/jobs/%s = %d %s", id, r.status, r.body)
		}
		v := decodeJob(t, r)
		if v.State != node.JobStateAccepted {
			return v, r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still accepted after 20s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func docRequest(s string) api.SignRequest {
	return api.SignRequest{Key: "default", Format: api.FormatJWS, Document: []byte(s), DocumentID: "doc-" + s}
}

func TestAsyncSignMatchesSync(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{runWorker: true})
	r := n.submit(t, "async-1", docRequest("contract 1"), nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/sign:async = %d %s, want 202", r.status, r.body)
	}
	v := decodeJob(t, r)
	if loc := r.header.Get("Location"); loc != "/v1/jobs/"+v.ID {
		t.Errorf("Location = %q, want /v1/jobs/%s", loc, v.ID)
	}
	done, _ := n.waitJob(t, v.ID)
	if done.State != node.JobStateSigned || done.FinishedAt == nil || len(done.Signature) == 0 {
		t.Fatalf("finished job = %+v, want signed with a signature", done)
	}
	// The synchronous path with the same key answers the stored signature:
	// the job carries exactly its body.
	b, _ := json.Marshal(docRequest("contract 1"))
	sync := n.do(t, http.MethodPost, "/v1/sign", map[string]string{"Idempotency-Key": "async-1"}, b)
	if sync.status != http.StatusOK {
		t.Fatalf("POST /v1/sign replay = %d %s", sync.status, sync.body)
	}
	if !bytes.Equal(sync.body, done.Signature) {
		t.Errorf("job signature differs from the sync body:\njob  %s\nsync %s", done.Signature, sync.body)
	}
	var sig api.SignResponse
	if err := json.Unmarshal(done.Signature, &sig); err != nil {
		t.Fatal(err)
	}
	if sig.Release != "async-r1" || sig.KeyVersion != 1 || sig.AuditIndex <= 0 {
		t.Errorf("signature stamp = %+v", sig)
	}
}

func TestAsyncRequests(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{})
	first := n.submit(t, "k-1", docRequest("a"), nil)
	if first.status != http.StatusAccepted {
		t.Fatalf("first submit = %d %s", first.status, first.body)
	}
	firstJob := decodeJob(t, first)
	if firstJob.State != node.JobStateAccepted {
		t.Fatalf("state without a worker = %q, want accepted", firstJob.State)
	}
	b, _ := json.Marshal(docRequest("sync"))
	if r := n.do(t, http.MethodPost, "/v1/sign", map[string]string{"Idempotency-Key": "sync-1"}, b); r.status != http.StatusOK {
		t.Fatalf("sync sign = %d %s", r.status, r.body)
	}
	other, err := n.inst.CreateTenant(context.Background(), "other", "test")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		idem     string
		req      api.SignRequest
		hdr      map[string]string
		wantCode int
		wantType string
		sameJob  bool
	}{
		{name: "replay returns the same job", idem: "k-1", req: docRequest("a"), wantCode: 202, sameJob: true},
		{name: "same key other request", idem: "k-1", req: docRequest("b"), wantCode: 422, wantType: api.TypeIdempotencyMismatch},
		{name: "key of a sync signature", idem: "sync-1", req: docRequest("sync"), wantCode: 422, wantType: api.TypeIdempotencyMismatch},
		{name: "no key", idem: "", req: docRequest("c"), wantCode: 400, wantType: api.TypeIdempotencyMissing},
		{name: "unknown signing key", idem: "k-2", req: api.SignRequest{Key: "nope", Format: api.FormatJWS, Document: []byte("x")}, wantCode: 404, wantType: api.TypeKeyNotFound},
		{name: "bad format", idem: "k-3", req: api.SignRequest{Key: "default", Format: "pdf", Document: []byte("x")}, wantCode: 400, wantType: api.TypeMalformed},
		{name: "callback not http", idem: "k-4", req: docRequest("d"), hdr: map[string]string{node.CallbackHeader: "ftp://x/y"}, wantCode: 400, wantType: api.TypeMalformed},
		{name: "callback with credentials", idem: "k-5", req: docRequest("e"), hdr: map[string]string{node.CallbackHeader: "https://u:p@x/y"}, wantCode: 400, wantType: api.TypeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			b, _ := json.Marshal(tt.req)
			if tt.idem != "" {
				hdr["Idempotency-Key"] = tt.idem
			}
			r := n.do(t, http.MethodPost, "/v1/sign:async", hdr, b)
			if r.status != tt.wantCode {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.wantCode)
			}
			if tt.wantType != "" {
				var p api.Problem
				if err := json.Unmarshal(r.body, &p); err != nil || p.Type != tt.wantType {
					t.Errorf("problem = %s, want type %s", r.body, tt.wantType)
				}
			}
			if tt.sameJob && decodeJob(t, r).ID != firstJob.ID {
				t.Errorf("replay job = %s, want %s", decodeJob(t, r).ID, firstJob.ID)
			}
		})
	}
	t.Run("other tenant cannot read the job", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, n.ts.URL+"/v1/jobs/"+firstJob.ID, nil)
		req.Header.Set("Authorization", "Bearer "+string(other))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET another tenant's job = %d, want 404", resp.StatusCode)
		}
	})
	t.Run("unknown job", func(t *testing.T) {
		if r := n.do(t, http.MethodGet, "/v1/jobs/job_nope", nil, nil); r.status != http.StatusNotFound {
			t.Errorf("GET unknown job = %d, want 404", r.status)
		}
	})
}

// failingPublisher refuses every publish while fail is set.
type failingPublisher struct {
	node.Publisher
	mu   sync.Mutex
	fail bool
}

func (p *failingPublisher) Publish(ctx context.Context, m queue.Message) (queue.PublishResult, error) {
	p.mu.Lock()
	fail := p.fail
	p.mu.Unlock()
	if fail {
		return queue.PublishResult{}, errors.New("broker unreachable")
	}
	return p.Publisher.Publish(ctx, m)
}

func TestSweeperQueuesJobsWhosePublishFailed(t *testing.T) {
	fp := &failingPublisher{fail: true}
	now := time.Now()
	clock := func() time.Time { return now }
	n := newAsyncNode(t, asyncOptions{
		publisher: func(p node.Publisher) node.Publisher { fp.Publisher = p; return fp },
		worker:    node.WorkerConfig{SweepAfter: time.Minute, Now: func() time.Time { return clock() }},
	})
	r := n.submit(t, "lost-1", docRequest("lost"), nil)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("submit with the broker down = %d %s, want 503 with Retry-After", r.status, r.body)
	}
	j, err := n.inst.Store.JobByIdempotencyKey(context.Background(), "dev", "lost-1")
	if err != nil || j.State != store.JobAccepted {
		t.Fatalf("job after failed publish = %+v, %v; want it recorded as accepted", j, err)
	}
	// Too young for the sweeper.
	if got, err := n.worker.Sweep(context.Background()); err != nil || got != 0 {
		t.Fatalf("Sweep of a young job = %d, %v; want 0", got, err)
	}
	clock = func() time.Time { return now.Add(2 * time.Minute) }
	if got, err := n.worker.Sweep(context.Background()); err != nil || got != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 job re-published", got, err)
	}
	stats, err := n.q.Stats(context.Background(), node.DefaultConsumer)
	if err != nil || stats.Pending != 1 {
		t.Fatalf("queue after sweep = %+v, %v; want 1 pending", stats, err)
	}
	runWorkerUntil(t, n, func() bool {
		j, _ := n.inst.Store.Job(context.Background(), "dev", j.ID)
		return j.State == store.JobSigned
	})
	assertOneSignaturePerKey(t, n, []string{"lost-1"})
}

// runWorkerUntil runs the worker until cond holds (or fails after 20s).
func runWorkerUntil(t testing.TB, n *asyncNode, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.worker.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertOneSignaturePerKey checks each key of tenant dev has a signed job
// whose signature is the one stored for the key, with its audit event, and
// that no signature event is duplicated.
func assertOneSignaturePerKey(t testing.TB, n *asyncNode, keys []string) {
	t.Helper()
	checkSignedJobs(t, n.inst.Store, "dev", keys)
}

func checkSignedJobs(t testing.TB, st store.Store, tenant string, keys []string) {
	t.Helper()
	ctx := context.Background()
	size, err := st.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events, err := st.AuditEvents(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	sigEvents := map[string]int{}
	for _, ev := range events {
		if ev.Type == "signature.created" {
			sigEvents[strings.TrimPrefix(ev.Subject, "signature:")]++
		}
	}
	sigs, err := st.Signatures(ctx, 0, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string]int{}
	for _, s := range sigs {
		perKey[s.TenantID+"/"+s.IdempotencyKey]++
		if sigEvents[s.ID] != 1 {
			t.Errorf("signature %s has %d audit events, want 1", s.ID, sigEvents[s.ID])
		}
	}
	if len(sigEvents) != len(sigs) {
		t.Errorf("%d signature.created events for %d signature rows", len(sigEvents), len(sigs))
	}
	for k, c := range perKey {
		if c != 1 {
			t.Errorf("idempotency key %s has %d signatures", k, c)
		}
	}
	for _, k := range keys {
		j, err := st.JobByIdempotencyKey(ctx, tenant, k)
		if err != nil {
			t.Errorf("accepted key %s has no job: %v", k, err)
			continue
		}
		if j.State != store.JobSigned {
			t.Errorf("job %s (key %s) is %s, want signed", j.ID, k, j.State)
			continue
		}
		sig, err := st.SignatureByIdempotencyKey(ctx, tenant, k)
		if err != nil || sig.ID != j.SignatureID {
			t.Errorf("job %s: signature %q, stored for the key %q (%v)", j.ID, j.SignatureID, sig.ID, err)
		}
	}
}

func TestCallbackSignedAndRetried(t *testing.T) {
	secret := node.CallbackSecret("0123456789abcdef0123456789abcdef")
	type got struct {
		header string
		body   []byte
	}
	var mu sync.Mutex
	var calls []got
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, got{r.Header.Get(node.CallbackSignatureHeader), b})
		n := len(calls)
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	n := newAsyncNode(t, asyncOptions{runWorker: true, worker: node.WorkerConfig{CallbackSecret: secret, CallbackBackoff: 10 * time.Millisecond}})
	r := n.submit(t, "cb-1", docRequest("callback"), map[string]string{node.CallbackHeader: recv.URL + "/hook"})
	if r.status != http.StatusAccepted {
		t.Fatalf("submit = %d %s", r.status, r.body)
	}
	job, _ := n.waitJob(t, decodeJob(t, r).ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		c := len(calls)
		mu.Unlock()
		if c >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callback attempts within 10s, want 3", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	last := calls[2]
	mu.Unlock()
	if err := node.VerifyCallback(secret, last.header, last.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("VerifyCallback: %v", err)
	}
	var v node.JobView
	if err := json.Unmarshal(last.body, &v); err != nil || v.ID != job.ID || v.State != node.JobStateSigned || !bytes.Equal(v.Signature, job.Signature) {
		t.Errorf("callback body = %s (%v), want the signed job %s", last.body, err, job.ID)
	}
}

func TestVerifyCallback(t *testing.T) {
	secret := []byte("installation-callback-secret")
	body := []byte(`{"id":"job_1","state":"signed"}`)
	at := time.Unix(1_800_000_000, 0)
	good := node.SignCallback(secret, at, body)
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		{"valid", secret, good, body, at.Add(time.Minute), true},
		{"rotated: second v1 matches", secret, good[:strings.Index(good, ",")] + ",v1=00ff," + good[strings.Index(good, ",")+1:], body, at, true},
		{"body changed", secret, good, []byte(`{"id":"job_1","state":"failed"}`), at, false},
		{"wrong secret", []byte("another-secret"), good, body, at, false},
		{"too old", secret, good, body, at.Add(6 * time.Minute), false},
		{"from the future", secret, good, body, at.Add(-6 * time.Minute), false},
		{"no timestamp", secret, good[strings.Index(good, ",")+1:], body, at, false},
		{"empty", secret, "", body, at, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := node.VerifyCallback(tt.secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if (err == nil) != tt.ok {
				t.Fatalf("VerifyCallback = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, node.ErrCallbackSignature) {
				t.Errorf("error %v does not wrap ErrCallbackSignature", err)
			}
		})
	}
}

func TestParseCrashPoint(t *testing.T) {
	tests := []struct {
		spec string
		want string
		ok   bool
	}{
		{"after-sign", "after-sign:1", true},
		{"after-persist:25", "after-persist:25", true},
		{"after-ack:3", "after-ack:3", true},
		{"before-sign", "", false},
		{"after-sign:0", "", false},
		{"after-sign:x", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			cp, err := node.ParseCrashPoint(tt.spec)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseCrashPoint(%q) = %v, want ok=%v", tt.spec, err, tt.ok)
			}
			if err == nil && cp.String() != tt.want {
				t.Errorf("String() = %q, want %q", cp.String(), tt.want)
			}
		})
	}
}

func TestRedeliveryDoesNotSignAgain(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{})
	r := n.submit(t, "re-1", docRequest("redelivered"), nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit = %d %s", r.status, r.body)
	}
	job := decodeJob(t, r)
	msg := queue.Message{ID: node.MessageID("dev", "re-1"), Tenant: "dev", Body: []byte(fmt.Sprintf(`{"job_id":%q}`, job.ID))}
	ctx := context.Background()
	for i := range 3 {
		if err := n.worker.Process(ctx, msg); err != nil {
			t.Fatalf("Process #%d: %v", i+1, err)
		}
	}
	before, _ := n.inst.Store.AuditSize(ctx)
	if err := n.worker.Process(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if after, _ := n.inst.Store.AuditSize(ctx); after != before {
		t.Errorf("a redelivery of a signed job wrote %d audit events", after-before)
	}
	assertOneSignaturePerKey(t, n, []string{"re-1"})
	if got, _ := n.inst.Store.Job(ctx, "dev", job.ID); got.Attempts != 1 {
		t.Errorf("attempts = %d, want 1 (redeliveries of a signed job are not attempts)", got.Attempts)
	}
	// A message naming no job is poison, not retried.
	bad := queue.Message{ID: "dev/nope", Tenant: "dev", Body: []byte(`{"job_id":"job_missing"}`)}
	if err := n.worker.Process(ctx, bad); err == nil {
		t.Error("Process of a message without a job succeeded")
	}
}

func TestReplayQuarantinedTwiceSignsOnce(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{})
	ctx := context.Background()
	var keys, ids []string
	for i := range 10 {
		k := fmt.Sprintf("q-%02d", i)
		if r := n.submit(t, k, docRequest(k), nil); r.status != http.StatusAccepted {
			t.Fatalf("submit %s = %d %s", k, r.status, r.body)
		}
		keys = append(keys, k)
		ids = append(ids, node.MessageID("dev", k))
	}
	res, err := n.q.Quarantine(ctx, queue.Selector{IDs: ids[:6]})
	if err != nil || len(res.Moved) != 6 {
		t.Fatalf("Quarantine = %+v, %v; want 6 moved", res, err)
	}
	dry, err := n.q.Replay(ctx, queue.ReplayOptions{Rate: 1000, DryRun: true})
	if err != nil || len(dry.IDs) != 6 {
		t.Fatalf("dry run = %+v, %v; want 6", dry, err)
	}
	if c := storeSignatureCount(t, n); c != 0 {
		t.Fatalf("dry run signed %d", c)
	}
	rep, err := n.q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: n.worker.Process})
	if err != nil || len(rep.IDs) != 6 {
		t.Fatalf("Replay = %+v, %v; want 6", rep, err)
	}
	// The same set again: quarantine refuses, replay has nothing.
	again, err := n.q.Quarantine(ctx, queue.Selector{IDs: ids[:6]})
	if err != nil || len(again.Moved) != 0 || len(again.AlreadyQuarantined) != 6 {
		t.Fatalf("second Quarantine = %+v, %v; want all already quarantined", again, err)
	}
	if _, err := n.q.Replay(ctx, queue.ReplayOptions{Rate: 1000, Handler: n.worker.Process}); !errors.Is(err, queue.ErrNothingToReplay) {
		t.Fatalf("second Replay = %v, want ErrNothingToReplay", err)
	}
	// Replaying the messages by hand once more, as an operator re-running
	// an old replay would, signs nothing new.
	for _, k := range keys[:6] {
		j, _ := n.inst.Store.JobByIdempotencyKey(ctx, "dev", k)
		if err := n.worker.Process(ctx, queue.Message{ID: node.MessageID("dev", k), Tenant: "dev", Body: []byte(`{"job_id":"` + j.ID + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if c := storeSignatureCount(t, n); c != 6 {
		t.Fatalf("signatures after two replays = %d, want 6", c)
	}
	// The rest is signed by the worker from the work stream.
	runWorkerUntil(t, n, func() bool { return storeSignatureCount(t, n) == 10 })
	assertOneSignaturePerKey(t, n, keys)
}

func storeSignatureCount(t testing.TB, n *asyncNode) int {
	t.Helper()
	size, err := n.inst.Store.AuditSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := n.inst.Store.Signatures(context.Background(), 0, size, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(sigs)
}

// A worker stopped while its subscriptions are still being set up has shut
// down cleanly: Run returns nil, not the cancelled subscribe (a CI failure
// when a test's condition held before the fourth consumer was up).
func TestWorkerStoppedDuringStartupReturnsNil(t *testing.T) {
	n := newAsyncNode(t, asyncOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.worker.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
}
