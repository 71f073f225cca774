package auditlog

import (
	"sync"

	"github.com/countersign/countersign/internal/store"
)

// DefaultRecentEntries bounds a RecentEntries made with max <= 0: about
// two seconds of a node's peak signing rate, ~40 MB of entries.
const DefaultRecentEntries = 1 << 16

// RecentEntries keeps the entries of audit events this process has just
// committed, by index, so that the Integrator hashes them from memory
// instead of reading them back from the store (on SQLite that read was
// ~2 µs of a signature's CPU, on PostgreSQL a query per batch). It holds
// one contiguous run of indexes: an entry that does not continue the run
// starts a new one, and the oldest entries go once more than max are held.
//
// It is only a cache. The Integrator uses it for a batch it holds whole and
// reads the store otherwise: events other processes or other writers
// committed (key operations, flag flips, other nodes' signatures) break the
// run and are read from the store as before. What it holds must be exactly
// the committed bytes: Add only after the transaction that stored them
// committed, and never modify an entry after handing it over.
type RecentEntries struct {
	mu      sync.Mutex
	first   int64 // index of entries[0]
	entries [][]byte
	max     int
}

// NewRecentEntries returns an empty RecentEntries holding at most max
// entries (DefaultRecentEntries if max <= 0).
func NewRecentEntries(max int) *RecentEntries {
	if max <= 0 {
		max = DefaultRecentEntries
	}
	return &RecentEntries{max: max}
}

// Add records committed entries: entries[i] is the entry of the event at
// indexes[i]. Indexes ascend within a call, as a commit assigns them.
func (r *RecentEntries) Add(indexes []int64, entries [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, idx := range indexes {
		r.appendLocked(idx, entries[i])
	}
	r.trimLocked()
}

// appendLocked continues the run with the entry at idx, or starts a new run
// there. r.mu must be held.
func (r *RecentEntries) appendLocked(idx int64, entry []byte) {
	if idx != r.first+int64(len(r.entries)) || len(r.entries) == 0 {
		r.first, r.entries = idx, r.entries[:0]
	}
	r.entries = append(r.entries, entry)
}

// trimLocked drops the oldest entries beyond max. r.mu must be held.
func (r *RecentEntries) trimLocked() {
	if drop := len(r.entries) - r.max; drop > 0 {
		// Copy so the backing array does not keep the dropped entries.
		kept := make([][]byte, len(r.entries)-drop, r.max)
		copy(kept, r.entries[drop:])
		r.first += int64(drop)
		r.entries = kept
	}
}

// take returns the entries of events [from, from+n) if it holds all of
// them, and forgets those before from (integrated already). The returned
// slice is the caller's. A nil RecentEntries holds nothing.
func (r *RecentEntries) take(from, n int64) ([][]byte, bool) {
	if r == nil {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.first + int64(len(r.entries))
	if from > r.first && from <= end {
		r.entries = r.entries[from-r.first:]
		r.first = from
	}
	if from < r.first || from+n > end {
		return nil, false
	}
	return append([][]byte(nil), r.entries[:n]...), true
}

// AddCommitted adds the events of a committed group-commit batch
// (store.CommitterConfig.Committed): ws[i]'s event is at rs[i].AuditIndex,
// unless rs[i].Existing says nothing was written. It runs on the
// committer's writer goroutine, so it takes the lock once and allocates
// nothing of its own.
func (r *RecentEntries) AddCommitted(ws []store.SignatureWrite, rs []store.WriteResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range rs {
		if rs[i].Existing == nil {
			r.appendLocked(rs[i].AuditIndex, ws[i].Event.Entry)
		}
	}
	r.trimLocked()
}
