package auditlog

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// HistoryFile is the checkpoint history's path relative to the data dir.
const HistoryFile = "audit/checkpoints.log"

// historyRecord is one line of the checkpoint history: a JSON object per
// signed checkpoint, appended and fsynced before the checkpoint is stored.
type historyRecord struct {
	Size int64     `json:"size"`
	Root string    `json:"root"`
	Time time.Time `json:"time"`
	Note string    `json:"note"`
}

// appendHistory appends c to the history at path and fsyncs it (and the
// directory when the file is new).
func appendHistory(path string, c Checkpoint, at time.Time) error {
	line, err := json.Marshal(historyRecord{Size: c.Size, Root: base64.StdEncoding.EncodeToString(c.Hash[:]), Time: at.UTC(), Note: string(c.Note)})
	if err != nil {
		return fmt.Errorf("auditlog: encode history record: %w", err)
	}
	line = append(line, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("auditlog: checkpoint history dir: %w", err)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("auditlog: open checkpoint history: %w", err)
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return fmt.Errorf("auditlog: append checkpoint history: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("auditlog: fsync checkpoint history: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("auditlog: close checkpoint history: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if d, err := os.Open(dir); err == nil {
			syncErr := d.Sync()
			d.Close()
			if syncErr != nil {
				return fmt.Errorf("auditlog: fsync checkpoint history dir: %w", syncErr)
			}
		}
	}
	return nil
}

// RecordedCheckpoint is the latest checkpoint in a history file.
type RecordedCheckpoint struct {
	Checkpoint
	Time time.Time
}

// LatestRecorded returns the last complete record of the checkpoint
// history at path; ok is false when the file does not exist or is empty. A
// final line without its newline (a write torn by a crash) is ignored: its
// checkpoint was never stored, because the store write follows the fsync.
func LatestRecorded(path string) (rc RecordedCheckpoint, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return RecordedCheckpoint{}, false, nil
	}
	if err != nil {
		return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: open checkpoint history: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: stat checkpoint history: %w", err)
	}
	// Records are well under 4 KiB; read the tail only, growing it if a
	// record is unexpectedly long.
	for tail := int64(16 << 10); ; tail *= 4 {
		off := max(st.Size()-tail, 0)
		buf := make([]byte, st.Size()-off)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: read checkpoint history: %w", err)
		}
		end := bytes.LastIndexByte(buf, '\n')
		if end < 0 {
			if off == 0 {
				return RecordedCheckpoint{}, false, nil
			}
			continue
		}
		start := bytes.LastIndexByte(buf[:end], '\n') + 1
		if start == 0 && off > 0 {
			continue
		}
		var rec historyRecord
		if err := json.Unmarshal(buf[start:end], &rec); err != nil {
			return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: checkpoint history %s: last record is corrupt: %w", path, err)
		}
		c, err := parseUnverified([]byte(rec.Note))
		if err != nil {
			return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: checkpoint history %s: last record: %w", path, err)
		}
		if c.Size != rec.Size || base64.StdEncoding.EncodeToString(c.Hash[:]) != rec.Root {
			return RecordedCheckpoint{}, false, fmt.Errorf("auditlog: checkpoint history %s: last record's size/root disagree with its note", path)
		}
		return RecordedCheckpoint{Checkpoint: c, Time: rec.Time}, true, nil
	}
}

// ForkError reports a store whose audit tree does not continue the latest
// checkpoint recorded in the history file. It unwraps to ErrFork.
type ForkError struct {
	HistoryPath  string
	RecordedSize int64     // size of the latest recorded checkpoint
	RecordedRoot tlog.Hash // its root hash
	RecordedAt   time.Time // when it was signed
	StoreSize    int64     // integrated tree size found in the store
	// Index is the first leaf index found to differ, or -1.
	Index  int64
	Reason string
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("auditlog: refusing to write: the store's audit log forks from checkpoint %d (root %s, signed %s, recorded in %s): %s; "+
		"the database is not the one those checkpoints were signed from (restored from an older copy, or modified). "+
		"Recover by restoring the newest database backup that contains at least %d events, then run `countersign audit verify`; "+
		"if those events are truly lost, declare an incident and start a new log (new origin and log key) rather than editing %s",
		e.RecordedSize, base64.StdEncoding.EncodeToString(e.RecordedRoot[:]), e.RecordedAt.Format(time.RFC3339),
		e.HistoryPath, e.Reason, e.RecordedSize, e.HistoryPath)
}

func (e *ForkError) Unwrap() error { return ErrFork }

