package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/countersign/countersign/internal/api"
)

// AdminClient calls a gateway's admin API. Errors the gateway reports come
// back as *api.Problem.
type AdminClient struct {
	base  string
	token string
	// Actor is sent in the Countersign-Actor header of every change.
	Actor string
	hc    *http.Client
}

// NewAdminClient returns a client for the admin API at baseURL
// (e.g. "http://127.0.0.1:8081"). hc may be nil (http.DefaultClient).
func NewAdminClient(baseURL, token string, hc *http.Client) *AdminClient {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &AdminClient{base: strings.TrimRight(baseURL, "/"), token: token, hc: hc}
}

// LogValue keeps the token out of logs.
func (c *AdminClient) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base", c.base), slog.String("token", "REDACTED"), slog.String("actor", c.Actor))
}

// State returns the gateway's state.
func (c *AdminClient) State(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, http.MethodGet, "/admin/state", nil, &st)
	return st, err
}

// SetWeights replaces the pool weights (percent, summing to 100) and
// returns the state after the change.
func (c *AdminClient) SetWeights(ctx context.Context, weights map[string]int) (State, error) {
	var st State
	err := c.do(ctx, http.MethodPut, "/admin/weights", WeightsRequest{Weights: weights}, &st)
	return st, err
}

// SetGate opens or closes the maintenance gate and returns it as set.
func (c *AdminClient) SetGate(ctx context.Context, g Gate) (Gate, error) {
	var out Gate
	err := c.do(ctx, http.MethodPut, "/admin/gate", g, &out)
	return out, err
}

// SetPool creates a pool or replaces its backends.
func (c *AdminClient) SetPool(ctx context.Context, name string, backends []string) (PoolState, error) {
	var out PoolState
	if backends == nil {
		backends = []string{}
	}
	err := c.do(ctx, http.MethodPut, "/admin/pools/"+url.PathEscape(name), PoolRequest{Backends: backends}, &out)
	return out, err
}

func (c *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("gateway admin: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("gateway admin: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Actor != "" {
		req.Header.Set(ActorHeader, c.Actor)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("gateway admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("gateway admin: %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		p := &api.Problem{}
		if ct != api.ContentTypeProblem || json.Unmarshal(data, p) != nil || p.Status == 0 {
			p = api.NewProblem(resp.StatusCode, api.TypeInternal, strings.TrimSpace(string(data)))
		}
		return p
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("gateway admin: %s %s: decode: %w", method, path, err)
	}
	return nil
}
