package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

func job(tenant, idem string, i int) store.Job {
	return store.Job{
		ID: fmt.Sprintf("job-%s-%s", tenant, idem), TenantID: tenant, IdempotencyKey: idem,
		RequestHash: []byte("req-" + idem), Request: []byte(`{"document":"aGVsbG8=","key":"default"}`),
		State: store.JobAccepted, CallbackURL: "https://client.example/cb", Release: "v1.2.3", Instance: "node-1",
		AcceptedAt: at(i),
	}
}

func testJobs(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	j := job("acme", "a1", 1)
	ex, err := s.CreateJob(ctx, j, event("job.accepted", "acme", j.ID, 1))
	must(t, "CreateJob", err)
	if ex != nil {
		t.Fatalf("CreateJob of a new key returned existing %+v", ex)
	}
	got, err := s.Job(ctx, "acme", j.ID)
	must(t, "Job", err)
	if !reflect.DeepEqual(got, j) {
		t.Errorf("Job round trip:\n got %+v\nwant %+v", got, j)
	}
	if !got.FinishedAt.IsZero() {
		t.Errorf("FinishedAt = %v, want zero until finished", got.FinishedAt)
	}
	// The same key again (another node accepted a retry) writes nothing and
	// returns the stored job, whatever the new request says.
	retry := job("acme", "a1", 2)
	retry.ID, retry.RequestHash = "job-retry", []byte("other")
	ex, err = s.CreateJob(ctx, retry, event("job.accepted", "acme", retry.ID, 2))
	must(t, "CreateJob retry", err)
	if ex == nil || !reflect.DeepEqual(*ex, j) {
		t.Errorf("CreateJob retry: existing = %+v, want %+v", ex, j)
	}
	_, err = s.Job(ctx, "acme", "job-retry")
	wantErr(t, "Job(job-retry)", err, store.ErrNotFound)
	byKey, err := s.JobByIdempotencyKey(ctx, "acme", "a1")
	must(t, "JobByIdempotencyKey", err)
	if byKey.ID != j.ID {
		t.Errorf("JobByIdempotencyKey = %s, want %s", byKey.ID, j.ID)
	}
	// Tenant isolation.
	_, err = s.Job(ctx, "other", j.ID)
	wantErr(t, "Job(other tenant)", err, store.ErrNotFound)
	_, err = s.JobByIdempotencyKey(ctx, "other", "a1")
	wantErr(t, "JobByIdempotencyKey(other tenant)", err, store.ErrNotFound)
	if n := auditSize(t, s); n != 1 {
		t.Errorf("AuditSize = %d, want 1: a replayed accept writes no event", n)
	}

	for want := 1; want <= 3; want++ {
		n, err := s.IncrementJobAttempts(ctx, j.ID)
		must(t, "IncrementJobAttempts", err)
		if n != want {
			t.Errorf("IncrementJobAttempts = %d, want %d", n, want)
		}
	}
	_, err = s.IncrementJobAttempts(ctx, "nope")
	wantErr(t, "IncrementJobAttempts(nope)", err, store.ErrNotFound)

	// The worker signs it; a redelivery signs again and gets the first.
	w := write("acme", "a1", 3)
	r, err := s.CompleteJob(ctx, store.JobCompletion{JobID: j.ID, Write: w})
	must(t, "CompleteJob", err)
	if r.Existing != nil || r.AuditIndex != 1 {
		t.Fatalf("CompleteJob = %+v, want AuditIndex 1", r)
	}
	again := write("acme", "a1", 4)
	again.Signature.ID = "sig-redelivered"
	r2, err := s.CompleteJob(ctx, store.JobCompletion{JobID: j.ID, Write: again})
	must(t, "CompleteJob redelivered", err)
	if r2.Existing == nil || r2.Existing.ID != w.Signature.ID || r2.Existing.AuditIndex != 1 {
		t.Errorf("CompleteJob redelivered = %+v, want Existing %s at 1", r2, w.Signature.ID)
	}
	_, err = s.SignatureByID(ctx, "sig-redelivered")
	wantErr(t, "redelivered signature", err, store.ErrNotFound)
	got, err = s.Job(ctx, "acme", j.ID)
	must(t, "Job", err)
	if got.State != store.JobSigned || got.SignatureID != w.Signature.ID || !got.FinishedAt.Equal(w.Signature.SignedAt) || got.Attempts != 3 {
		t.Errorf("signed job = %+v, want signed with %s at %v after 3 attempts", got, w.Signature.ID, w.Signature.SignedAt)
	}
	evs, err := s.AuditEvents(ctx, 1, 1)
	must(t, "AuditEvents", err)
	if len(evs) != 1 || evs[0].Subject != w.Signature.ID || !bytes.Equal(evs[0].Entry, w.Event.Entry) {
		t.Errorf("audit event 1 = %+v, want the signature's", evs)
	}
	wantErr(t, "FailJob signed", s.FailJob(ctx, j.ID, []byte(`{}`), event("job.failed", "acme", j.ID, 5)), store.ErrJobState)
	// The signature's idempotency key is the job's: a sync replay of the
	// same key finds the signature.
	rs, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "a1", 6)})
	must(t, "CommitSignatures on a signed job's key", err)
	if rs[0].Existing == nil || rs[0].Existing.ID != w.Signature.ID {
		t.Errorf("sync replay of a job's key = %+v, want Existing %s", rs[0], w.Signature.ID)
	}

	// A mismatched completion and a failing job.
	j2 := job("acme", "a2", 7)
	_, err = s.CreateJob(ctx, j2, event("job.accepted", "acme", j2.ID, 7))
	must(t, "CreateJob a2", err)
	if _, err := s.CompleteJob(ctx, store.JobCompletion{JobID: j2.ID, Write: write("acme", "not-a2", 8)}); err == nil {
		t.Error("CompleteJob with another idempotency key succeeded")
	}
	problem := []byte(`{"type":"https://countersign.dev/problems/key-disabled","status":422}`)
	must(t, "FailJob", s.FailJob(ctx, j2.ID, problem, event("job.failed", "acme", j2.ID, 9)))
	got, err = s.Job(ctx, "acme", j2.ID)
	must(t, "Job a2", err)
	if got.State != store.JobFailed || got.Error != string(problem) || !got.FinishedAt.Equal(at(9)) {
		t.Errorf("failed job = %+v, want failed with the problem at %v", got, at(9))
	}
	wantErr(t, "FailJob twice", s.FailJob(ctx, j2.ID, problem, event("job.failed", "acme", j2.ID, 10)), store.ErrJobState)
	_, err = s.CompleteJob(ctx, store.JobCompletion{JobID: j2.ID, Write: write("acme", "a2", 11)})
	wantErr(t, "CompleteJob failed", err, store.ErrJobState)
	_, err = s.CompleteJob(ctx, store.JobCompletion{JobID: "nope", Write: write("acme", "x", 12)})
	wantErr(t, "CompleteJob(nope)", err, store.ErrNotFound)
	wantErr(t, "FailJob(nope)", s.FailJob(ctx, "nope", problem, event("job.failed", "acme", "nope", 13)), store.ErrNotFound)
	// accept a1, sign a1, accept a2, fail a2.
	if n := auditSize(t, s); n != 4 {
		t.Errorf("AuditSize = %d, want 4: refused transitions write no event", n)
	}
	_, err = s.CreateJob(ctx, store.Job{ID: "j", TenantID: "acme", IdempotencyKey: "k", State: store.JobSigned}, event("job.accepted", "acme", "j", 14))
	wantErr(t, "CreateJob signed", err, store.ErrJobState)
}

