package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/playbook"
)

// Files a running world leaves in its data directory for the CLI.
const (
	// EndpointsFile (control.json) holds the URLs of the running world;
	// written by `countersign up` once everything listens, removed when it
	// stops.
	EndpointsFile = "control.json"
	// AdminTokenFile holds the admin/control API token (0600).
	AdminTokenFile = "admin-token"
)

// WriteEndpoints writes dir/control.json atomically.
func WriteEndpoints(dir string, u URLs) error {
	b, err := json.MarshalIndent(u, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".control-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, EndpointsFile))
}

// ErrNotRunning is returned by Dial when the data directory has no running
// world (no control.json).
var ErrNotRunning = errors.New("control: no running world in the data directory (start one with `countersign up`)")

// Dial returns a client of the world running in data directory dir, acting
// as actor.
func Dial(dir, actor string) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dir, EndpointsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotRunning, dir)
	}
	if err != nil {
		return nil, err
	}
	var u URLs
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, fmt.Errorf("control: %s: %w", EndpointsFile, err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		return nil, fmt.Errorf("control: admin token: %w", err)
	}
	return NewClient(u.Control, strings.TrimSpace(string(tok)), actor, nil), nil
}

// Client calls the control API.
type Client struct {
	base  string
	token string
	actor string
	hc    *http.Client
}

// NewClient returns a client of the control API at baseURL; hc nil means a
// client with a 30 s timeout.
func NewClient(baseURL, token, actor string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), token: token, actor: actor, hc: hc}
}

// LogValue keeps the token out of logs.
func (c *Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", c.base), slog.String("actor", c.actor), slog.String("token", "REDACTED"))
}

// APIError is a problem answer of the control API.
type APIError struct {
	Status  int
	Problem api.Problem
}

func (e *APIError) Error() string {
	if e.Problem.Detail != "" {
		return e.Problem.Detail
	}
	return fmt.Sprintf("control API: %d %s", e.Status, http.StatusText(e.Status))
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.actor != "" {
		req.Header.Set(ActorHeader, c.actor)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control API %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		json.Unmarshal(b, &e.Problem)
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// State returns the world at a glance.
func (c *Client) State(ctx context.Context) (State, error) {
	var st State
	return st, c.do(ctx, http.MethodGet, "/control/state", nil, &st)
}

// Deploy ships a release.
func (c *Client) Deploy(ctx context.Context, spec ReleaseSpec) (fleet.Revision, error) {
	var rev fleet.Revision
	return rev, c.do(ctx, http.MethodPost, "/control/releases", spec, &rev)
}

// Incidents lists incidents, oldest first.
func (c *Client) Incidents(ctx context.Context) ([]Incident, error) {
	var incs []Incident
	return incs, c.do(ctx, http.MethodGet, "/control/incidents", nil, &incs)
}

// Incident returns one incident.
func (c *Client) Incident(ctx context.Context, id string) (Incident, error) {
	var inc Incident
	return inc, c.do(ctx, http.MethodGet, "/control/incidents/"+url.PathEscape(id), nil, &inc)
}

// OpenIncident opens an incident by hand.
func (c *Client) OpenIncident(ctx context.Context, req OpenIncidentRequest) (Incident, error) {
	var inc Incident
	return inc, c.do(ctx, http.MethodPost, "/control/incidents", req, &inc)
}

// Plan is the dry run of the rollback playbook for an incident.
func (c *Client) Plan(ctx context.Context, incident string, params map[string]string) (playbook.PlanReport, error) {
	var rep playbook.PlanReport
	return rep, c.do(ctx, http.MethodPost, "/control/incidents/"+url.PathEscape(incident)+"/plan", RunRequest{Params: params}, &rep)
}

// Run starts (or finds) the rollback playbook run of an incident.
func (c *Client) Run(ctx context.Context, incident string, params map[string]string) (string, error) {
	var rs RunStarted
	err := c.do(ctx, http.MethodPost, "/control/incidents/"+url.PathEscape(incident)+"/run", RunRequest{Params: params}, &rs)
	return rs.RunID, err
}

// Runs lists every run's status, oldest first.
func (c *Client) Runs(ctx context.Context) ([]playbook.Status, error) {
	var out []playbook.Status
	return out, c.do(ctx, http.MethodGet, "/control/runs", nil, &out)
}

// Status returns a run's status.
func (c *Client) Status(ctx context.Context, run string) (playbook.Status, error) {
	var st playbook.Status
	return st, c.do(ctx, http.MethodGet, "/control/runs/"+url.PathEscape(run), nil, &st)
}

// Approve approves a step awaiting approval, holding roles.
func (c *Client) Approve(ctx context.Context, run, step string, roles []string) (playbook.Status, error) {
	return c.op(ctx, run, "approve", RunOpRequest{Step: step, Roles: roles})
}

// Abort aborts a run.
func (c *Client) Abort(ctx context.Context, run, reason string) (playbook.Status, error) {
	return c.op(ctx, run, "abort", RunOpRequest{Reason: reason})
}

// Resume resumes a paused run (or one whose driver died).
func (c *Client) Resume(ctx context.Context, run string) (playbook.Status, error) {
	return c.op(ctx, run, "resume", RunOpRequest{})
}

func (c *Client) op(ctx context.Context, run, op string, req RunOpRequest) (playbook.Status, error) {
	var st playbook.Status
	return st, c.do(ctx, http.MethodPost, "/control/runs/"+url.PathEscape(run)+"/"+op, req, &st)
}
