package control

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/store"
)

// ActorHeader names who calls the control API (the CLI sends $USER); it
// becomes the actor of the audit events the call causes. Default "api".
const ActorHeader = "Countersign-Actor"

// maxBody bounds control API request bodies.
const maxBody = 1 << 20

// The control API: what `countersign release|incident|playbook` call. Every
// route but /healthz and /readyz needs the admin token (compared in
// constant time). /healthz answers 200 while the process serves (liveness);
// /readyz once Start has finished.
func (w *World) startControlAPI() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /control/state", w.hState)
	mux.HandleFunc("POST /control/releases", w.hDeploy)
	mux.HandleFunc("GET /control/incidents", w.hIncidents)
	mux.HandleFunc("POST /control/incidents", w.hOpenIncident)
	mux.HandleFunc("GET /control/incidents/{id}", w.hIncident)
	mux.HandleFunc("POST /control/incidents/{id}/plan", w.hPlan)
	mux.HandleFunc("POST /control/incidents/{id}/run", w.hRun)
	mux.HandleFunc("GET /control/runs", w.hRuns)
	mux.HandleFunc("GET /control/runs/{run}", w.hRunStatus)
	mux.HandleFunc("POST /control/runs/{run}/{op}", w.hRunOp)
	mux.HandleFunc("GET /control/timeline", w.hTimeline)
	want := sha256.Sum256([]byte(w.token))
	h := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			rw.Write([]byte("ok\n"))
			return
		}
		if r.URL.Path == "/readyz" {
			if !w.ready.Load() {
				writeProblem(rw, http.StatusServiceUnavailable, api.TypeUnavailable, "control plane starting")
				return
			}
			rw.Write([]byte("ok\n"))
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeProblem(rw, http.StatusUnauthorized, api.TypeUnauthorized, "control API needs the admin token")
			return
		}
		actor := r.Header.Get(ActorHeader)
		if actor == "" {
			actor = "api"
		}
		r.Body = http.MaxBytesReader(rw, r.Body, maxBody)
		mux.ServeHTTP(rw, r.WithContext(gateway.WithActor(r.Context(), actor)))
	})
	var err error
	w.ctlURL, err = w.serve(w.cfg.ControlListen, h)
	return err
}

func writeProblem(rw http.ResponseWriter, status int, typ, detail string) {
	rw.Header().Set("Content-Type", api.ContentTypeProblem)
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(api.NewProblem(status, typ, detail))
}

// writeError maps an error of the world or the engine to a problem.
func writeError(rw http.ResponseWriter, err error) {
	status, typ := http.StatusInternalServerError, api.TypeInternal
	switch {
	case errors.Is(err, ErrNoIncident), errors.Is(err, store.ErrNotFound), errors.Is(err, playbook.ErrUnknownStep),
		errors.Is(err, fleet.ErrNotFound):
		status, typ = http.StatusNotFound, api.TypeNotFound
	case errors.Is(err, playbook.ErrForbidden):
		status, typ = http.StatusForbidden, api.TypeUnauthorized
	case errors.Is(err, ErrDriving), errors.Is(err, playbook.ErrDuplicate), errors.Is(err, playbook.ErrWrongState),
		errors.Is(err, playbook.ErrFinished), errors.Is(err, store.ErrIncidentState):
		status, typ = http.StatusConflict, api.TypeMalformed
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, gateway.ErrInvalid), errors.Is(err, errBadRequest):
		status, typ = http.StatusUnprocessableEntity, api.TypeMalformed
	}
	writeProblem(rw, status, typ, err.Error())
}

var errBadRequest = errors.New("control: bad request")

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(v)
}

// decode reads an optional JSON body into v.
func decode(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", errBadRequest, err)
	}
	return nil
}

// State is the world at a glance.
type State struct {
	URLs      URLs               `json:"urls"`
	Drill     bool               `json:"drill"`
	AutoRun   bool               `json:"auto_run"`
	Gateway   gateway.State      `json:"gateway"`
	Incidents []Incident         `json:"incidents"`
	Pools     []fleet.PoolStatus `json:"pools"`
	Runs      map[string]string  `json:"runs"` // incident → run
	Params    map[string]string  `json:"params,omitempty"`
}

