package gateway

import (
	"errors"
	"time"
)

var (
	// ErrInvalid marks a change the gateway refuses as malformed
	// (bad weights, bad URLs, a negative Retry-After).
	ErrInvalid = errors.New("gateway: invalid change")
	// ErrUnknownPool marks a reference to a pool the gateway does not have.
	ErrUnknownPool = errors.New("gateway: unknown pool")
	// ErrNotRecorded marks a change refused because the Recorder failed:
	// without evidence there is no change.
	ErrNotRecorded = errors.New("gateway: change not recorded, refused")
)

// Gate is the maintenance gate. While On, write requests are answered at the
// edge with 503 and Retry-After; with BlockReads, reads are refused too.
type Gate struct {
	On         bool      `json:"on"`
	RetryAfter int       `json:"retry_after,omitempty"` // seconds, >= 1 when On
	Reason     string    `json:"reason,omitempty"`
	BlockReads bool      `json:"block_reads,omitempty"`
	Since      time.Time `json:"since,omitzero"` // set by the gateway when the gate changes
}

// PoolStatus says whether a pool can take the traffic its weight asks for.
type PoolStatus string

const (
	// PoolServing: at least one healthy backend.
	PoolServing PoolStatus = "serving"
	// PoolNoHealthyBackend: the pool has backends but none passes /readyz;
	// its weight is given to the other pools.
	PoolNoHealthyBackend PoolStatus = "no-healthy-backend"
	// PoolEmpty: the pool has no backends at all.
	PoolEmpty PoolStatus = "empty"
)

// State is a snapshot of the gateway, as GET /admin/state returns it.
type State struct {
	Gate       Gate        `json:"gate"`
	Pools      []PoolState `json:"pools"`            // sorted by name
	Gated      uint64      `json:"gated_total"`      // requests refused by the gate
	Unroutable uint64      `json:"unroutable_total"` // requests refused: no pool could take them
	ProxyErrs  uint64      `json:"proxy_errors_total"`
	// Retried counts requests sent to a second backend after the first
	// failed before answering (ServeHTTP, replayable).
	Retried uint64 `json:"retried_total"`
	// Degraded is true when some pool with a positive weight has no healthy
	// backend, so the effective weights differ from the configured ones.
	Degraded bool `json:"degraded"`
}

// Pool returns the state of the named pool.
func (s State) Pool(name string) (PoolState, bool) {
	for _, p := range s.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return PoolState{}, false
}

// PoolState is one pool in a State.
type PoolState struct {
	Name            string         `json:"name"`
	Weight          int            `json:"weight"`           // configured, percent
	EffectiveWeight int            `json:"effective_weight"` // share of traffic it gets now, percent (rounded down)
	Status          PoolStatus     `json:"status"`
	InFlight        int64          `json:"in_flight"`
	Forwarded       uint64         `json:"forwarded_total"`
	LastForwardedAt time.Time      `json:"last_forwarded_at,omitzero"`
	Backends        []BackendState `json:"backends"`
}

// BackendState is one backend in a PoolState.
type BackendState struct {
	URL       string    `json:"url"`
	Healthy   bool      `json:"healthy"`
	LastCheck time.Time `json:"last_check,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	InFlight  int64     `json:"in_flight"`
	Forwarded uint64    `json:"forwarded_total"`
	// Failed counts forwarded requests the backend did not answer (refused
	// connection, connection dropped or reset before a response).
	Failed uint64 `json:"failed_total"`
}

// WeightsRequest is the body of PUT /admin/weights.
type WeightsRequest struct {
	Weights map[string]int `json:"weights"`
}

// PoolRequest is the body of PUT /admin/pools/{name}.
type PoolRequest struct {
	Backends []string `json:"backends"`
}
