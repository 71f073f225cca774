// Package client is the Go client of the Countersign signing API.
//
// It sends an Idempotency-Key with every sign request (a fresh one from
// NewIdempotencyKey unless the caller gives its own) and reuses it on every
// retry, so a retry can never produce a second signature. It retries on 503 (maintenance,
// overload, a key provider failing), honouring Retry-After, and on network
// errors, within a bounded budget; other errors come back typed as
// *api.Problem, which callers match on Problem.Type.
//
// Example:
//
//	c, err := client.New("https://sign.example.com", token)
//	if err != nil { ... }
//	sig, err := c.Sign(ctx, client.SignRequest{Key: "invoices", Format: client.FormatCMS, Document: pdf})
//	if client.IsProblem(err, client.TypeKeyNotFound) { ... }
//	ok, err := c.Verify(ctx, client.VerifyRequest{Key: "invoices", Format: client.FormatCMS, Signature: sig.Signature, Document: pdf})
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/internal/api"
)

// Client talks to one Countersign endpoint (a node or the gateway).
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	retry RetryPolicy
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// RetryPolicy bounds retries. The zero value means DefaultRetryPolicy.
type RetryPolicy struct {
	// MaxAttempts counts the first try (1 = no retry).
	MaxAttempts int
	// Budget caps the total time spent waiting between attempts.
	Budget time.Duration
	// MaxDelay caps one wait, whatever Retry-After says.
	MaxDelay time.Duration
	// BaseDelay is the first backoff when the server gives no Retry-After.
	BaseDelay time.Duration
}

// DefaultRetryPolicy retries for up to 30 s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 10, Budget: 30 * time.Second, MaxDelay: 5 * time.Second, BaseDelay: 100 * time.Millisecond}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: a dedicated one with
// keep-alive connections sized for concurrent use).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetry sets the retry policy.
func WithRetry(p RetryPolicy) Option { return func(c *Client) { c.retry = p } }

// withClock is for tests.
func withClock(now func() time.Time, sleep func(context.Context, time.Duration) error) Option {
	return func(c *Client) { c.now, c.sleep = now, sleep }
}

// New returns a client for baseURL authenticating with token.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be http(s)://host[:port]", baseURL)
	}
	c := &Client{base: u, token: token, retry: DefaultRetryPolicy, now: time.Now, sleep: sleepCtx}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		c.hc = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	if c.retry.MaxAttempts <= 0 {
		c.retry = DefaultRetryPolicy
	}
	return c, nil
}

// NewIdempotencyKey returns a fresh key: a time-ordered UUID (version 7,
// RFC 9562: 48 bits of Unix milliseconds, then a sub-millisecond sequence
// and 62 random bits). Keys made one after the other sort one after the
// other, so the server inserts them next to each other in its
// (tenant, idempotency key) index instead of on a random page each: a
// random key costs the store one more page write per signature (measured
// in docs/benchmarks.md). The key is not a secret; uniqueness within a
// tenant is all it needs.
func NewIdempotencyKey() string {
	u, err := uuid.NewV7()
	if err != nil {
		panic("client: crypto/rand: " + err.Error())
	}
	return u.String()
}

// CallOption adjusts one call.
type CallOption func(*callOpts)

type callOpts struct{ idemKey string }

// WithIdempotencyKey sets the key instead of a random one, so the caller can
// retry across process restarts.
func WithIdempotencyKey(k string) CallOption { return func(o *callOpts) { o.idemKey = k } }

// Sign signs a document or digest.
func (c *Client) Sign(ctx context.Context, req api.SignRequest, opts ...CallOption) (*api.SignResponse, error) {
	o := callOpts{}
	for _, f := range opts {
		f(&o)
	}
	if o.idemKey == "" {
		o.idemKey = NewIdempotencyKey()
	}
	var resp api.SignResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sign", o.idemKey, &req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SignBatch signs up to api.MaxBatchItems items; items without an
// idempotency key get a fresh one (NewIdempotencyKey; written back into req).
func (c *Client) SignBatch(ctx context.Context, req *api.BatchSignRequest) (*api.BatchSignResponse, error) {
	for i := range req.Items {
		if req.Items[i].IdempotencyKey == "" {
			req.Items[i].IdempotencyKey = NewIdempotencyKey()
		}
	}
	var resp api.BatchSignResponse
	if err := c.do(ctx, http.MethodPost, "/v1/sign:batch", "", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Verify asks the server to verify a signature.
func (c *Client) Verify(ctx context.Context, req api.VerifyRequest) (*api.VerifyResponse, error) {
	var resp api.VerifyResponse
	if err := c.do(ctx, http.MethodPost, "/v1/verify", "", &req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Keys lists the tenant's keys.
func (c *Client) Keys(ctx context.Context) (*api.KeyList, error) {
	var resp api.KeyList
	if err := c.do(ctx, http.MethodGet, "/v1/keys", "", nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Key describes one key with its versions.
func (c *Client) Key(ctx context.Context, name string) (*api.Key, error) {
	var resp api.Key
	if err := c.do(ctx, http.MethodGet, "/v1/keys/"+url.PathEscape(name), "", nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// RetriesExhaustedError is returned when every attempt failed with a
// retryable error; Last is the final one.
type RetriesExhaustedError struct {
	Attempts int
	Last     error
}

func (e *RetriesExhaustedError) Error() string {
	return fmt.Sprintf("client: gave up after %d attempts: %v", e.Attempts, e.Last)
}
func (e *RetriesExhaustedError) Unwrap() error { return e.Last }

func (c *Client) do(ctx context.Context, method, path, idemKey string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("client: encode request: %w", err)
		}
	}
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		delay, err := c.once(ctx, method, path, idemKey, body, out)
		if err == nil {
			return nil
		}
		if delay < 0 || ctx.Err() != nil {
			return err
		}
		if delay == 0 {
			delay = c.retry.BaseDelay << min(attempt-1, 6)
		}
		delay = min(delay, c.retry.MaxDelay)
		if attempt >= c.retry.MaxAttempts || waited+delay > c.retry.Budget {
			return &RetriesExhaustedError{Attempts: attempt, Last: err}
		}
		if err := c.sleep(ctx, delay); err != nil {
			return err
		}
		waited += delay
	}
}

// once makes one attempt. delay < 0 means do not retry; 0 means retry with
// backoff; > 0 is the server's Retry-After.
func (c *Client) once(ctx context.Context, method, path, idemKey string, body []byte, out any) (time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return -1, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json, application/problem+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		// Connection refused/reset: safe to retry, every write carries an
		// idempotency key.
		return 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return 0, fmt.Errorf("client: read response: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(rb, out); err != nil {
			return -1, fmt.Errorf("client: decode %s response: %w", path, err)
		}
		return -1, nil
	}
	p := &api.Problem{}
	if err := json.Unmarshal(rb, p); err != nil || p.Status == 0 {
		p = &api.Problem{Type: "about:blank", Title: http.StatusText(resp.StatusCode), Status: resp.StatusCode, Detail: strings.TrimSpace(string(rb[:min(len(rb), 512)]))}
	}
	switch resp.StatusCode {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return retryAfter(resp.Header.Get("Retry-After"), c.now()), p
	case http.StatusConflict:
		if p.Type == api.TypeIdempotencyInFlight {
			return 0, p
		}
	}
	return -1, p
}

// retryAfter parses a Retry-After header (seconds or HTTP date).
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IsProblem reports whether err is a problem of the given type.
func IsProblem(err error, typ string) bool {
	var p *api.Problem
	return errors.As(err, &p) && p.Type == typ
}
