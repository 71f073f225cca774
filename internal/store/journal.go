package store

import (
	"context"
	"errors"
)

// ErrJournalGap is returned by AppendJournal for a record that would leave
// a gap in a run's sequence numbers.
var ErrJournalGap = errors.New("store: journal record would leave a gap")

// JournalStore persists playbook run journals (package playbook's
// JournalStore). AppendJournal commits record seq (0-based) of a run with
// its audit event in one transaction; if the run already has record seq it
// writes nothing and returns an error wrapping ErrExists. Journal returns a
// run's records in seq order (ErrNotFound if none); Runs lists run IDs in
// the order they were started (the audit order of their first records).
type JournalStore interface {
	AppendJournal(ctx context.Context, runID string, seq int64, rec []byte, ev AuditEvent) error
	Journal(ctx context.Context, runID string) ([][]byte, error)
	Runs(ctx context.Context) ([]string, error)
}
