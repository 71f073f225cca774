package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"

	"github.com/countersign/countersign/internal/api"
)

// handleSignBatch signs up to api.MaxBatchItems independent items. Each item
// has its own idempotency key and its own result; one item's failure does
// not fail the others. Items are signed in parallel across cores and reach
// the store through the same group committer as single requests.
func (s *Server) handleSignBatch(w http.ResponseWriter, r *http.Request, tenant string) error {
	body, err := s.readBatchBody(w, r)
	if err != nil {
		return err
	}
	var req api.BatchSignRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if len(req.Items) == 0 {
		return problem(http.StatusBadRequest, api.TypeMalformed, `"items" is empty`)
	}
	if len(req.Items) > api.MaxBatchItems {
		return problem(http.StatusRequestEntityTooLarge, api.TypeTooLarge, fmt.Sprintf("a batch holds at most %d items, got %d", api.MaxBatchItems, len(req.Items)))
	}
	seen := make(map[string]int, len(req.Items))
	for i, it := range req.Items {
		if j, dup := seen[it.IdempotencyKey]; dup {
			return problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf("items %d and %d share idempotency_key %q", j, i, it.IdempotencyKey))
		}
		seen[it.IdempotencyKey] = i
	}

	results := make([]api.BatchSignResult, len(req.Items))
	raws := make([]json.RawMessage, len(req.Items))
	work := make(chan int)
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0)*4, len(req.Items))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				raws[i], results[i] = s.batchItem(r, tenant, &req.Items[i])
			}
		}()
	}
	for i := range req.Items {
		work <- i
	}
	close(work)
	wg.Wait()

	// Render by hand so each signature is the exact bytes a single sign or a
	// replay returns.
	out := make([]byte, 0, 512*len(results))
	out = append(out, `{"results":[`...)
	for i, res := range results {
		if i > 0 {
			out = append(out, ',')
		}
		out = fmt.Appendf(out, `{"status":%d,`, res.Status)
		if res.Problem != nil {
			p, _ := json.Marshal(res.Problem)
			out = append(out, `"problem":`...)
			out = append(out, p...)
		} else {
			out = append(out, `"signature":`...)
			out = append(out, raws[i]...)
		}
		out = append(out, '}')
	}
	out = append(out, "]}"...)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) batchItem(r *http.Request, tenant string, it *api.BatchSignItem) (json.RawMessage, api.BatchSignResult) {
	fail := func(err error) (json.RawMessage, api.BatchSignResult) {
		var he *httpError
		if !errors.As(err, &he) {
			he = internalError(err)
		}
		if he.Problem.Status >= 500 {
			s.log.ErrorContext(r.Context(), "batch item failed", "err", err)
		}
		return nil, api.BatchSignResult{Status: he.Problem.Status, Problem: he.Problem}
	}
	if err := checkIdempotencyKey(it.IdempotencyKey); err != nil {
		return fail(err)
	}
	status, body, err := s.signIdempotent(r.Context(), tenant, it.IdempotencyKey, &it.SignRequest)
	if err != nil {
		return fail(err)
	}
	return body, api.BatchSignResult{Status: status}
}

func (s *Server) readBatchBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return s.readBodyLimit(w, r, s.cfg.MaxDocumentBytes/3*4+int64(api.MaxBatchItems)*(4<<10))
}
