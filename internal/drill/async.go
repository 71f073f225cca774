package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/flags"
)

// Bounds of one asynchronous request: how long the client keeps trying to
// get the job accepted through a closed gate, and how long it waits for
// an accepted job to finish before counting it lost.
const (
	asyncSubmitBudget = 45 * time.Second
	asyncJobBudget    = 3 * time.Minute
	asyncPollEvery    = 200 * time.Millisecond
)

// asyncClient signs through POST /v1/sign:async and polls GET
// /v1/jobs/{id} until the job is signed or failed. An accepted (202) job
// counts as accepted only once it is signed, with the signature the job
// reports; grading then checks it like a synchronous answer.
type asyncClient struct {
	base  string
	token string
	hc    *http.Client
}

// jobView is the part of the node's job answer the drill reads.
type jobView struct {
	ID        string          `json:"id"`
	State     string          `json:"state"`
	Signature json.RawMessage `json:"signature"`
}

// sign runs one asynchronous request to its final answer.
func (a *asyncClient) sign(ctx context.Context, req api.SignRequest, idem string) outcome {
	o := outcome{Key: idem}
	body, err := json.Marshal(req)
	if err != nil {
		o.Status, o.Detail = "failed", err.Error()
		return o
	}
	var job jobView
	deadline := time.Now().Add(asyncSubmitBudget)
	for {
		status, retry, err := a.do(ctx, http.MethodPost, "/v1/sign:async", idem, body, &job)
		if err == nil && status == http.StatusAccepted {
			break
		}
		if status != 0 && status != http.StatusServiceUnavailable {
			o.Status, o.Detail = "failed", fmt.Sprintf("sign:async answered %d: %v", status, err)
			return o
		}
		if time.Now().Add(retry).After(deadline) {
			if status == http.StatusServiceUnavailable {
				o.Status, o.Detail = "refused", fmt.Sprint(err)
			} else {
				o.Status, o.Detail = "no-answer", fmt.Sprint(err)
			}
			return o
		}
		time.Sleep(retry)
	}
	// Accepted: from here on only a signed or failed job is an answer.
	deadline = time.Now().Add(asyncJobBudget)
	for {
		switch job.State {
		case "signed":
			var resp api.SignResponse
			if err := json.Unmarshal(job.Signature, &resp); err != nil {
				o.Status, o.Detail = "no-answer", "job "+job.ID+" signed but its signature does not decode: "+err.Error()
				return o
			}
			o.Status, o.SigID, o.Release, o.Finished = "accepted", resp.ID, resp.Release, time.Now()
			return o
		case "failed":
			o.Status, o.Detail, o.Finished = "failed", "job "+job.ID+" failed", time.Now()
			return o
		}
		if time.Now().After(deadline) {
			o.Status, o.Detail = "no-answer", fmt.Sprintf("job %s accepted but still %s after %s", job.ID, job.State, asyncJobBudget)
			return o
		}
		time.Sleep(asyncPollEvery)
		var next jobView
		if status, _, err := a.do(ctx, http.MethodGet, "/v1/jobs/"+job.ID, "", nil, &next); err == nil && status == http.StatusOK {
			job = next
		}
	}
}

// do sends one request; it returns the status (0 when no answer came),
// the delay before a retry, and an error for anything but a 2xx.
func (a *asyncClient) do(ctx context.Context, method, path, idem string, body []byte, out any) (int, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, 200 * time.Millisecond, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, 200 * time.Millisecond, err
	}
	if resp.StatusCode/100 != 2 {
		retry := 500 * time.Millisecond
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retry = min(time.Duration(s)*time.Second, 2*time.Second)
		}
		return resp.StatusCode, retry, errors.New(strings.TrimSpace(string(b[:min(len(b), 512)])))
	}
	return resp.StatusCode, 0, json.Unmarshal(b, out)
}

// newPathOn is the world's default flag file with the new signing code
// path on: the flags the drill's regressive release ships with.
func newPathOn() (json.RawMessage, error) {
	var doc map[string]any
	if err := json.Unmarshal(flags.Default(), &doc); err != nil {
		return nil, err
	}
	fl, _ := doc["flags"].(map[string]any)
	def, ok := fl[flags.NewSigningPath].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("drill: the default flag file has no %s", flags.NewSigningPath)
	}
	def["defaultVariant"] = "on"
	return json.Marshal(doc)
}
