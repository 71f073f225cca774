package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/store"
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
	if err := decodeBatchRequest(body, &req); err != nil {
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

	slots := s.signBatch(r.Context(), tenant, req.Items)

	// Render by hand so each signature is the exact bytes a single sign or a
	// replay returns.
	out := make([]byte, 0, 640*len(slots))
	out = append(out, `{"results":[`...)
	for i := range slots {
		if i > 0 {
			out = append(out, ',')
		}
		out = s.appendBatchResult(r.Context(), out, &slots[i])
	}
	out = append(out, "]}"...)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// batchSlot is one batch item on its way through signBatch.
type batchSlot struct {
	reqHash []byte
	fkey    string
	fl      *flight
	leader  bool
	p       *preparedSign // leader with a signature to commit
	status  int
	body    []byte
	err     error
}

// signBatch runs every item under the same idempotency rules as a single
// sign, in three phases: sign the items in parallel across cores; hand all
// their writes to the group committer at once, so a batch lands in one or
// a few transactions instead of trickling in item by item behind each
// worker's commit wait; then collect the answers of items whose key
// another request of this process was running. A batch never waits on a
// flight while leading one: its own flights all finish in the commit
// phase, which waits on nothing but the store.
func (s *Server) signBatch(ctx context.Context, tenant string, items []api.BatchSignItem) []batchSlot {
	slots := make([]batchSlot, len(items))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0)*4, len(items)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(slots); i = int(next.Add(1) - 1) {
				s.prepareBatchItem(ctx, tenant, &items[i], &slots[i])
			}
		})
	}
	wg.Wait()
	s.commitBatch(ctx, slots, &wg)
	for i := range slots {
		if sl := &slots[i]; sl.fl != nil && !sl.leader {
			sl.status, sl.body, sl.err = s.awaitFlight(ctx, sl.fl, sl.reqHash)
		}
	}
	wg.Wait()
	return slots
}

// allCommitter is the optional capability of a Committer to take many
// writes in one call (store.Committer.CommitAll).
type allCommitter interface {
	CommitAll(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, []error)
}

// commitBatch hands the writes of the slots that have one to the committer
// at once, on wg, and finishes their flights with the outcomes: with
// CommitAll in one call, else one Commit per write.
func (s *Server) commitBatch(ctx context.Context, slots []batchSlot, wg *sync.WaitGroup) {
	var todo []*batchSlot
	for i := range slots {
		if slots[i].p != nil {
			todo = append(todo, &slots[i])
		}
	}
	finish := func(sl *batchSlot, wr store.WriteResult, err error) {
		sl.status, sl.body, sl.err = s.finishSign(ctx, sl.p, wr, err)
		s.flights.finish(sl.fkey, sl.fl, sl.status, sl.body, sl.err)
	}
	ac, ok := s.cfg.Committer.(allCommitter)
	if !ok {
		for _, sl := range todo {
			wg.Go(func() {
				wr, err := s.cfg.Committer.Commit(ctx, sl.p.w)
				finish(sl, wr, err)
			})
		}
		return
	}
	wg.Go(func() {
		ws := make([]store.SignatureWrite, len(todo))
		for i, sl := range todo {
			ws[i] = sl.p.w
		}
		rs, errs := ac.CommitAll(ctx, ws)
		for i, sl := range todo {
			finish(sl, rs[i], errs[i])
		}
	})
}

// prepareBatchItem joins the item's flight and, leading it, signs the item;
// an item answered without a commit finishes its flight here.
func (s *Server) prepareBatchItem(ctx context.Context, tenant string, it *api.BatchSignItem, sl *batchSlot) {
	if err := checkIdempotencyKey(it.IdempotencyKey); err != nil {
		sl.err = err
		return
	}
	sl.reqHash = requestHash(&it.SignRequest)
	sl.fkey = tenant + "\x00" + it.IdempotencyKey
	sl.fl, sl.leader = s.flights.join(sl.fkey, sl.reqHash)
	if !sl.leader {
		return
	}
	sl.p, sl.status, sl.body, sl.err = s.prepareSign(ctx, tenant, it.IdempotencyKey, sl.reqHash, &it.SignRequest)
	if sl.p == nil {
		s.flights.finish(sl.fkey, sl.fl, sl.status, sl.body, sl.err)
	}
}

// appendBatchResult renders one item's result: a signature is embedded as
// the exact bytes a single sign or a replay returns.
func (s *Server) appendBatchResult(ctx context.Context, out []byte, sl *batchSlot) []byte {
	if sl.err != nil {
		var he *httpError
		if !errors.As(sl.err, &he) {
			he = internalError(sl.err)
		}
		if he.Problem.Status >= 500 {
			s.log.ErrorContext(ctx, "batch item failed", "err", sl.err)
		}
		p, _ := json.Marshal(he.Problem)
		out = fmt.Appendf(out, `{"status":%d,"problem":`, he.Problem.Status)
		out = append(out, p...)
		return append(out, '}')
	}
	out = append(out, `{"status":`...)
	out = strconv.AppendInt(out, int64(sl.status), 10)
	out = append(out, `,"signature":`...)
	out = append(out, sl.body...)
	return append(out, '}')
}

func (s *Server) readBatchBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return s.readBodyLimit(w, r, s.cfg.MaxDocumentBytes/3*4+int64(api.MaxBatchItems)*(4<<10))
}
