package sqlite

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// TestIdempotencyLookupUsesIndex guards the group commit's per-batch
// idempotency lookups against a plan that scans the whole table (the cost
// of every commit would then grow with every signature ever made).
func TestIdempotencyLookupUsesIndex(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "plan.db"), store.Options{Migrate: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct{ cols, table string }{
		{sigColumns, "signatures"},
		{"jobs.tenant_id, jobs.idempotency_key, jobs.id", "jobs"},
	} {
		t.Run(tc.table, func(t *testing.T) {
			head, tail := lookupSQL(tc.cols, tc.table)
			q := multiRow(head, 2, 3, tail)
			rows, err := s.DB().QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, "t", "a", "t", "b", "t", "c")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(plan, "\n")
			if strings.Contains(got, "SCAN "+tc.table) || !strings.Contains(got, "SEARCH "+tc.table+" USING INDEX") {
				t.Errorf("plan of %s lookup scans the table:\n%s", tc.table, got)
			}
		})
	}
}