func (w *World) hState(rw http.ResponseWriter, r *http.Request) {
	pools, err := w.fleet.Status(r.Context())
	if err != nil {
		writeProblem(rw, http.StatusServiceUnavailable, api.TypeUnavailable, err.Error())
		return
	}
	incs, err := w.ListIncidents(r.Context())
	if err != nil {
		writeError(rw, err)
		return
	}
	runs := map[string]string{}
	for _, inc := range incs {
		if inc.RunID != "" {
			runs[inc.ID] = inc.RunID
		}
	}
	writeJSON(rw, State{URLs: w.URLs(), Drill: w.cfg.Drill, AutoRun: w.cfg.AutoRun, Gateway: w.gatewayState(r.Context()), Incidents: incs,
		Pools: pools, Runs: runs, Params: w.cfg.Params})
}

func (w *World) hDeploy(rw http.ResponseWriter, r *http.Request) {
	var spec ReleaseSpec
	if err := decode(r, &spec); err != nil || spec.ID == "" {
		writeProblem(rw, http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf("release spec: %v (id is required)", err))
		return
	}
	rev, err := w.Deploy(r.Context(), spec)
	if err != nil {
		writeProblem(rw, http.StatusUnprocessableEntity, api.TypeUnsupported, err.Error())
		return
	}
	writeJSON(rw, rev)
}

func (w *World) hIncidents(rw http.ResponseWriter, r *http.Request) {
	incs, err := w.ListIncidents(r.Context())
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, incs)
}

// OpenIncidentRequest is the body of POST /control/incidents.
type OpenIncidentRequest struct {
	Classification string `json:"classification"`
	Release        string `json:"release"`
	Summary        string `json:"summary"`
}

func (w *World) hOpenIncident(rw http.ResponseWriter, r *http.Request) {
	var req OpenIncidentRequest
	if err := decode(r, &req); err != nil || req.Release == "" {
		writeProblem(rw, http.StatusBadRequest, api.TypeMalformed, `want {"classification", "release", "summary"}; release is required`)
		return
	}
	inc, err := w.OpenIncident(r.Context(), req.Classification, req.Release, req.Summary)
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, inc)
}

func (w *World) hIncident(rw http.ResponseWriter, r *http.Request) {
	inc, err := w.Incident(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, inc)
}

// RunRequest is the body of the plan and run routes: parameter overrides
// (e.g. {"stable_release": "v1"}).
type RunRequest struct {
	Params map[string]string `json:"params,omitempty"`
}

func (w *World) hPlan(rw http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if err := decode(r, &req); err != nil {
		writeError(rw, err)
		return
	}
	rep, err := w.PlanPlaybook(r.Context(), r.PathValue("id"), req.Params)
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, rep)
}

// RunStarted is the answer of POST /control/incidents/{id}/run.
type RunStarted struct {
	RunID string `json:"run_id"`
}

func (w *World) hRun(rw http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if err := decode(r, &req); err != nil {
		writeError(rw, err)
		return
	}
	id, err := w.StartPlaybook(r.Context(), r.PathValue("id"), gateway.ActorFrom(r.Context()), req.Params)
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, RunStarted{RunID: id})
}

func (w *World) hRuns(rw http.ResponseWriter, r *http.Request) {
	runs, err := w.engine.Runs(r.Context())
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, runs)
}

func (w *World) hRunStatus(rw http.ResponseWriter, r *http.Request) {
	st, err := w.engine.Status(r.Context(), r.PathValue("run"))
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, st)
}

// RunOpRequest is the body of POST /control/runs/{run}/{approve|abort|resume}.
type RunOpRequest struct {
	Step   string   `json:"step,omitempty"`
	Roles  []string `json:"roles,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

func (w *World) hRunOp(rw http.ResponseWriter, r *http.Request) {
	run, op := r.PathValue("run"), r.PathValue("op")
	actor := gateway.ActorFrom(r.Context())
	var req RunOpRequest
	if err := decode(r, &req); err != nil {
		writeError(rw, err)
		return
	}
	var err error
	switch op {
	case "approve":
		err = w.engine.Approve(r.Context(), run, req.Step, playbook.Approver{Name: actor, Roles: req.Roles})
	case "abort":
		err = w.engine.Abort(r.Context(), run, actor, req.Reason)
	case "resume":
		err = w.ResumeRun(r.Context(), run, actor)
	default:
		writeProblem(rw, http.StatusNotFound, api.TypeNotFound, "unknown operation "+op+" (approve, abort, resume)")
		return
	}
	if err != nil {
		writeError(rw, err)
		return
	}
	st, err := w.engine.Status(r.Context(), run)
	if err != nil {
		writeError(rw, err)
		return
	}
	writeJSON(rw, st)
}

func (w *World) hTimeline(rw http.ResponseWriter, r *http.Request) { writeJSON(rw, w.Timeline()) }
