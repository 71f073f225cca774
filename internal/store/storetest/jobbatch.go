package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// testJobBatches checks CreateJobs and CompleteJobs: one transaction per
// batch, CreateJob's and CompleteJob's results per item, gap-free indexes.
func testJobBatches(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "sync", 1)})
	must(t, "CommitSignatures", err)
	size := auditSize(t, s)
	dup := job("acme", "b1", 3)
	dup.ID = "job-dup"
	bad := job("acme", "bad", 5)
	bad.State = store.JobSigned
	cs := []store.JobCreate{
		{Job: job("acme", "b1", 2), Event: event("job.accepted", "acme", "b1", 2)},
		{Job: dup, Event: event("job.accepted", "acme", "dup", 3)},                     // same key in the batch
		{Job: job("acme", "sync", 4), Event: event("job.accepted", "acme", "sync", 4)}, // key has a signature
		{Job: bad, Event: event("job.accepted", "acme", "bad", 5)},                     // not a new job
		{Job: job("other", "b1", 6), Event: event("job.accepted", "other", "b1", 6)},   // another tenant
	}
	rs, err := s.CreateJobs(ctx, cs)
	must(t, "CreateJobs", err)
	if len(rs) != len(cs) {
		t.Fatalf("CreateJobs returned %d results for %d", len(rs), len(cs))
	}
	checks := []struct {
		name     string
		existing string
		err      error
	}{{"new", "", nil}, {"in-batch duplicate", "job-acme-b1", nil}, {"sync key", "", store.ErrIdempotencyTaken},
		{"signed state", "", store.ErrJobState}, {"other tenant", "", nil}}
	for i, c := range checks {
		t.Run("create/"+c.name, func(t *testing.T) {
			r := rs[i]
			if c.err == nil && r.Err != nil || c.err != nil && !errors.Is(r.Err, c.err) {
				t.Errorf("Err = %v, want %v", r.Err, c.err)
			}
			got := ""
			if r.Existing != nil {
				got = r.Existing.ID
			}
			if got != c.existing {
				t.Errorf("Existing = %q, want %q", got, c.existing)
			}
		})
	}
	if n := auditSize(t, s); n != size+2 {
		t.Errorf("AuditSize = %d, want %d: two jobs created", n, size+2)
	}

	// Complete: a new signature, a redelivery of it in the same batch, a
	// wrong key, an unknown job.
	_, err = s.CreateJob(ctx, job("acme", "b2", 7), event("job.accepted", "acme", "b2", 7))
	must(t, "CreateJob b2", err)
	size = auditSize(t, s)
	again := write("acme", "b1", 9)
	again.Signature.ID = "sig-again"
	comps := []store.JobCompletion{
		{JobID: "job-acme-b1", Write: write("acme", "b1", 8)},
		{JobID: "job-acme-b1", Write: again},
		{JobID: "job-acme-b2", Write: write("acme", "not-b2", 10)},
		{JobID: "nope", Write: write("acme", "x", 11)},
		{JobID: "job-other-b1", Write: write("other", "b1", 12)},
	}
	crs, err := s.CompleteJobs(ctx, comps)
	must(t, "CompleteJobs", err)
	if crs[0].Err != nil || crs[0].Existing != nil || crs[0].AuditIndex != size {
		t.Errorf("first completion = %+v, want AuditIndex %d", crs[0], size)
	}
	if crs[1].Err != nil || crs[1].Existing == nil || crs[1].Existing.ID != "sig-acme-b1" {
		t.Errorf("redelivered completion = %+v, want Existing sig-acme-b1", crs[1])
	}
	if crs[2].Err == nil {
		t.Error("completion with another key succeeded")
	}
	if !errors.Is(crs[3].Err, store.ErrNotFound) {
		t.Errorf("completion of an unknown job: %v, want ErrNotFound", crs[3].Err)
	}
	if crs[4].Err != nil || crs[4].AuditIndex != size+1 {
		t.Errorf("other tenant's completion = %+v, want AuditIndex %d", crs[4], size+1)
	}
	if n := auditSize(t, s); n != size+2 {
		t.Errorf("AuditSize = %d, want %d", n, size+2)
	}

	// WriteJobs: creations first, then completions, in one transaction, so
	// a job accepted and signed in the same batch ends signed.
	js, ok := s.(store.JobBatchStore)
	if !ok {
		t.Fatalf("%T does not implement store.JobBatchStore", s)
	}
	size = auditSize(t, s)
	cres, pres, err := js.WriteJobs(ctx, []store.JobCreate{{Job: job("acme", "b3", 13), Event: event("job.accepted", "acme", "b3", 13)}},
		[]store.JobCompletion{{JobID: "job-acme-b3", Write: write("acme", "b3", 14)}})
	must(t, "WriteJobs", err)
	if cres[0].Err != nil || pres[0].Err != nil || pres[0].AuditIndex != size+1 {
		t.Errorf("WriteJobs = %+v, %+v; want created, then signed at %d", cres[0], pres[0], size+1)
	}
	j, err := s.Job(ctx, "acme", "job-acme-b3")
	must(t, "Job b3", err)
	if j.State != store.JobSigned || j.SignatureID != "sig-acme-b3" {
		t.Errorf("job b3 = %s %q, want signed by sig-acme-b3", j.State, j.SignatureID)
	}
}

