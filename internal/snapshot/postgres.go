package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/countersign/countersign/internal/store/db"
	"github.com/countersign/countersign/internal/store/postgres"
)

// PostgresExporter is what the PostgreSQL part needs from the store
// (*postgres.Store).
type PostgresExporter interface {
	ExportSnapshot(ctx context.Context) (*postgres.Snapshot, error)
	SchemaVersion(ctx context.Context) (int, error)
}

// ErrPGDumpVersion is returned when the pg_dump client is older than the
// server: pg_dump must be at least the server's major version.
var ErrPGDumpVersion = errors.New("snapshot: pg_dump is older than the PostgreSQL server")

// Postgres snapshots the PostgreSQL store with pg_dump (custom format,
// restorable with pg_restore) of a snapshot exported by the store: the
// store opens a REPEATABLE READ READ ONLY transaction and exports its
// snapshot, pg_dump --snapshot=ID dumps exactly that state while writers
// carry on, and the exporting transaction is held until pg_dump exits.
//
// The pg_dump client's major version must be at least the server's (pg_dump
// refuses a newer server); Write checks this first and fails with
// ErrPGDumpVersion naming both versions.
type Postgres struct {
	Store PostgresExporter
	// URL is the store's postgres:// URL. Its search_path parameter (how
	// the store selects its schema) becomes pg_dump --schema; parameters
	// libpq does not know are dropped; the password is passed to pg_dump
	// in PGPASSWORD, never on its command line.
	URL string
	// PGDump is the pg_dump binary (default "pg_dump" from PATH).
	PGDump string
	// PartName defaults to "store.pgdump".
	PartName string
}

// LogValue keeps the URL's password out of logs.
func (p Postgres) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", db.Redact(p.URL)), slog.String("pg_dump", p.pgDump()))
}

// Name implements Part.
func (p Postgres) Name() string { return orDefault(p.PartName, "store.pgdump") }

// Kind implements Part.
func (p Postgres) Kind() string { return KindPostgres }

func (p Postgres) pgDump() string { return orDefault(p.PGDump, "pg_dump") }

// libpqParams are the URL query parameters passed on to pg_dump.
var libpqParams = map[string]bool{
	"sslmode": true, "sslrootcert": true, "sslcert": true, "sslkey": true, "sslpassword": true,
	"sslnegotiation": true, "connect_timeout": true, "application_name": true, "target_session_attrs": true,
	"options": true, "host": true, "port": true, "dbname": true, "user": true, "service": true,
	"krbsrvname": true, "gssencmode": true, "channel_binding": true,
}

// dumpTarget splits a store URL into pg_dump's connection URI (without
// password or pgx-only parameters), the password and the schema.
func dumpTarget(raw string) (conn, password, schema string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", "", "", fmt.Errorf("snapshot: postgres part needs a postgres:// URL, got %s", db.Redact(raw))
	}
	if u.User != nil {
		password, _ = u.User.Password()
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	schema = q.Get("search_path")
	for k := range q {
		if !libpqParams[k] {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	if strings.Contains(schema, ",") {
		return "", "", "", fmt.Errorf("snapshot: postgres search_path %q names several schemas; pg_dump needs one", schema)
	}
	return u.String(), password, strings.TrimSpace(schema), nil
}

var pgVersionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// pgDumpVersion returns pg_dump's version line and major version.
func pgDumpVersion(ctx context.Context, bin string) (string, int, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: run %s --version: %w", bin, err)
	}
	line := strings.TrimSpace(string(out))
	m := pgVersionRE.FindStringSubmatch(line)
	if m == nil {
		return line, 0, fmt.Errorf("snapshot: cannot parse pg_dump version %q", line)
	}
	major, _ := strconv.Atoi(m[1])
	return line, major, nil
}

func serverVersion(ctx context.Context, storeURL string) (string, int, error) {
	c, err := pgx.Connect(ctx, storeURL)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: connect to read server version: %w", err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	var v string
	var num int
	if err := c.QueryRow(ctx, "SELECT current_setting('server_version'), current_setting('server_version_num')::int").Scan(&v, &num); err != nil {
		return "", 0, fmt.Errorf("snapshot: read server version: %w", err)
	}
	return v, num / 10000, nil
}

// Write implements Part.
func (p Postgres) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	conn, password, schema, err := dumpTarget(p.URL)
	if err != nil {
		return nil, err
	}
	clientLine, clientMajor, err := pgDumpVersion(ctx, p.pgDump())
	if err != nil {
		return nil, err
	}
	serverLine, serverMajor, err := serverVersion(ctx, p.URL)
	if err != nil {
		return nil, err
	}
	if clientMajor < serverMajor {
		return nil, fmt.Errorf("%w: %s (%d) against server %s (%d); install pg_dump %d or newer",
			ErrPGDumpVersion, clientLine, clientMajor, serverLine, serverMajor, serverMajor)
	}
	schemaVersion, err := p.Store.SchemaVersion(ctx)
	if err != nil {
		return nil, err
	}
	sn, err := p.Store.ExportSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	// Held until pg_dump has exited: the ID is valid only while it is.
	defer sn.Release(context.WithoutCancel(ctx))
	args := []string{"--format=custom", "--no-password", "--snapshot=" + sn.ID}
	if schema != "" {
		args = append(args, "--schema="+schema)
	}
	args = append(args, "--dbname="+conn)
	cmd := exec.CommandContext(ctx, p.pgDump(), args...)
	cmd.Env = os.Environ()
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 8 << 10}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("snapshot: pg_dump --snapshot=%s: %w: %s", sn.ID, err, strings.TrimSpace(stderr.String()))
	}
	meta := map[string]any{
		"method":            "pg_dump --snapshot",
		"format":            "custom",
		"exported_snapshot": sn.ID,
		"audit_size":        sn.AuditSize,
		"schema_version":    schemaVersion,
		"pg_dump_version":   clientLine,
		"server_version":    serverLine,
	}
	if schema != "" {
		meta["schema"] = schema
	}
	return meta, nil
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
