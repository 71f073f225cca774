package control

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/playbook"
)

// The control API: what `countersign release|incident|playbook` call. Every
// route needs the admin token.
func (w *World) startControlAPI() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /control/state", w.hState)
	mux.HandleFunc("POST /control/releases", w.hDeploy)
	mux.HandleFunc("GET /control/incidents", w.hIncidents)
	mux.HandleFunc("POST /control/incidents", w.hOpenIncident)
	mux.HandleFunc("POST /control/incidents/{id}/plan", w.hPlan)
	mux.HandleFunc("POST /control/incidents/{id}/run", w.hRun)
	mux.HandleFunc("GET /control/runs/{run}", w.hRunStatus)
	mux.HandleFunc("POST /control/runs/{run}/{op}", w.hRunOp)
	mux.HandleFunc("GET /control/timeline", w.hTimeline)
	want := sha256.Sum256([]byte(w.token))
	authed := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeProblem(rw, http.StatusUnauthorized, api.TypeUnauthorized, "control API needs the admin token")
			return
		}
		actor := r.Header.Get("Countersign-Actor")
		if actor == "" {
			actor = "api"
		}
		mux.ServeHTTP(rw, r.WithContext(gateway.WithActor(r.Context(), actor)))
	})
	var err error
	w.ctlURL, err = w.serve(w.cfg.ControlListen, authed)
	return err
}

func writeProblem(rw http.ResponseWriter, status int, typ, detail string) {
	rw.Header().Set("Content-Type", api.ContentTypeProblem)
	rw.WriteHeader(status)
	json.NewEncoder(rw).Encode(api.NewProblem(status, typ, detail))
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(v)
}

// State is the world at a glance.
type State struct {
	URLs      URLs              `json:"urls"`
	Gateway   gateway.State     `json:"gateway"`
	Incidents []Incident        `json:"incidents"`
	Pools     []any             `json:"pools"`
	Runs      map[string]string `json:"runs"`
}

func (w *World) hState(rw http.ResponseWriter, r *http.Request) {
	st, err := w.fleet.Status(r.Context())
	if err != nil {
		writeProblem(rw, http.StatusServiceUnavailable, api.TypeUnavailable, err.Error())
		return
	}
	pools := make([]any, len(st))
	for i := range st {
		pools[i] = st[i]
	}
	w.mu.Lock()
	runs := make(map[string]string, len(w.runs))
	for k, v := range w.runs {
		runs[k] = v
	}
	w.mu.Unlock()
	writeJSON(rw, State{URLs: w.URLs(), Gateway: w.gw.State(), Incidents: w.incidents.list(), Pools: pools, Runs: runs})
}

func (w *World) hDeploy(rw http.ResponseWriter, r *http.Request) {
	var spec ReleaseSpec
	if err := json.NewDecoder(r.Body).Decode(&spec); err != nil || spec.ID == "" {
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
	writeJSON(rw, w.incidents.list())
}

func (w *World) hOpenIncident(rw http.ResponseWriter, r *http.Request) {
	var req struct{ Classification, Release, Summary string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Release == "" {
		writeProblem(rw, http.StatusBadRequest, api.TypeMalformed, "want {\"classification\", \"release\", \"summary\"}")
		return
	}
	inc, err := w.OpenIncident(r.Context(), req.Classification, req.Release, req.Summary)
	if err != nil {
		writeProblem(rw, http.StatusServiceUnavailable, api.TypeUnavailable, err.Error())
		return
	}
	writeJSON(rw, inc)
}

func (w *World) hPlan(rw http.ResponseWriter, r *http.Request) {
	rep, err := w.PlanPlaybook(r.Context(), r.PathValue("id"))
	if err != nil {
		writeProblem(rw, http.StatusNotFound, api.TypeNotFound, err.Error())
		return
	}
	writeJSON(rw, rep)
}

func (w *World) hRun(rw http.ResponseWriter, r *http.Request) {
	id, err := w.StartPlaybook(r.Context(), r.PathValue("id"), gateway.ActorFrom(r.Context()))
	if err != nil {
		writeProblem(rw, http.StatusNotFound, api.TypeNotFound, err.Error())
		return
	}
	writeJSON(rw, map[string]string{"run_id": id})
}

func (w *World) hRunStatus(rw http.ResponseWriter, r *http.Request) {
	st, err := w.engine.Status(r.Context(), r.PathValue("run"))
	if err != nil {
		writeProblem(rw, http.StatusNotFound, api.TypeNotFound, err.Error())
		return
	}
	writeJSON(rw, st)
}

func (w *World) hRunOp(rw http.ResponseWriter, r *http.Request) {
	run, op := r.PathValue("run"), r.PathValue("op")
	actor := gateway.ActorFrom(r.Context())
	var req struct {
		Step   string   `json:"step"`
		Roles  []string `json:"roles"`
		Reason string   `json:"reason"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	var err error
	switch op {
	case "approve":
		err = w.engine.Approve(r.Context(), run, req.Step, playbook.Approver{Name: actor, Roles: req.Roles})
	case "abort":
		err = w.engine.Abort(r.Context(), run, actor, req.Reason)
	case "resume":
		go func() {
			st, err := w.engine.Resume(w.runCtx, run, actor)
			w.log.Info("playbook resume returned", "run", run, "state", st.State, "err", err)
		}()
	default:
		writeProblem(rw, http.StatusNotFound, api.TypeNotFound, "unknown operation "+op)
		return
	}
	if err != nil {
		writeProblem(rw, http.StatusConflict, api.TypeMalformed, err.Error())
		return
	}
	st, _ := w.engine.Status(r.Context(), run)
	writeJSON(rw, st)
}

func (w *World) hTimeline(rw http.ResponseWriter, r *http.Request) { writeJSON(rw, w.Timeline()) }