// testJobLinkExisting creates, with raw SQL, the state the worker must
// finish without signing again: an accepted job whose key already holds a
// signature of the same request (as a schema-1 release's CommitSignatures,
// blind to jobs, can leave it), and one whose key holds another request's.
func testJobLinkExisting(t *testing.T, db DB) {
	ctx := ctxT(t)
	s := openT(t, db, store.Options{Migrate: true})
	for i, k := range []string{"same", "other"} {
		_, err := s.CreateJob(ctx, job("acme", k, i), event("job.accepted", "acme", k, i))
		must(t, "CreateJob "+k, err)
	}
	same := write("acme", "same-sig", 3)
	same.Signature.RequestHash = []byte("req-same")
	other := write("acme", "other-sig", 4)
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{same, other})
	must(t, "CommitSignatures", err)
	for _, k := range []string{"same", "other"} {
		must(t, "move job key", db.Exec(ctx, fmt.Sprintf(
			`UPDATE jobs SET idempotency_key = '%s-sig' WHERE id = 'job-acme-%s'`, k, k)))
	}
	size := auditSize(t, s)

	// Without a link event the store says what it found.
	_, err = s.CompleteJob(ctx, store.JobCompletion{JobID: "job-acme-same", Write: write("acme", "same-sig", 5)})
	var ese *store.ExistingSignatureError
	if !errors.As(err, &ese) || ese.Signature.ID != same.Signature.ID || !errors.Is(err, store.ErrIdempotencyTaken) {
		t.Fatalf("CompleteJob without link event: %v, want *ExistingSignatureError for %s", err, same.Signature.ID)
	}
	// Another request's signature is never linked.
	_, err = s.CompleteJob(ctx, store.JobCompletion{JobID: "job-acme-other", Write: write("acme", "other-sig", 6),
		Linked: event("job.completed_from_existing", "acme", "job-acme-other", 6)})
	wantErr(t, "CompleteJob of another request's key", err, store.ErrIdempotencyTaken)
	if errors.As(err, &ese) {
		t.Errorf("another request's signature reported as linkable: %v", err)
	}
	if n := auditSize(t, s); n != size {
		t.Fatalf("AuditSize = %d, want %d: refusals write nothing", n, size)
	}
	// With it, job → signed, signature_id set, one event, no new signature.
	linked := event("job.completed_from_existing", "acme", "job-acme-same", 7)
	rs, err := s.CompleteJobs(ctx, []store.JobCompletion{{JobID: "job-acme-same", Write: write("acme", "same-sig", 7), Linked: linked}})
	must(t, "CompleteJobs with link event", err)
	if r := rs[0]; r.Err != nil || !r.Linked || r.Existing == nil || r.Existing.ID != same.Signature.ID {
		t.Fatalf("linked completion = %+v, want Linked with Existing %s", r, same.Signature.ID)
	}
	j, err := s.Job(ctx, "acme", "job-acme-same")
	must(t, "Job", err)
	if j.State != store.JobSigned || j.SignatureID != same.Signature.ID || !j.FinishedAt.Equal(linked.Time) {
		t.Errorf("linked job = %s sig %q finished %v; want signed, %s, %v", j.State, j.SignatureID, j.FinishedAt, same.Signature.ID, linked.Time)
	}
	evs, err := s.AuditEvents(ctx, size, 10)
	must(t, "AuditEvents", err)
	if len(evs) != 1 || evs[0].Type != "job.completed_from_existing" {
		t.Errorf("events after linking = %+v, want one job.completed_from_existing", evs)
	}
	sg, err := s.SignatureByIdempotencyKey(ctx, "acme", "same-sig")
	must(t, "SignatureByIdempotencyKey", err)
	if sg.ID != same.Signature.ID {
		t.Errorf("signature of the key = %s, want the original %s", sg.ID, same.Signature.ID)
	}
	// A redelivery afterwards finds the job signed.
	r, err := s.CompleteJob(ctx, store.JobCompletion{JobID: "job-acme-same", Write: write("acme", "same-sig", 8), Linked: linked})
	must(t, "CompleteJob again", err)
	if r.Existing == nil || r.Existing.ID != same.Signature.ID {
		t.Errorf("CompleteJob again = %+v, want Existing %s", r, same.Signature.ID)
	}
}

