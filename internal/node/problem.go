package node

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/countersign/countersign/internal/api"
)

// httpError is an error with what the client may see (Problem) kept apart
// from what is logged (Err).
type httpError struct {
	Problem *api.Problem
	Err     error // internal cause; logged, never sent
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return e.Problem.Error() + ": " + e.Err.Error()
	}
	return e.Problem.Error()
}

func (e *httpError) Unwrap() error { return e.Err }

func problem(status int, typ, detail string) *httpError {
	return &httpError{Problem: api.NewProblem(status, typ, detail)}
}

func internalError(err error) *httpError {
	return &httpError{Problem: api.NewProblem(http.StatusInternalServerError, api.TypeInternal, "internal error; the request was not signed"), Err: err}
}

func unavailable(detail string, retryAfter int, err error) *httpError {
	p := api.NewProblem(http.StatusServiceUnavailable, api.TypeUnavailable, detail)
	p.RetryAfter = retryAfter
	return &httpError{Problem: p, Err: err}
}

// writeError sends err as problem+json. Errors that are not *httpError are
// internal: the client gets a generic 500 and the cause is logged.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = internalError(err)
	}
	p := *he.Problem
	p.Instance = r.URL.Path
	if p.Status >= 500 && r.Context().Err() != nil {
		// The client went away (or the server is shutting down): not a
		// server failure, and nothing was answered.
		s.log.DebugContext(r.Context(), "request abandoned by the client", slog.String("path", r.URL.Path), slog.Any("err", err))
	} else if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed", slog.String("path", r.URL.Path), slog.Int("status", p.Status), slog.Any("err", err))
	} else if he.Err != nil {
		s.log.DebugContext(r.Context(), "request refused", slog.String("path", r.URL.Path), slog.Int("status", p.Status), slog.Any("err", he.Err))
	}
	writeProblem(w, &p)
}

func writeProblem(w http.ResponseWriter, p *api.Problem) {
	b, _ := json.Marshal(p)
	h := w.Header()
	h.Set("Content-Type", api.ContentTypeProblem)
	h.Set("Cache-Control", "no-store")
	if p.Status == http.StatusServiceUnavailable && p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.WriteHeader(p.Status)
	w.Write(b)
}

// Header values every JSON answer carries, allocated once: Header.Set
// would allocate a one-element slice per header per response. The slices
// are full (len == cap), so a handler's Header.Add copies rather than
// writing into them, and net/http only reads them.
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	w.Write(body)
}
