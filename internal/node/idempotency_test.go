package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/api"
)

// TestIdempotentReplay: the same key and body get the stored answer byte
// for byte and write nothing; the same key with another body is refused.
func TestIdempotentReplay(t *testing.T) {
	e := newEnv(t, envOptions{})
	req := api.SignRequest{Key: "default", Format: api.FormatCMS, Document: []byte("order 1"), DocumentID: "o-1"}
	_, first := e.mustSign(t, "replay-1", req)
	before := e.counts(t)
	for i := range 3 {
		_, again := e.mustSign(t, "replay-1", req)
		if !bytes.Equal(again.body, first.body) {
			t.Fatalf("replay %d:\n%s\nwant\n%s", i, again.body, first.body)
		}
	}
	if after := e.counts(t); after != before {
		t.Errorf("replays wrote to the store: %+v -> %+v", before, after)
	}

	for _, tc := range []struct {
		name string
		req  api.SignRequest
	}{
		{"other document", api.SignRequest{Key: "default", Format: api.FormatCMS, Document: []byte("order 2"), DocumentID: "o-1"}},
		{"other format", api.SignRequest{Key: "default", Format: api.FormatRaw, Document: []byte("order 1"), DocumentID: "o-1"}},
		{"other document id", api.SignRequest{Key: "default", Format: api.FormatCMS, Document: []byte("order 1"), DocumentID: "o-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.sign(t, e.token, "replay-1", tc.req)
			wantProblem(t, r, http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch)
		})
	}
	// The same meaning spelled differently (field order, whitespace) is a replay.
	spelled := []byte(`{ "document_id":"o-1", "document":"b3JkZXIgMQ==", "format":"cms", "key":"default" }`)
	if r := e.sign(t, e.token, "replay-1", spelled); r.status != 200 || !bytes.Equal(r.body, first.body) {
		t.Errorf("re-spelled replay = %v, want the first answer", r)
	}
	// Keys are per tenant: another tenant may use the same key string.
	tokB, err := e.inst.CreateTenant(t.Context(), "beta", "test")
	if err != nil {
		t.Fatal(err)
	}
	before = e.counts(t)
	if r := e.sign(t, string(tokB), "replay-1", req); r.status != http.StatusNotFound {
		t.Errorf("tenant B with tenant A's idempotency key and key name: %v, want 404 (its own namespace)", r)
	}
	if after := e.counts(t); after != before {
		t.Errorf("tenant B's request wrote to the store: %+v -> %+v", before, after)
	}
}

// TestConcurrentDuplicates: 32 identical requests at once make one
// signature and one audit event, and all 32 get the same answer.
func TestConcurrentDuplicates(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := e.counts(t)
	req := mustJSON(t, api.SignRequest{Key: "default", Format: api.FormatJWS, Document: []byte("concurrent")})
	const n = 32
	replies := make([]reply, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			replies[i] = e.call(t, "POST", "/v1/sign", e.token, map[string]string{"Idempotency-Key": "dup-32"}, req)
		}()
	}
	close(start)
	wg.Wait()
	for i, r := range replies {
		if r.status != 200 || !bytes.Equal(r.body, replies[0].body) {
			t.Errorf("answer %d = %v, want 200 identical to answer 0 (%s)", i, r, replies[0].body)
		}
	}
	if after := e.counts(t); after.signatures != before.signatures+1 || after.events != before.events+1 {
		t.Errorf("32 duplicates: %+v -> %+v, want one signature and one event", before, after)
	}
}

// TestBatchAndSingleShareKeys: an idempotency key used in a batch item and
// in a single request is the same record, in either order.
func TestBatchAndSingleShareKeys(t *testing.T) {
	e := newEnv(t, envOptions{})
	item := func(idem, doc string) api.BatchSignItem {
		return api.BatchSignItem{IdempotencyKey: idem, SignRequest: api.SignRequest{Key: "default", Format: api.FormatRaw, Document: []byte(doc)}}
	}
	_, alone := e.mustSign(t, "mix-1", item("mix-1", "doc 1").SignRequest)
	before := e.counts(t)

	batch := func(items ...api.BatchSignItem) []json.RawMessage {
		t.Helper()
		r := e.call(t, "POST", "/v1/sign:batch", e.token, nil, mustJSON(t, api.BatchSignRequest{Items: items}))
		if r.status != 200 {
			t.Fatalf("batch: %v", r)
		}
		var out struct {
			Results []struct {
				Status    int             `json:"status"`
				Signature json.RawMessage `json:"signature"`
				Problem   *api.Problem    `json:"problem"`
			} `json:"results"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		raws := make([]json.RawMessage, len(out.Results))
		for i, res := range out.Results {
			if res.Problem != nil {
				raws[i] = mustJSON(t, res.Problem)
			} else {
				raws[i] = res.Signature
			}
		}
		return raws
	}
	got := batch(item("mix-1", "doc 1"), item("mix-2", "doc 2"), item("mix-3", "another doc"))
	if !bytes.Equal(got[0], alone.body) {
		t.Errorf("batch item for an answered key:\n%s\nwant the single answer\n%s", got[0], alone.body)
	}
	if after := e.counts(t); after.signatures != before.signatures+2 || after.events != before.events+2 {
		t.Errorf("batch of one replay and two new: %+v -> %+v", before, after)
	}
	// Now the other way round: a key first used in the batch, replayed alone.
	_, single := e.mustSign(t, "mix-2", item("mix-2", "doc 2").SignRequest)
	if !bytes.Equal(single.body, got[1]) {
		t.Errorf("single replay of a batch key:\n%s\nwant\n%s", single.body, got[1])
	}
	// A batch item reusing a key for another document fails alone.
	got = batch(item("mix-1", "changed"), item("mix-4", "doc 4"))
	var p api.Problem
	if err := json.Unmarshal(got[0], &p); err != nil || p.Type != api.TypeIdempotencyMismatch {
		t.Errorf("reused key in batch: %s, want %s", got[0], api.TypeIdempotencyMismatch)
	}
	var ok api.SignResponse
	if err := json.Unmarshal(got[1], &ok); err != nil || ok.ID == "" {
		t.Errorf("the other item should sign: %s", got[1])
	}
}

// TestTwoNodesOneStore: two node servers with their own store handles and
// committers on one SQLite file (what two processes have) race the same
// idempotency key; the store's unique constraint leaves one signature and
// both answer with it.
func TestTwoNodesOneStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, _, ts2 := serveDir(t, e.dir, "test-node-2", nil)
	urls := []string{e.ts.URL, ts2.URL}
	before := e.counts(t)
	const rounds, perRound = 8, 8
	for round := range rounds {
		idem := fmt.Sprintf("race-%d", round)
		body := mustJSON(t, api.SignRequest{Key: "default", Format: api.FormatCMS, Document: []byte(idem)})
		replies := make([]reply, perRound)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range perRound {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				replies[i] = callURL(t, urls[i%2], "POST", "/v1/sign", e.token, map[string]string{"Idempotency-Key": idem}, body)
			}()
		}
		close(start)
		wg.Wait()
		for i, r := range replies {
			if r.status != 200 || !bytes.Equal(r.body, replies[0].body) {
				t.Errorf("round %d answer %d (node %d) = %v\nwant 200 identical to %s", round, i, i%2+1, r, replies[0].body)
			}
		}
	}
	if after := e.counts(t); after.signatures != before.signatures+rounds || after.events != before.events+rounds {
		t.Errorf("%d raced keys: %+v -> %+v, want exactly %d signatures and events more", rounds, before, after, rounds)
	}
}
