// Package pgtest gives a test its own schema on the test PostgreSQL server,
// so tests of several packages can share one database without seeing each
// other's rows.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the dev machine's server; $COUNTERSIGN_TEST_POSTGRES
// overrides it.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// SchemaURL creates a fresh schema prefix_<random> on the test server,
// drops it when the test ends, and returns the server's URL with a
// search_path selecting it. Without a server the test fails under CI=true
// and is skipped otherwise.
func SchemaURL(t testing.TB, prefix string) string {
	t.Helper()
	return schemaURL(t, prefix, os.Getenv("CI") == "true")
}

// MustSchemaURL is SchemaURL for tests that never skip (a tier that asked
// for its servers): without a server the test fails.
func MustSchemaURL(t testing.TB, prefix string) string {
	t.Helper()
	return schemaURL(t, prefix, true)
}

func schemaURL(t testing.TB, prefix string, required bool) string {
	t.Helper()
	base := os.Getenv("COUNTERSIGN_TEST_POSTGRES")
	if base == "" {
		base = DefaultURL
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		if required {
			t.Fatalf("PostgreSQL test server unreachable (set COUNTERSIGN_TEST_POSTGRES): %v", err)
		}
		t.Skipf("PostgreSQL test server unreachable, skipping (set COUNTERSIGN_TEST_POSTGRES; CI=true makes this fail): %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	rand.Read(b)
	schema := prefix + "_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
