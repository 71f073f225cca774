package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/countersign/countersign/internal/store"
)

// A group commit inserts a batch of signatures and their events whose rows
// mostly agree on half their columns: one node, one tenant, one key make
// them (the benchmark's 64 clients, a batch request's items). Binding a
// parameter is the driver's most expensive step per value (it copies every
// string into C memory), so consecutive rows that agree on those columns
// (a run) are inserted with statements that carry the shared values once,
// as parameters of the SELECT list, and only the varying ones per row:
//
//	INSERT INTO signatures (...) SELECT column1, ?, column2, ... FROM (VALUES (?, ?, ...), ...)
//
// 8 instead of 18 values per signature row and 4 instead of 9 per event
// row. Rows keep their order (and so audit_index order) in the table.

// sigShared are the signature and event columns a run shares.
type sigShared struct {
	tenant, keyName                     string
	keyVersion                          int
	format, alg, algOID, digAlg, digOID string
	release, instance                   string
	evType, evActor, evTenant           string
	evRelease, evInstance               string
}

func sharedOf(w *store.SignatureWrite) sigShared {
	s, e := &w.Signature, &w.Event
	return sigShared{s.TenantID, s.KeyName, s.KeyVersion, s.Format, s.Algorithm, s.AlgorithmOID, s.DigestAlgorithm,
		s.DigestOID, s.Release, s.Instance, e.Type, e.Actor, e.TenantID, e.Release, e.Instance}
}

// Statement heads and tails (multiRow puts the VALUES list between them).
// The SELECT list's "?" come first in the text, so they are the first
// parameters, then the VALUES rows'.
const (
	insertSigRunHead = `INSERT INTO signatures (` + sigColumns + `) SELECT column1, ?, column2, column3, ?, ?, ?, ?, ?, ?, ?,
	column4, column5, column6, ?, ?, column7, column8 FROM (`
	sigRunCols      = 8
	insertEvRunHead = `INSERT INTO audit_events (idx, time, type, actor, tenant_id, release, instance, subject, entry) SELECT column1, column2, ?, ?, ?, ?, ?, column3, column4 FROM (`
	evRunCols       = 4
	runTail         = `)`
	maxRunRows      = 256 // 2058 parameters per signature statement
)

func (sh *sigShared) sigArgs(args []any) []any {
	return append(args, sh.tenant, sh.keyName, sh.keyVersion, sh.format, sh.alg, sh.algOID, sh.digAlg, sh.digOID, sh.release, sh.instance)
}

func (sh *sigShared) evArgs(args []any) []any {
	return append(args, sh.evType, sh.evActor, sh.evTenant, sh.evRelease, sh.evInstance)
}

// newRow is a signature to insert at an audit index.
type newRow struct {
	w   *store.SignatureWrite
	idx int64
}

// insertNewRows inserts rows (in audit index order) run by run.
func (s *Store) insertNewRows(ctx context.Context, tx *sql.Tx, rows []newRow) error {
	for len(rows) > 0 {
		sh := sharedOf(rows[0].w)
		n := 1
		for n < len(rows) && sharedOf(rows[n].w) == sh {
			n++
		}
		if err := s.insertRun(ctx, tx, &sh, rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertRun inserts a run of rows sharing sh, in chunks of rowChunks sizes.
func (s *Store) insertRun(ctx context.Context, tx *sql.Tx, sh *sigShared, run []newRow) error {
	for _, n := range rowChunks(len(run), maxRunRows) {
		chunk := run[:n]
		run = run[n:]
		args := sh.sigArgs(make([]any, 0, 10+n*sigRunCols))
		for _, r := range chunk {
			sg := &r.w.Signature
			args = append(args, sg.ID, sg.IdempotencyKey, nz(sg.RequestHash), nz(sg.DocumentDigest), sg.DocumentID,
				nz(sg.Signature), r.idx, micros(sg.SignedAt))
		}
		if _, err := s.txExec(ctx, tx, s.stmts.multiRow(insertSigRunHead, sigRunCols, n, runTail), args...); err != nil {
			return fmt.Errorf("sqlite: insert signatures: %w", err)
		}
		args = sh.evArgs(args[:0])
		for _, r := range chunk {
			ev := &r.w.Event
			if len(ev.Entry) == 0 {
				return fmt.Errorf("sqlite: audit event %q has no entry", ev.Type)
			}
			args = append(args, r.idx, micros(ev.Time), ev.Subject, ev.Entry)
		}
		if _, err := s.txExec(ctx, tx, s.stmts.multiRow(insertEvRunHead, evRunCols, n, runTail), args...); err != nil {
			return fmt.Errorf("sqlite: insert audit events: %w", err)
		}
	}
	return nil
}
