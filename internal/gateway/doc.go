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
// A backend that dies with a request in hand, or whose pooled connection
// turns out dead, makes the proxy fail before anything reaches the client.
// The gateway then sends the request once to another backend if it is safe
// to send twice. A read is safe, and so are the node's writes that carry
// their own idempotency keys: a sign request or an async job with the
// Idempotency-Key header, or a batch, whose items each have a key. The backends share the store, which answers a repeated
// key with the first result, so a signature the dead backend committed is
// returned, not made again. To resend, the gateway keeps bodies of known
// length up to 8 MiB in memory, 64 MiB for all requests at once; other
// bodies are streamed and answered 502 on failure. A gate closed while the
// first attempt was in flight stops the resend, and the answer stays 502.
// A refused connection also takes the backend out of rotation at once, and
// so do three forwarded requests in a row left unanswered (a backend that
// accepts connections and drops requests may keep passing its health
// check); the next passing health check puts it back. Resent requests are
// counted (countersign_gateway_retried_total), and so are each backend's
// unanswered ones (countersign_gateway_backend_failed_total).
//
// Lock order: Gateway.mu, then pool.mu. Counters are atomics and need no lock.
package gateway
