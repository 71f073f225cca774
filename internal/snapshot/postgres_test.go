package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/postgres"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
)

// pgTestURL creates a fresh schema on the dev machine's server (or
// COUNTERSIGN_TEST_POSTGRES), drops it afterwards, and returns a store URL
// selecting it.
func pgTestURL(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("pg_dump"); err != nil {
		unavailable(t, "pg_dump", err)
	}
	return pgtest.SchemaURL(t, "cs_snap")
}

// TestPostgresSnapshotUnderWrites dumps the store's exported snapshot
// while a writer commits, and checks that the dump holds exactly the audit
// events visible in that snapshot, gap-free, each with its signature.
func TestPostgresSnapshotUnderWrites(t *testing.T) {
	ctx := context.Background()
	u := pgTestURL(t)
	st, err := postgres.Open(ctx, u, store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	batch := make([]store.SignatureWrite, 200)
	for i := range batch {
		batch[i] = sigWrite(t, i)
	}
	if _, err := st.CommitSignatures(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var (
		stop      atomic.Bool
		wg        sync.WaitGroup
		committed atomic.Int64
		werr      error
	)
	wg.Go(func() {
		for i := 200; !stop.Load(); i++ {
			if _, err := st.CommitSignatures(ctx, []store.SignatureWrite{sigWrite(t, i)}); err != nil {
				werr = err
				return
			}
			committed.Add(1)
		}
	})
	for committed.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	d := newDir(t)
	start := time.Now()
	m, _, err := Take(ctx, Config{Store: d, Parts: []Part{Postgres{Store: st, URL: u}}})
	took := time.Since(start)
	stop.Store(true)
	wg.Wait()
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, d, m.ObjectName()); err != nil {
		t.Fatal(err)
	}
	ref, _ := m.Part("store.pgdump")
	want := ref.Meta["audit_size"].(int64)
	t.Logf("pg_dump of %d bytes in %v, %d audit events in the snapshot, meta %v", ref.Size, took, want, ref.Meta)
	if schema, _ := ref.Meta["schema"].(string); schema == "" || !strings.Contains(u, "search_path="+schema) {
		t.Errorf("meta schema = %v", ref.Meta["schema"])
	}

	dump := filepath.Join(t.TempDir(), "store.pgdump")
	if err := os.WriteFile(dump, readObject(t, d, ref.Object), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("pg_restore", "--data-only", "-f", "-", dump).Output()
	if err != nil {
		t.Fatalf("pg_restore: %v", err)
	}
	events := copyRows(t, out, "audit_events")
	sigs := copyRows(t, out, "signatures")
	if int64(len(events)) != want || int64(len(sigs)) != want {
		t.Fatalf("dump has %d events and %d signatures, the exported snapshot saw %d", len(events), len(sigs), want)
	}
	seen := map[int64]bool{}
	for _, row := range events {
		idx, err := strconv.ParseInt(strings.SplitN(row, "\t", 2)[0], 10, 64)
		if err != nil || idx < 0 || idx >= want || seen[idx] {
			t.Fatalf("audit row %q out of the prefix [0,%d)", row, want)
		}
		seen[idx] = true
	}
}

// copyRows returns the data rows of table's COPY block in a plain dump.
func copyRows(t *testing.T, dump []byte, table string) []string {
	t.Helper()
	var rows []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(dump))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "COPY ") && strings.Contains(line, "."+table+" ("):
			in = true
		case in && line == `\.`:
			return rows
		case in:
			rows = append(rows, line)
		}
	}
	t.Fatalf("no COPY block for %s in the dump", table)
	return nil
}

func TestDumpTarget(t *testing.T) {
	for _, tc := range []struct {
		in, conn, pass, schema string
		err                    bool
	}{
		{in: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=cs1",
			conn: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", schema: "cs1"},
		{in: "postgres://u:s3cret@db/x?pool_max_conns=4&application_name=cs",
			conn: "postgres://u@db/x?application_name=cs", pass: "s3cret"},
		{in: "host=db user=u", err: true},
		{in: "postgres://db/x?search_path=a,b", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			conn, pass, schema, err := dumpTarget(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if err != nil {
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if conn != tc.conn || pass != tc.pass || schema != tc.schema {
				t.Errorf("got %q %q %q, want %q %q %q", conn, pass, schema, tc.conn, tc.pass, tc.schema)
			}
		})
	}
	if v := (Postgres{URL: "postgres://u:s3cret@db/x"}).LogValue().String(); strings.Contains(v, "s3cret") {
		t.Errorf("LogValue leaks the password: %s", v)
	}
}

func TestPostgresRefusesOlderPGDump(t *testing.T) {
	u := pgTestURL(t)
	st, err := postgres.Open(context.Background(), u, store.Options{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A pg_dump that reports major version 9 stands in for an old client.
	old := filepath.Join(t.TempDir(), "pg_dump")
	if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, _, err = Take(context.Background(), Config{Store: newDir(t), Parts: []Part{Postgres{Store: st, URL: u, PGDump: old}}})
	if !errors.Is(err, ErrPGDumpVersion) {
		t.Fatalf("Take = %v, want ErrPGDumpVersion", err)
	}
}