// CheckFork verifies, before a node writes, that the store's audit tree is
// a continuation of the latest checkpoint recorded in the history file at
// historyPath. It recomputes every stored tree hash from the events (so a
// changed, dropped or reordered event, or a changed hash, is found), checks
// the recomputed root at the recorded size, and returns a *ForkError when
// anything disagrees. A missing history is accepted only while the store
// holds no checkpoint.
func CheckFork(ctx context.Context, st Reader, historyPath string) error {
	rec, ok, err := LatestRecorded(historyPath)
	if err != nil {
		return err
	}
	size, err := st.TreeSize(ctx)
	if err != nil {
		return fmt.Errorf("auditlog: tree size: %w", err)
	}
	if !ok {
		_, err := st.LatestCheckpoint(ctx)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("auditlog: latest checkpoint: %w", err)
		}
		return &ForkError{HistoryPath: historyPath, StoreSize: size, Index: -1,
			Reason: "the store holds signed checkpoints but the checkpoint history file is missing or empty (restore it from backup with the data dir)"}
	}
	fe := func(index int64, format string, a ...any) error {
		return &ForkError{HistoryPath: historyPath, RecordedSize: rec.Size, RecordedRoot: rec.Hash, RecordedAt: rec.Time,
			StoreSize: size, Index: index, Reason: fmt.Sprintf(format, a...)}
	}
	if size < rec.Size {
		return fe(-1, "the store's tree has %d entries, fewer than the %d already checkpointed", size, rec.Size)
	}
	if err := recheckTree(ctx, st, size, recheckChunk); err != nil {
		var te *treeMismatch
		if errors.As(err, &te) {
			return fe(te.leaf, "%s", te.msg)
		}
		return err
	}
	root, err := tlog.TreeHash(rec.Size, storeHashes(ctx, st))
	if err != nil {
		return fmt.Errorf("auditlog: root at %d: %w", rec.Size, err)
	}
	if root != rec.Hash {
		return fe(-1, "the tree recomputed from the store's events has root %s at size %d",
			base64.StdEncoding.EncodeToString(root[:]), rec.Size)
	}
	return nil
}

// treeMismatch is a disagreement between the events and the stored hashes.
type treeMismatch struct {
	leaf int64
	msg  string
}

func (e *treeMismatch) Error() string { return e.msg }

// recheckChunk is the number of events re-hashed per store read in
// CheckFork: large enough that per-query costs vanish, small enough to keep
// a few chunks in memory (about 5 MB each).
const recheckChunk = 16384

// recheckTree recomputes every stored hash of the first size leaves from
// the events and compares it with the store, in chunks of chunk events
// checked on GOMAXPROCS workers.
//
// A chunk's hashes are computed from its events and the stored roots of
// the complete subtrees to its left (its frontier). Those roots belong to
// earlier chunks, which compare them with their own recomputation, so if
// every chunk agrees, by induction on chunk order every stored hash equals
// the hash recomputed from the events. Chunks are claimed in index order
// and no chunk after a failed one is started, so the error returned is the
// one of the lowest failing chunk: the first storage index that differs,
// whatever the number of workers.
func recheckTree(ctx context.Context, st Reader, size, chunk int64) error {
	chunks := (size + chunk - 1) / chunk
	errs := make([]error, chunks)
	var next atomic.Int64
	var firstFailed atomic.Int64
	firstFailed.Store(chunks)
	var wg sync.WaitGroup
	for range min(int64(runtime.GOMAXPROCS(0)), chunks) {
		wg.Go(func() {
			for {
				c := next.Add(1) - 1
				if c >= chunks || c > firstFailed.Load() {
					return
				}
				from := c * chunk
				if errs[c] = recheckRange(ctx, st, from, min(chunk, size-from)); errs[c] != nil {
					lowerTo(&firstFailed, c)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// recheckRange recomputes the stored hashes of leaves [from, from+n) from
// the events and the stored frontier, reads the stored ones in one
// contiguous range and returns a *treeMismatch at the first difference.
func recheckRange(ctx context.Context, st Reader, from, n int64) error {
	entries, err := readEntries(ctx, st, from, n)
	if err != nil {
		if ge := (*gapError)(nil); errors.As(err, &ge) {
			return &treeMismatch{leaf: ge.index, msg: err.Error()}
		}
		return err
	}
	b, err := newBatchHasher(storeHashes(ctx, st), from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := b.add(tlog.RecordHash(e)); err != nil {
			return err
		}
	}
	got, err := readHashRange(ctx, st, b.first, b.first+int64(len(b.hashes)))
	if err != nil {
		return err
	}
	for i, h := range b.hashes {
		if got[i] == h {
			continue
		}
		level, n := tlog.SplitStoredHashIndex(b.first + int64(i))
		if level == 0 {
			return &treeMismatch{leaf: n, msg: fmt.Sprintf("audit event %d does not hash to the stored leaf hash (the event or the hash was changed)", n)}
		}
		return &treeMismatch{leaf: n << level, msg: fmt.Sprintf("stored tree hash at level %d, index %d (covering events from %d) differs from the hash recomputed from the events", level, n, n<<level)}
	}
	return nil
}

// lowerTo sets a to v if v is smaller.
func lowerTo(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v >= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
