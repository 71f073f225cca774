package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
)

// stmtCache holds prepared statements by SQL text. A *sql.Stmt prepares
// itself lazily on each pooled connection it runs on and keeps that
// connection's statement, and Tx.StmtContext reuses it, so each query is
// parsed once per connection rather than once per call. The set of texts is
// bounded: fixed queries plus the multi-row inserts, whose row counts are
// powers of two (see rowChunks).
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
	// texts memoises multiRow's output so a hot path does not rebuild a
	// 256-row statement's text to find its statement.
	texts map[multiKey]string
}

type multiKey struct {
	head, tail string
	cols, rows int
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: map[string]*sql.Stmt{}, texts: map[multiKey]string{}}
}

// multiRow returns multiRow(head, cols, rows, tail), memoised.
func (c *stmtCache) multiRow(head string, cols, rows int, tail string) string {
	k := multiKey{head, tail, cols, rows}
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.texts[k]
	if !ok {
		q = multiRow(head, cols, rows, tail)
		c.texts[k] = q
	}
	return q
}

func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.Lock()
	st, ok := c.m[query]
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	// Prepare without c.mu: preparing waits for a pooled connection, and a
	// caller holding one (a writer in its transaction) must not wait on
	// callers that wait for connections.
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.m[query]; ok {
		st.Close()
		return prev, nil
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

// txStmt returns query's cached statement bound to tx.
func (s *Store) txStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	st, err := s.stmts.get(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st), nil
}

// txExec runs query in tx through the statement cache.
func (s *Store) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := s.txStmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// txQueryRow runs a one-row query in tx through the statement cache.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	st, err := s.txStmt(ctx, tx, query)
	if err != nil {
		// database/sql has no way to build a *sql.Row carrying an error;
		// fall back to an unprepared query, which reports the same error.
		return tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// queryRow runs a one-row query outside a transaction through the cache.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.stmts.get(ctx, query)
	if err != nil {
		return s.db.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// query runs a query outside a transaction through the cache.
func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.stmts.get(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// rowChunks splits n rows into statement sizes: as many max-row chunks as
// fit, then the binary decomposition of the rest (max must be a power of
// two). A batch of any size thus uses at most log2(max)+1 distinct
// statement texts per table, all cacheable.
func rowChunks(n, max int) []int {
	var out []int
	for ; n >= max; n -= max {
		out = append(out, max)
	}
	for size := max / 2; size >= 1; size /= 2 {
		if n >= size {
			out = append(out, size)
			n -= size
		}
	}
	return out
}

// multiRow returns head followed by rows groups of cols placeholders:
// "head VALUES (?, ?), (?, ?) tail". SQLite allows 32766 parameters per
// statement; callers keep rows*cols well below.
func multiRow(head string, cols, rows int, tail string) string {
	var b strings.Builder
	group := "(?" + strings.Repeat(", ?", cols-1) + ")"
	b.Grow(len(head) + len(tail) + rows*(len(group)+2) + 8)
	b.WriteString(head)
	b.WriteString(" VALUES ")
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(group)
	}
	if tail != "" {
		b.WriteString(" ")
		b.WriteString(tail)
	}
	return b.String()
}

// execRows inserts rows (each a slice of cols arguments) with multi-row
// statements of at most max rows each, through the statement cache.
func (s *Store) execRows(ctx context.Context, tx *sql.Tx, what, head string, cols, max int, tail string, rows [][]any) error {
	at := 0
	for _, n := range rowChunks(len(rows), max) {
		args := make([]any, 0, n*cols)
		for _, r := range rows[at : at+n] {
			args = append(args, r...)
		}
		if _, err := s.txExec(ctx, tx, s.stmts.multiRow(head, cols, n, tail), args...); err != nil {
			return fmt.Errorf("sqlite: insert %s: %w", what, err)
		}
		at += n
	}
	return nil
}