// testJobKeySpace checks that sync signatures and async jobs share a
// tenant's idempotency keys.
func testJobKeySpace(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "sync-first", 1)})
	must(t, "CommitSignatures", err)
	_, err = s.CreateJob(ctx, job("acme", "sync-first", 2), event("job.accepted", "acme", "j", 2))
	wantErr(t, "CreateJob on a sync key", err, store.ErrIdempotencyTaken)
	// Another tenant's same key is free.
	_, err = s.CreateJob(ctx, job("other", "sync-first", 3), event("job.accepted", "other", "j", 3))
	must(t, "CreateJob other tenant", err)

	_, err = s.CreateJob(ctx, job("acme", "async-first", 4), event("job.accepted", "acme", "j", 4))
	must(t, "CreateJob", err)
	size := auditSize(t, s)
	// A sync write for an unsigned job's key fails the batch; its
	// neighbours commit when written on their own.
	_, err = s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "fine", 5), write("acme", "async-first", 6)})
	wantErr(t, "CommitSignatures on a job key", err, store.ErrIdempotencyTaken)
	if n := auditSize(t, s); n != size {
		t.Errorf("AuditSize = %d, want %d: the refused batch wrote nothing", n, size)
	}
	_, err = s.SignatureByIdempotencyKey(ctx, "acme", "fine")
	wantErr(t, "signature of the refused batch", err, store.ErrNotFound)
	// Through the Committer the good write still commits.
	c := store.NewCommitter(ctx, s, store.CommitterConfig{})
	defer c.Close()
	errs := make(chan error, 2)
	for _, w := range []store.SignatureWrite{write("acme", "fine", 5), write("acme", "async-first", 6)} {
		go func() { _, err := c.Commit(ctx, w); errs <- err }()
	}
	var taken, ok int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrIdempotencyTaken):
			taken++
		default:
			t.Errorf("Committer.Commit: %v", err)
		}
	}
	if ok != 1 || taken != 1 {
		t.Errorf("committer: %d ok, %d taken; want 1 and 1", ok, taken)
	}
	// Once failed, the job still holds its key.
	jb, err := s.JobByIdempotencyKey(ctx, "acme", "async-first")
	must(t, "JobByIdempotencyKey", err)
	must(t, "FailJob", s.FailJob(ctx, jb.ID, []byte(`{}`), event("job.failed", "acme", jb.ID, 7)))
	_, err = s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "async-first", 8)})
	wantErr(t, "CommitSignatures on a failed job's key", err, store.ErrIdempotencyTaken)
}

