package sqlite

import (
	"context"
	"log/slog"
	"time"
)

// Checkpoints. In WAL mode every commit appends the pages it changed to
// the WAL, and a checkpoint copies them back into the database file. By
// default SQLite runs that checkpoint inside the commit that takes the WAL
// past 1,000 frames, on the committing connection: with group commit that
// is the one writer every signature waits for, so each 20th batch or so
// also copied and fsynced a few hundred pages before anyone got an answer
// (18 % of the commit path's CPU in BenchmarkCommitSignatures).
//
// The store instead checkpoints from a background goroutine on its own
// connection, in PASSIVE mode: it copies what no reader still needs while
// writers go on (SQLite allows one checkpointer beside the writer), on
// the other core. The committing connection keeps an automatic checkpoint
// as a backstop, at walAutocheckpoint frames, for when nothing else
// checkpoints (a process without the loop, a loop that falls behind).
// Durability is unchanged: a commit is durable once its WAL frames are
// fsynced (synchronous=FULL does that at commit); checkpoints only move
// durable pages into the main file, and fsync the WAL before and the
// database after they do.
const (
	// checkpointEvery is how often the background checkpointer runs. At
	// the node's peak (~2 WAL frames per signature, ~10k signatures/s)
	// that is ~2,000 frames (8 MiB) per checkpoint.
	checkpointEvery = 100 * time.Millisecond
	// walAutocheckpoint is the backstop: a commit that takes the WAL past
	// this many frames (40 MiB of 4 KiB pages) checkpoints itself.
	walAutocheckpoint = 10000
)

// runCheckpoints runs a PASSIVE checkpoint every checkpointEvery until
// ctx ends, then closes done. A checkpoint that finds another one running
// (another process's) or fails is skipped: the next tick, or the
// backstop, catches up.
func (s *Store) runCheckpoints(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := s.checkpoint(ctx)
		if err != nil {
			if ctx.Err() == nil && err.Error() != lastErr {
				slog.WarnContext(ctx, "sqlite: background checkpoint failed", slog.String("db", s.path), slog.Any("err", err))
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
		s.ckpt.runs.Add(1)
		s.ckpt.frames.Add(uint64(st.Checkpointed))
	}
}

// CheckpointResult is what one PASSIVE checkpoint reported.
type CheckpointResult struct {
	Busy         bool // another checkpoint (or a RESTART) held the lock
	LogFrames    int  // frames in the WAL
	Checkpointed int  // frames now copied into the database
}

// checkpoint runs one PASSIVE checkpoint.
func (s *Store) checkpoint(ctx context.Context) (CheckpointResult, error) {
	var busy, log, done int
	if err := s.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil {
		return CheckpointResult{}, err
	}
	return CheckpointResult{Busy: busy != 0, LogFrames: log, Checkpointed: done}, nil
}

// CheckpointStats are the background checkpointer's counters.
type CheckpointStats struct {
	Runs   uint64 // checkpoints run
	Frames uint64 // WAL frames found copied after them (a frame counts again until the WAL restarts)
}

// CheckpointStats returns the background checkpointer's counters.
func (s *Store) CheckpointStats() CheckpointStats {
	return CheckpointStats{Runs: s.ckpt.runs.Load(), Frames: s.ckpt.frames.Load()}
}
