package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// DB is one fresh, empty (unmigrated) database for RunDB.
type DB struct {
	// Open opens the database with opts; every call opens the same one.
	Open func(ctx context.Context, opts store.Options) (store.Store, error)
	// Exec runs raw SQL against it (outside any store).
	Exec func(ctx context.Context, query string) error
	// RecordVersion is the SQL that records schema version %d as applied
	// (the backend's schema_migrations insert), used to simulate a newer
	// release's migration.
	RecordVersion string
}

// RunDB runs the tests that need raw SQL or reopening: append-only audit
// rows and the schema gate. newDB must return a new empty database per call.
func RunDB(t *testing.T, newDB func(t *testing.T) DB) {
	t.Run("AppendOnly", func(t *testing.T) { testAppendOnly(t, newDB(t)) })
	t.Run("SchemaGate", func(t *testing.T) { testSchemaGate(t, newDB(t)) })
	t.Run("JobLinkExisting", func(t *testing.T) { testJobLinkExisting(t, newDB(t)) })
}

func openT(t *testing.T, db DB, opts store.Options) store.Store {
	t.Helper()
	s, err := db.Open(t.Context(), opts)
	must(t, "Open", err)
	t.Cleanup(func() { s.Close() })
	return s
}

func testAppendOnly(t *testing.T, db DB) {
	ctx := t.Context()
	s := openT(t, db, store.Options{Migrate: true})
	_, err := s.CommitSignatures(ctx, []store.SignatureWrite{write("acme", "k1", 1)})
	must(t, "CommitSignatures", err)
	for _, k := range []string{"j-signed", "j-failed", "j-open"} {
		_, err := s.CreateJob(ctx, job("acme", k, 2), event("job.accepted", "acme", k, 2))
		must(t, "CreateJob", err)
	}
	_, err = s.CompleteJob(ctx, store.JobCompletion{JobID: "job-acme-j-signed", Write: write("acme", "j-signed", 3)})
	must(t, "CompleteJob", err)
	must(t, "FailJob", s.FailJob(ctx, "job-acme-j-failed", []byte(`{}`), event("job.failed", "acme", "j-failed", 4)))
	must(t, "AppendJournal", s.AppendJournal(ctx, "run-1", 0, []byte(`{}`), event("playbook.run.started", "", "run-1", 5)))
	must(t, "CreateIncident", s.CreateIncident(ctx, store.Incident{ID: "inc-1", OpenedAt: at(6), Details: []byte(`{}`)},
		event("incident.opened", "", "inc-1", 6)))
	for _, q := range []string{
		"UPDATE audit_events SET actor = 'mallory'",
		"UPDATE audit_events SET entry = entry",
		"DELETE FROM audit_events",
		"UPDATE signatures SET signature = signature",
		"DELETE FROM signatures",
		"UPDATE playbook_journal SET rec = rec",
		"DELETE FROM playbook_journal",
		"DELETE FROM jobs",
		"UPDATE jobs SET state = 'accepted' WHERE state <> 'accepted'",
		"UPDATE jobs SET signature_id = 'forged' WHERE state = 'signed'",
		"UPDATE jobs SET error = '' WHERE state = 'failed'",
		"DELETE FROM incidents",
	} {
		t.Run(q, func(t *testing.T) {
			if err := db.Exec(ctx, q); err == nil {
				t.Errorf("%s succeeded; audit rows and signatures must be immutable", q)
			}
		})
	}
	evs, err := s.AuditEvents(ctx, 0, 10)
	must(t, "AuditEvents", err)
	if len(evs) != 8 || evs[0].Actor != "storetest" {
		t.Errorf("audit events after tampering attempts = %d events, want the original 8", len(evs))
	}
}

func testSchemaGate(t *testing.T, db DB) {
	ctx := t.Context()
	// A never-migrated database is refused, with the way out in the message.
	_, err := db.Open(ctx, store.Options{})
	wantErr(t, "Open unmigrated", err, store.ErrSchema)
	var se *store.SchemaError
	if !errors.As(err, &se) || se.Database != 0 || !strings.Contains(err.Error(), "countersign migrate") {
		t.Errorf("Open unmigrated: error %v, want a SchemaError for version 0 saying to run countersign migrate", err)
	}

	s := openT(t, db, store.Options{Migrate: true})
	if v, err := s.SchemaVersion(ctx); err != nil || v != store.SchemaVersion {
		t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, store.SchemaVersion)
	}
	// Migrating again is a no-op.
	openT(t, db, store.Options{Migrate: true})
	// A release that only knows the previous schema refuses this one (unless its
	// release declares a wider SchemaMax, as below).
	if store.SchemaVersion > 1 {
		_, err = db.Open(ctx, store.Options{SchemaMin: store.SchemaVersion - 1, SchemaMax: store.SchemaVersion - 1})
		wantErr(t, "Open with the previous release's range", err, store.ErrSchema)
	}

	// A newer release migrated the database past this binary.
	newer := store.SchemaVersion + 1
	must(t, "record newer version", db.Exec(ctx, fmt.Sprintf(db.RecordVersion, newer)))
	for _, opts := range []store.Options{{}, {Migrate: true}} {
		_, err := db.Open(ctx, opts)
		wantErr(t, fmt.Sprintf("Open %+v on a newer schema", opts), err, store.ErrSchema)
		if !errors.As(err, &se) || se.Database != newer || se.Max != store.DefaultSchemaMax ||
			!strings.Contains(err.Error(), fmt.Sprint(newer)) || !strings.Contains(err.Error(), "forward-fix") {
			t.Errorf("error %v: want a SchemaError naming version %d, the range and forward-fix", err, newer)
		}
	}
	// A release that declares it runs on the newer schema may open it.
	s2 := openT(t, db, store.Options{SchemaMax: newer})
	if v, err := s2.SchemaVersion(ctx); err != nil || v != newer {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, newer)
	}
	// A release whose minimum is above the database is refused too.
	_, err = db.Open(ctx, store.Options{SchemaMin: newer + 1, SchemaMax: newer + 2})
	wantErr(t, "Open below SchemaMin", err, store.ErrSchema)
}
