// Package gateway is the edge of Countersign: a reverse proxy that spreads
// data-plane requests over named node pools ("stable", "canary") by integer
// weights, takes unhealthy backends out of rotation, and holds the
// maintenance gate the rollback playbook closes first.
//
// Invariant: while the gate is on, no write request reaches any pool. It is
// answered at the edge with 503, a Retry-After header and an RFC 9457 body
// (api.TypeMaintenance), so the client knows the request was refused before
// acceptance and may retry it unchanged. Reads (GET, HEAD, OPTIONS and
// POST /v1/verify, which stores nothing) still pass unless the gate also
// blocks reads.
//
// Every change made through the admin API (weights, gate, pool membership)
// is handed to a Recorder before it takes effect; if the Recorder fails, the
// change is refused. Evidence first, then action.
//
// The gateway counts what it forwards, per pool and per backend, and keeps
// the time of the last request forwarded to each pool, so containment ("no
// request has reached the regressive pool since T") can be measured rather
// than assumed. Counters are monotonic for the life of the process.
//
// Lock order: Gateway.mu, then pool.mu. Counters are atomics and need no lock.
package gateway