// testJobCallbacks checks callback delivery bookkeeping.
func testJobCallbacks(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, k := range []string{"c1", "c2", "c3"} {
		j := job("acme", k, i)
		if k == "c3" {
			j.CallbackURL = ""
		}
		_, err := s.CreateJob(ctx, j, event("job.accepted", "acme", k, i))
		must(t, "CreateJob", err)
	}
	list := func(max int) []string {
		t.Helper()
		js, err := s.JobsAwaitingCallback(ctx, max, 0)
		must(t, "JobsAwaitingCallback", err)
		var ids []string
		for _, j := range js {
			ids = append(ids, j.ID)
		}
		return ids
	}
	if got := list(5); len(got) != 0 {
		t.Fatalf("accepted jobs awaiting callback: %v", got)
	}
	for i, k := range []string{"c1", "c2", "c3"} {
		_, err := s.CompleteJob(ctx, store.JobCompletion{JobID: "job-acme-" + k, Write: write("acme", k, 10+i)})
		must(t, "CompleteJob", err)
	}
	if got, want := fmt.Sprint(list(5)), "[job-acme-c1 job-acme-c2]"; got != want {
		t.Errorf("awaiting callback = %s, want %s", got, want)
	}
	must(t, "RecordCallbackAttempt failed", s.RecordCallbackAttempt(ctx, "job-acme-c1", at(20), false))
	must(t, "RecordCallbackAttempt delivered", s.RecordCallbackAttempt(ctx, "job-acme-c2", at(21), true))
	must(t, "RecordCallbackAttempt late duplicate", s.RecordCallbackAttempt(ctx, "job-acme-c2", at(22), true))
	wantErr(t, "RecordCallbackAttempt(nope)", s.RecordCallbackAttempt(ctx, "nope", at(23), true), store.ErrNotFound)
	if got, want := fmt.Sprint(list(5)), "[job-acme-c1]"; got != want {
		t.Errorf("awaiting callback = %s, want %s", got, want)
	}
	if got := list(1); len(got) != 0 {
		t.Errorf("awaiting callback with at most 1 attempt = %v, want none", got)
	}
	c1, err := s.Job(ctx, "acme", "job-acme-c1")
	must(t, "Job c1", err)
	c2, err := s.Job(ctx, "acme", "job-acme-c2")
	must(t, "Job c2", err)
	if c1.CallbackAttempts != 1 || !c1.CallbackLastAt.Equal(at(20)) || !c1.CallbackDeliveredAt.IsZero() {
		t.Errorf("c1 = attempts %d last %v delivered %v", c1.CallbackAttempts, c1.CallbackLastAt, c1.CallbackDeliveredAt)
	}
	if c2.CallbackAttempts != 2 || !c2.CallbackDeliveredAt.Equal(at(21)) || c2.State != store.JobSigned {
		t.Errorf("c2 = attempts %d delivered %v state %s; want 2, the first delivery, signed", c2.CallbackAttempts, c2.CallbackDeliveredAt, c2.State)
	}
}

// testJobCommitter checks group-committed job writes: concurrent creates
// and completions each get their own result.
func testJobCommitter(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	c := store.NewCommitter(ctx, s, store.CommitterConfig{MaxBatch: 8})
	defer c.Close()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("g%d", i%(n/2)) // every key twice
			j := job("acme", k, i)
			j.ID = fmt.Sprintf("job-%d", i)
			ex, err := c.CreateJob(ctx, j, event("job.accepted", "acme", k, i))
			if err != nil {
				errs <- fmt.Errorf("CreateJob %d: %w", i, err)
				return
			}
			id := j.ID
			if ex != nil {
				id = ex.ID
			}
			if _, err := c.CompleteJob(ctx, store.JobCompletion{JobID: id, Write: write("acme", k, 100+i)}); err != nil {
				errs <- fmt.Errorf("CompleteJob %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := auditSize(t, s); got != n {
		t.Errorf("AuditSize = %d, want %d: one job and one signature per key", got, n)
	}
	js, err := s.JobsByState(ctx, store.JobSigned, at(-1), at(1000), 0)
	must(t, "JobsByState", err)
	if len(js) != n/2 {
		t.Errorf("%d signed jobs, want %d", len(js), n/2)
	}
}
