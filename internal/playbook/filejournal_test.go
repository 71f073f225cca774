package playbook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// fileJournal is a JournalStore over append-only, fsync'd JSON-lines files
// in a directory: one file per run, each line one record and its audit
// event, written with a single write(2) so a record and its event are never
// separated. It is real persistence: the crash test kills the process that
// writes it and reads it back in another.
type fileJournal struct {
	dir string
	mu  sync.Mutex
}

type journalLine struct {
	Seq   int64            `json:"seq"`
	Rec   json.RawMessage  `json:"rec"`
	Audit store.AuditEvent `json:"audit"`
}

func newFileJournal(t testing.TB, dir string) *fileJournal {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &fileJournal{dir: dir}
}

func (j *fileJournal) path(runID string) string { return filepath.Join(j.dir, runID+".jsonl") }

// linesLocked reads a run's lines; a torn last line (a write cut by a crash)
// is not a record. j.mu must be held.
func (j *fileJournal) linesLocked(runID string) ([]journalLine, error) {
	b, err := os.ReadFile(j.path(runID))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []journalLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l journalLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			break
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func (j *fileJournal) AppendJournal(ctx context.Context, runID string, seq int64, rec []byte, ev store.AuditEvent) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	lines, err := j.linesLocked(runID)
	if err != nil {
		return err
	}
	if seq != int64(len(lines)) {
		return fmt.Errorf("journal %s: record %d (have %d): %w", runID, seq, len(lines), store.ErrExists)
	}
	b, err := json.Marshal(journalLine{Seq: seq, Rec: rec, Audit: ev})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(j.path(runID), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (j *fileJournal) Journal(ctx context.Context, runID string) ([][]byte, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	lines, err := j.linesLocked(runID)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("journal %s: %w", runID, store.ErrNotFound)
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = l.Rec
	}
	return out, nil
}

func (j *fileJournal) Runs(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".jsonl"); ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids) // run IDs start with their UTC start time
	return ids, nil
}

// audit returns the audit events written with a run's records.
func (j *fileJournal) audit(t testing.TB, runID string) []store.AuditEvent {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	lines, err := j.linesLocked(runID)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, l := range lines {
		out = append(out, l.Audit)
	}
	return out
}

// records returns a run's decoded records.
func (j *fileJournal) records(t testing.TB, runID string) []Record {
	t.Helper()
	raw, err := j.Journal(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Record, len(raw))
	for i, b := range raw {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
