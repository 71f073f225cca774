// Package db opens a store by URL, choosing the backend from the scheme:
// "sqlite:/path/file.db" or a plain path selects SQLite, "postgres://" or
// "postgresql://" selects PostgreSQL.
//
// A SQLite URL may end in "?synchronous=NORMAL" (or FULL, the default):
// NORMAL skips the fsync of every commit, so a committed signature survives
// a crash of the process but not a power loss. It is never the default; a
// node logs the mode it runs in and exports it on /metrics.
//
// Invariant: a URL never reaches a log or an error with its password;
// Redact is how callers print one.
package db

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/postgres"
	"github.com/countersign/countersign/internal/store/sqlite"
)

// Open opens the store at rawURL with opts (see store.Options).
func Open(ctx context.Context, rawURL string, opts store.Options) (store.Store, error) {
	kind, target, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch kind {
	case KindPostgres:
		s, err := postgres.Open(ctx, target, opts)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", Redact(rawURL), err)
		}
		return s, nil
	default:
		path, err := sqliteOptions(target, &opts)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", rawURL, err)
		}
		s, err := sqlite.Open(ctx, path, opts)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", rawURL, err)
		}
		return s, nil
	}
}

// sqliteOptions splits a SQLite target into the file path and its options
// query, applying the options to opts. The only option is synchronous
// (FULL or NORMAL), which overrides opts.Synchronous.
func sqliteOptions(target string, opts *store.Options) (string, error) {
	path, query, ok := strings.Cut(target, "?")
	if !ok {
		return path, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("store: sqlite options %q: %w", query, err)
	}
	for k, vs := range q {
		if k != "synchronous" || len(vs) != 1 {
			return "", fmt.Errorf("store: sqlite option %q: the only option is synchronous=FULL|NORMAL, once", k)
		}
		switch v := strings.ToUpper(vs[0]); v {
		case store.SyncFull, store.SyncNormal:
			opts.Synchronous = v
		default:
			return "", fmt.Errorf("store: sqlite synchronous=%q: want FULL or NORMAL", vs[0])
		}
	}
	return path, nil
}

// Backend kinds returned by Parse.
const (
	KindSQLite   = "sqlite"
	KindPostgres = "postgres"
)

// Parse returns the backend kind of rawURL and what its Open takes: the
// file path for SQLite (with its options query, if any), the URL itself for
// PostgreSQL.
func Parse(rawURL string) (kind, target string, err error) {
	switch {
	case rawURL == "":
		return "", "", fmt.Errorf("store: empty store URL (want sqlite:/path/file.db or postgres://...)")
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return KindPostgres, rawURL, nil
	case strings.HasPrefix(rawURL, "sqlite://"):
		return "", "", fmt.Errorf("store: %q: write sqlite:/absolute/path or sqlite:relative/path, not sqlite://", rawURL)
	case strings.HasPrefix(rawURL, "sqlite:"):
		p := strings.TrimPrefix(rawURL, "sqlite:")
		if p == "" {
			return "", "", fmt.Errorf("store: %q has no file path", rawURL)
		}
		return KindSQLite, p, nil
	case strings.Contains(rawURL, "://"):
		return "", "", fmt.Errorf("store: unsupported store URL scheme in %q (want sqlite: or postgres://)", Redact(rawURL))
	default:
		return KindSQLite, rawURL, nil
	}
}

// Redact returns rawURL with any password replaced by "xxxxx", for logs and
// messages. It serves every URL that may carry a credential (stores,
// queues, object stores); a URL that does not parse and holds an "@" is
// replaced whole.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		if err != nil && strings.Contains(rawURL, "@") {
			return "(unparsable URL)"
		}
		return rawURL
	}
	return u.Redacted()
}

// URL is a store URL that logs redacted (slog.LogValuer and fmt.Stringer).
type URL string

func (u URL) String() string { return Redact(string(u)) }

// LogValue implements slog.LogValuer.
func (u URL) LogValue() slog.Value { return slog.StringValue(Redact(string(u))) }