func testJobsByState(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i := range 6 {
		j := job(fmt.Sprintf("t%d", i%2), fmt.Sprintf("k%d", i), 10-i) // accepted newest first
		_, err := s.CreateJob(ctx, j, event("job.accepted", j.TenantID, j.ID, i))
		must(t, "CreateJob", err)
	}
	// Sign k0 (accepted at(10)) so it leaves the accepted set.
	_, err := s.CompleteJob(ctx, store.JobCompletion{JobID: "job-t0-k0", Write: write("t0", "k0", 20)})
	must(t, "CompleteJob", err)
	tests := []struct {
		state    string
		from, to time.Time
		limit    int
		want     []string
	}{
		{store.JobAccepted, at(0), at(100), 0, []string{"job-t1-k5", "job-t0-k4", "job-t1-k3", "job-t0-k2", "job-t1-k1"}},
		{store.JobAccepted, at(6), at(9), 0, []string{"job-t0-k4", "job-t1-k3", "job-t0-k2"}},
		{store.JobAccepted, at(0), at(100), 2, []string{"job-t1-k5", "job-t0-k4"}},
		{store.JobSigned, at(0), at(100), 0, []string{"job-t0-k0"}},
		{store.JobFailed, at(0), at(100), 0, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s-%d", tc.state, tc.limit), func(t *testing.T) {
			js, err := s.JobsByState(ctx, tc.state, tc.from, tc.to, tc.limit)
			must(t, "JobsByState", err)
			var got []string
			for _, j := range js {
				got = append(got, j.ID)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("JobsByState = %v, want %v", got, tc.want)
			}
		})
	}
	_, err = s.JobsByState(ctx, "bogus", at(0), at(1), 0)
	wantErr(t, "JobsByState(bogus)", err, store.ErrJobState)
}
