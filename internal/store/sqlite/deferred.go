package sqlite

import (
	"bytes"
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
// result), and SignatureByIdempotencyKey, which makes sure the WAL is
// fsynced (SyncCommitted) before it answers with a signature. Async job
// states are written by ordinary (FULL) commits, whose fsync covers every
// earlier frame of the WAL.

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
	if s.shm != nil {
		s.shm.Close()
		s.shm = nil
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
//
// The fsync is skipped when no transaction has committed since this
// store's last fsync began: the WAL-index header (walIndexHeaderLocked) is
// the same as it was then, and so is the WAL file. Readers such as SignatureByIdempotencyKey call this once per
// lookup, and a loop over thousands of stored signatures with no commit in
// between (the drill's final check, reconciliation) no longer fsyncs for
// each.
func (s *Store) SyncCommitted(ctx context.Context) error {
	if s.sigConn == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.walMu.Lock()
	defer s.walMu.Unlock()
	// Read before the fsync: every transaction the header shows has written
	// its frames, so the fsync below makes them durable.
	hdr, hdrOK := s.walIndexHeaderLocked()
	f, reopened, err := s.walFileLocked()
	if err != nil {
		return err
	}
	if hdrOK && s.syncedHdrOK && !reopened && hdr == s.syncedHdr {
		return nil
	}
	if err := f.Sync(); err != nil {
		s.syncedHdrOK = false
		return fmt.Errorf("sqlite: fsync %s: %w", f.Name(), err)
	}
	s.walSyncs.Add(1)
	s.syncedHdr, s.syncedHdrOK = hdr, hdrOK
	return nil
}

// walIndexHeaderSize is the size of SQLite's WAL-index header
// (https://www.sqlite.org/walformat.html#the_wal_index_file_format): the
// -shm file starts with two copies of it. Every commit changes it: mxFrame
// (the last committed frame) grows, and a WAL that restarts from its first
// frame gets new salts.
const walIndexHeaderSize = 48

// walIndexHeaderLocked reads the WAL-index header from the -shm file, which
// every connection of every process maps, and returns it only when both
// copies agree (a writer updates the second copy, then the first: copies
// that differ are a header being written, treated as a change).
func (s *Store) walIndexHeaderLocked() ([walIndexHeaderSize]byte, bool) {
	var hdr [walIndexHeaderSize]byte
	f, _, err := openSame(&s.shm, s.path+"-shm")
	if err != nil {
		return hdr, false
	}
	var both [2 * walIndexHeaderSize]byte
	if _, err := f.ReadAt(both[:], 0); err != nil {
		return hdr, false
	}
	copy(hdr[:], both[:walIndexHeaderSize])
	if !bytes.Equal(both[:walIndexHeaderSize], both[walIndexHeaderSize:]) {
		return hdr, false
	}
	return hdr, true
}

// walFileLocked returns the open WAL file, reopened (and reopened true)
// when the path now names another file. While this store is open its
// connections keep the WAL in place (SQLite deletes it only when the last
// connection closes), so a change means something else replaced it:
// fsyncing the new one is then the right thing, never the old one. A
// missing WAL is an error: a commit of ours wrote to it.
func (s *Store) walFileLocked() (f *os.File, reopened bool, err error) {
	f, reopened, err = openSame(&s.wal, s.path+"-wal")
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: open the WAL to fsync it: %w", err)
	}
	return f, reopened, nil
}

// openSame returns *held if path still names the file it has open, and
// otherwise closes it and opens path into *held (reopened true). On error
// *held is nil.
func openSame(held **os.File, path string) (f *os.File, reopened bool, err error) {
	if *held != nil {
		open, err1 := (*held).Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(open, now) {
			return *held, false, nil
		}
		(*held).Close()
		*held = nil
	}
	if f, err = os.Open(path); err != nil {
		return nil, false, err
	}
	*held = f
	return f, true, nil
}
