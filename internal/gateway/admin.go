package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/countersign/countersign/internal/api"
)

// ActorHeader names the operator or automation making an admin change. The
// bearer token authenticates the caller; the actor says on whose behalf,
// and is passed to the Recorder.
const ActorHeader = "Countersign-Actor"

// DefaultActor is the actor recorded when a request names none.
const DefaultActor = "gateway-admin"

const maxAdminBody = 1 << 20

// Admin is the gateway's control API, meant for its own listener:
//
//	GET /admin/state          State
//	PUT /admin/weights        WeightsRequest → State
//	PUT /admin/gate           Gate → Gate
//	PUT /admin/pools/{name}   PoolRequest → PoolState
//	GET /metrics              Prometheus metrics of the gateway
//
// Every route needs "Authorization: Bearer <token>".
type Admin struct {
	g         *Gateway
	tokenHash [32]byte
	mux       *http.ServeMux
}

// NewAdmin serves g's admin API to holders of token.
func NewAdmin(g *Gateway, token string) (*Admin, error) {
	if len(token) < 16 {
		return nil, fmt.Errorf("%w: the admin token must be at least 16 characters", ErrInvalid)
	}
	a := &Admin{g: g, tokenHash: sha256.Sum256([]byte(token)), mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /admin/state", a.state)
	a.mux.HandleFunc("PUT /admin/weights", a.weights)
	a.mux.HandleFunc("PUT /admin/gate", a.gate)
	a.mux.HandleFunc("PUT /admin/pools/{name}", a.pool)
	a.mux.Handle("GET /metrics", g.metricsHandler())
	return a, nil
}

// ServeHTTP authenticates, then dispatches.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="countersign-gateway"`)
		writeProblem(w, api.NewProblem(http.StatusUnauthorized, api.TypeUnauthorized, "a valid bearer token is required"))
		return
	}
	actor := strings.TrimSpace(r.Header.Get(ActorHeader))
	if actor == "" {
		actor = DefaultActor
	}
	a.mux.ServeHTTP(w, r.WithContext(WithActor(r.Context(), actor)))
}

// authorized compares hashes of the presented and the expected token in
// constant time: neither the content nor the length of the token leaks
// through timing.
func (a *Admin) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1
}

func (a *Admin) state(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.g.State())
}

func (a *Admin) weights(w http.ResponseWriter, r *http.Request) {
	var req WeightsRequest
	if !decode(w, r, &req) {
		return
	}
	if err := a.g.SetWeights(r.Context(), req.Weights); err != nil {
		writeChangeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.g.State())
}

func (a *Admin) gate(w http.ResponseWriter, r *http.Request) {
	var req Gate
	if !decode(w, r, &req) {
		return
	}
	got, err := a.g.SetGate(r.Context(), req)
	if err != nil {
		writeChangeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (a *Admin) pool(w http.ResponseWriter, r *http.Request) {
	var req PoolRequest
	if !decode(w, r, &req) {
		return
	}
	ps, err := a.g.SetPool(r.Context(), r.PathValue("name"), req.Backends)
	if err != nil {
		writeChangeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeProblem(w, api.NewProblem(http.StatusBadRequest, api.TypeMalformed, "body: "+err.Error()))
		return false
	}
	return true
}

func writeChangeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrUnknownPool):
		writeProblem(w, api.NewProblem(http.StatusBadRequest, api.TypeMalformed, err.Error()))
	case errors.Is(err, ErrNotRecorded):
		// The evidence could not be written; the change did not happen.
		writeProblem(w, api.NewProblem(http.StatusServiceUnavailable, api.TypeUnavailable, err.Error()))
	default:
		writeProblem(w, api.NewProblem(http.StatusInternalServerError, api.TypeInternal, "internal error"))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
