package auditlog

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/store"
)

// Defaults for Config.
const (
	// DefaultInterval is the minimum time between two checkpoints.
	DefaultInterval = time.Second
	// DefaultBatchSize is how many events are hashed per store write.
	DefaultBatchSize = 4096
)

// Config configures an Integrator.
type Config struct {
	// Signer signs checkpoints; its Name is the checkpoint origin
	// (NewNoteSigner). Required.
	Signer note.Signer
	// HistoryPath is the append-only checkpoint history outside the
	// database (<data>/audit/checkpoints.log). Required.
	HistoryPath string
	// Interval is the minimum time between checkpoints in Run
	// (default DefaultInterval).
	Interval time.Duration
	// BatchSize bounds the events hashed per PutTreeHashes (default
	// DefaultBatchSize).
	BatchSize int
	// Recent, if set, holds entries this process committed; the
	// Integrator hashes a batch from it when it holds the batch whole and
	// reads the store otherwise (see RecentEntries).
	Recent *RecentEntries
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Integrator sequences committed audit events into the Merkle tree and
// signs checkpoints. The store assigns indexes at commit; the Integrator
// only hashes events [TreeSize, AuditSize) in index order, so integration
// never reorders committed events. One Integrator per store: it is safe for
// concurrent use within a process, and a second process integrating the same
// store would write identical hashes.
type Integrator struct {
	st  Store
	cfg Config

	mu       sync.Mutex
	recorded *RecordedCheckpoint // latest in the history; nil before the first
	loaded   bool
}

// NewIntegrator returns an Integrator for st.
func NewIntegrator(st Store, cfg Config) (*Integrator, error) {
	if cfg.Signer == nil {
		return nil, errors.New("auditlog: Config.Signer is required")
	}
	if cfg.HistoryPath == "" {
		return nil, errors.New("auditlog: Config.HistoryPath is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Integrator{st: st, cfg: cfg}, nil
}

// Run integrates and checkpoints every Interval until ctx is done, so at
// most one checkpoint is signed per Interval while events arrive and none
// while the log is idle. It returns ctx's error, or a *ForkError (the node
// must stop writing).
func (in *Integrator) Run(ctx context.Context) error {
	t := time.NewTicker(in.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := in.IntegrateOnce(ctx); err != nil {
			if errors.Is(err, ErrFork) {
				return err
			}
			if errors.Is(err, ErrNoCheckpoint) { // empty log
				err = nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				in.cfg.Logger.ErrorContext(ctx, "audit log integration failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// IntegrateOnce hashes every committed event not yet in the tree and, if
// the tree grew, signs a checkpoint, appends it to the history (fsynced) and
// stores it. It returns the latest checkpoint (the new one, or the previous
// one when nothing changed; ErrNoCheckpoint when the log is still empty).
func (in *Integrator) IntegrateOnce(ctx context.Context) (Checkpoint, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.guardLocked(ctx); err != nil {
		return Checkpoint{}, err
	}
	size, err := in.st.TreeSize(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: tree size: %w", err)
	}
	committed, err := in.st.AuditSize(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: audit size: %w", err)
	}
	for size < committed {
		n := min(int64(in.cfg.BatchSize), committed-size)
		if err := in.integrateBatchLocked(ctx, size, n); err != nil {
			return Checkpoint{}, err
		}
		size += n
	}
	if in.recorded != nil && in.recorded.Size == size {
		return in.recorded.Checkpoint, nil
	}
	if size == 0 {
		return Checkpoint{}, ErrNoCheckpoint
	}
	return in.checkpointLocked(ctx, size)
}

// guardLocked refuses to write when the store's tree does not extend the
// latest recorded checkpoint (cheap: the tree size and the root at the
// recorded size). CheckFork does the full check at start. in.mu must be held.
func (in *Integrator) guardLocked(ctx context.Context) error {
	if !in.loaded {
		rec, ok, err := LatestRecorded(in.cfg.HistoryPath)
		if err != nil {
			return err
		}
		if ok {
			in.recorded = &rec
		}
		in.loaded = true
	}
	if in.recorded == nil {
		return nil
	}
	rec := in.recorded
	size, err := in.st.TreeSize(ctx)
	if err != nil {
		return fmt.Errorf("auditlog: tree size: %w", err)
	}
	fe := &ForkError{HistoryPath: in.cfg.HistoryPath, RecordedSize: rec.Size, RecordedRoot: rec.Hash, RecordedAt: rec.Time, StoreSize: size, Index: -1}
	if size < rec.Size {
		fe.Reason = fmt.Sprintf("the store's tree has %d entries, fewer than the %d already checkpointed", size, rec.Size)
		return fe
	}
	root, err := tlog.TreeHash(rec.Size, storeHashes(ctx, in.st))
	if err != nil {
		return fmt.Errorf("auditlog: root at recorded size %d: %w", rec.Size, err)
	}
	if root != rec.Hash {
		fe.Reason = fmt.Sprintf("the store's tree has root %s at size %d", base64.StdEncoding.EncodeToString(root[:]), rec.Size)
		return fe
	}
	return nil
}

// integrateBatchLocked hashes events [from, from+n) and stores their hashes
// with the new tree size in one write. in.mu must be held.
func (in *Integrator) integrateBatchLocked(ctx context.Context, from, n int64) error {
	entries, ok := in.cfg.Recent.take(from, n)
	if !ok {
		var err error
		if entries, err = readEntries(ctx, in.st, from, n); err != nil {
			return err
		}
	}
	b, err := newBatchHasher(storeHashes(ctx, in.st), from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := b.add(tlog.RecordHash(e)); err != nil {
			return err
		}
	}
	if err := in.st.PutTreeHashes(ctx, from+n, b.indexed()); err != nil {
		return fmt.Errorf("auditlog: store tree hashes up to %d: %w", from+n, err)
	}
	return nil
}

// checkpointLocked signs the tree of the given size, appends it to the
// history and then stores it. in.mu must be held.
func (in *Integrator) checkpointLocked(ctx context.Context, size int64) (Checkpoint, error) {
	root, err := tlog.TreeHash(size, storeHashes(ctx, in.st))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: root at %d: %w", size, err)
	}
	c := Checkpoint{Origin: in.cfg.Signer.Name(), Size: size, Hash: root}
	if c.Note, err = signCheckpoint(c, in.cfg.Signer); err != nil {
		return Checkpoint{}, err
	}
	now := in.cfg.Now()
	// History first: a checkpoint that clients can see is always recorded.
	if err := appendHistory(in.cfg.HistoryPath, c, now); err != nil {
		return Checkpoint{}, err
	}
	in.recorded = &RecordedCheckpoint{Checkpoint: c, Time: now}
	if err := in.st.PutCheckpoint(ctx, store.Checkpoint{Size: size, Note: c.Note, CreatedAt: now}); err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: store checkpoint %d: %w", size, err)
	}
	in.cfg.Logger.DebugContext(ctx, "audit checkpoint signed", "size", size, "root", base64.StdEncoding.EncodeToString(root[:]))
	return c, nil
}
