package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"

	"github.com/countersign/countersign/internal/store"
)

// Deferred sync. With synchronous=FULL every commit fsyncs the WAL before
// it returns, so the group commit's writer, which every signature waits
// for, spends a third of its time in fsync (docs/benchmarks.md) while
// nothing else can commit. The store therefore gives the group commit its
// own connection running synchronous=NORMAL (a commit writes its WAL
// frames and returns) and a separate call that fsyncs the WAL:
// store.Committer commits batch n+1 while batch n's fsync runs, and
// answers a write only after an fsync that began after its commit
// returned (store.DeferredSyncer). What a 200 has survived is unchanged:
// the frames of its commit were on disk before the answer.
//
// A commit made this way is visible to readers before it is durable. What
// could show it to a client before its fsync: the group commit's own
// "already signed" answers (delivered after the next fsync, like every
// result), and SignatureByIdempotencyKey, which fsyncs the WAL before it
// answers with a signature. Async job states are written by ordinary
// (FULL) commits, whose fsync covers every earlier frame of the WAL.

// openSigConn pins the group commit's connection and sets it NORMAL.
func (s *Store) openSigConn(ctx context.Context) error {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: open the group commit's connection: %w", err)
	}
	if _, err := c.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		c.Close()
		return fmt.Errorf("sqlite: set the group commit's connection NORMAL: %w", err)
	}
	s.sigConn = c
	return nil
}

func (s *Store) closeSigConn() {
	if s.sigConn != nil {
		s.sigConn.Close()
	}
	s.walMu.Lock()
	if s.wal != nil {
		s.wal.Close()
		s.wal = nil
	}
	s.walMu.Unlock()
}

// CommitSignaturesNoSync is CommitSignatures without waiting for the WAL
// fsync; see store.DeferredSyncer. On a store opened NORMAL it is
// CommitSignatures (whose commits are not fsynced either).
func (s *Store) CommitSignaturesNoSync(ctx context.Context, ws []store.SignatureWrite) ([]store.WriteResult, error) {
	if s.sigConn == nil {
		return s.CommitSignatures(ctx, ws)
	}
	rs, err := s.commitSignatures(ctx, ws, s.sigConn.BeginTx)
	if errors.Is(err, sql.ErrConnDone) {
		// The connection is gone (nothing was begun on it): commit on the
		// pool, durably; the later SyncCommitted costs one more fsync.
		return s.CommitSignatures(ctx, ws)
	}
	return rs, err
}

// SyncCommitted makes every commit that returned before the call durable:
// it fsyncs the WAL file (every frame written so far, by any connection or
// process). On a store opened NORMAL it does nothing.
func (s *Store) SyncCommitted(ctx context.Context) error {
	if s.sigConn == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.walMu.Lock()
	defer s.walMu.Unlock()
	f, err := s.walFileLocked()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sqlite: fsync %s: %w", f.Name(), err)
	}
	return nil
}

// walFileLocked returns the open WAL file, reopened when the path now
// names another file. While this store is open its connections keep the
// WAL in place (SQLite deletes it only when the last connection closes),
// so a change means something else replaced it: fsyncing the new one is
// then the right thing, never the old one. A missing WAL is an error: a
// commit of ours wrote to it.
func (s *Store) walFileLocked() (*os.File, error) {
	path := s.path + "-wal"
	if s.wal != nil {
		open, err1 := s.wal.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(open, now) {
			return s.wal, nil
		}
		s.wal.Close()
		s.wal = nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open the WAL to fsync it: %w", err)
	}
	s.wal = f
	return f, nil
}
