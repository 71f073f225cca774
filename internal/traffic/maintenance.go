package traffic

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/countersign/countersign/internal/api"
)

// RetryAfterHeader is the request header through which a router tells the
// maintenance backend how long clients should wait: the HTTPRoute gate sets
// it with a RequestHeaderModifier filter on the rules it sends to the
// maintenance Service (traffic/httproute).
const RetryAfterHeader = "Countersign-Retry-After"

// Maintenance returns the handler of the maintenance backend
// (`countersign maintenance`): GET /healthz answers 200; every other
// request is refused with 503, an RFC 9457 body of type
// api.TypeMaintenance and Retry-After, exactly as our gateway refuses a
// write while its gate is on. Clients read that as "refused before
// acceptance, retry unchanged".
//
// Retry-After is the RetryAfterHeader of the request when it is a decimal
// integer in [1, MaxRetryAfter], else defaultRetryAfter (seconds, which
// must be in that range too).
func Maintenance(defaultRetryAfter int) (http.Handler, error) {
	if defaultRetryAfter < 1 || defaultRetryAfter > MaxRetryAfter {
		return nil, fmt.Errorf("traffic: maintenance Retry-After %d s, want 1..%d", defaultRetryAfter, MaxRetryAfter)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		secs := retryAfter(r.Header.Get(RetryAfterHeader), defaultRetryAfter)
		p := api.NewProblem(http.StatusServiceUnavailable, api.TypeMaintenance,
			"Countersign is in maintenance: the request was refused before it was accepted and may be retried unchanged")
		p.RetryAfter = secs
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("Content-Type", api.ContentTypeProblem)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(p.Status)
		_ = json.NewEncoder(w).Encode(p)
	})
	return mux, nil
}

// retryAfter parses the header value a router set; anything but a plain
// decimal in range (signs, spaces, fractions, overflow) gives def.
func retryAfter(v string, def int) int {
	if v == "" || len(v) > 5 {
		return def
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return def
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxRetryAfter {
		return def
	}
	return n
}
