package node_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/postgres"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
)

// TestCrashUnderLoad is the crash-safety proof: it SIGKILLs the node
// process while 16 clients sign, restarts it, lets the clients retry every
// unanswered idempotency key, and then checks the store: every
// 200-acknowledged signature is there with its exact bytes and its audit
// event, no idempotency key has two signatures, audit indexes have no gap,
// and the exported log verifies.
//
// It runs on SQLite (the fsync pipeline) and on PostgreSQL (BEGIN and COMMIT
// pipelined with the commit's statements: a kill mid-pipeline leaves an
// open transaction that the server must roll back).
func TestCrashUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the countersign binary; skipped with -short")
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			storeURL := ""
			if backend == "postgres" {
				storeURL = pgtest.SchemaURL(t, "cs_crash") // skips, or fails under CI=true, without PostgreSQL
			}
			crashUnderLoad(t, storeURL)
		})
	}
}

func crashUnderLoad(t *testing.T, storeURL string) {
	bin := buildCountersign(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := install.Init(ctx, dir, install.Options{Dev: true, Store: storeURL, ScryptN: testScryptN, Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "dev-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	addr := freeAddr(t)
	base := "http://" + addr

	n1 := startNode(t, bin, dir, addr, "crash-1")
	waitReady(t, base, n1)

	const workers = 16
	type ack struct {
		idem       string
		id         string
		artifact   []byte
		auditIndex int64
	}
	var (
		mu       sync.Mutex
		acks     []ack
		stop     atomic.Bool
		issued   atomic.Int64
		retried  atomic.Int64
		deadline = time.Now().Add(25 * time.Second)
	)
	hc := &http.Client{Timeout: 3 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				idem := fmt.Sprintf("crash-w%02d-%05d", w, n)
				body, _ := json.Marshal(api.SignRequest{Key: "default", Format: api.FormatCMS, Document: []byte(idem + " document")})
				issued.Add(1)
				// Retry the same key until it is answered: this is what the
				// client SDK does across a crash.
				for attempt := 0; ; attempt++ {
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("%s never answered", idem)
						return
					}
					if attempt > 0 {
						retried.Add(1)
						time.Sleep(20 * time.Millisecond)
					}
					resp, st, err := postSign(hc, base, token, idem, body)
					if err != nil || st == http.StatusServiceUnavailable {
						continue
					}
					if st != http.StatusOK {
						errs <- fmt.Errorf("%s: status %d: %s", idem, st, resp)
						return
					}
					var sr api.SignResponse
					if err := json.Unmarshal(resp, &sr); err != nil {
						errs <- fmt.Errorf("%s: %v", idem, err)
						return
					}
					art, err := node.DecodeArtifact(sr.Format, sr.Signature)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					acks = append(acks, ack{idem: idem, id: sr.ID, artifact: art, auditIndex: sr.AuditIndex})
					mu.Unlock()
					break
				}
			}
		}()
	}

	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	beforeKill := len(acks)
	mu.Unlock()
	if err := n1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n1.Wait()
	killedAt := time.Now()
	n2 := startNode(t, bin, dir, addr, "crash-2")
	waitReady(t, base, n2)
	restartTook := time.Since(killedAt)
	time.Sleep(700 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A graceful stop signs the final checkpoint.
	if err := n2.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := n2.Wait(); err != nil {
		t.Errorf("node after SIGTERM: %v", err)
	}
	t.Logf("%d signatures acknowledged (%d before SIGKILL), %d keys issued, %d retries, restart to ready %v",
		len(acks), beforeKill, issued.Load(), retried.Load(), restartTook.Round(time.Millisecond))
	if beforeKill == 0 || len(acks) <= beforeKill {
		t.Fatalf("load did not run on both sides of the crash: %d acks before, %d total", beforeKill, len(acks))
	}

	inst, err := install.Open(ctx, dir, install.OpenOptions{ScryptN: testScryptN, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	for _, a := range acks {
		sig, err := inst.Store.SignatureByIdempotencyKey(ctx, "dev", a.idem)
		if err != nil {
			t.Errorf("acknowledged %s (%s) is not in the store: %v", a.idem, a.id, err)
			continue
		}
		if sig.ID != a.id || !bytes.Equal(sig.Signature, a.artifact) || sig.AuditIndex != a.auditIndex {
			t.Errorf("%s: stored %s@%d differs from acknowledged %s@%d (bytes equal: %v)",
				a.idem, sig.ID, sig.AuditIndex, a.id, a.auditIndex, bytes.Equal(sig.Signature, a.artifact))
			continue
		}
		evs, err := inst.Store.AuditEvents(ctx, a.auditIndex, 1)
		if err != nil || len(evs) != 1 {
			t.Errorf("%s: audit event %d: %v", a.idem, a.auditIndex, err)
			continue
		}
		if evs[0].Type != "signature.created" || evs[0].Subject != "signature:"+a.id || !bytes.Contains(evs[0].Entry, []byte(`"signature:`+a.id+`"`)) {
			t.Errorf("%s: audit event %d is %s %s, want signature.created for %s", a.idem, a.auditIndex, evs[0].Type, evs[0].Subject, a.id)
		}
	}

	db, distinctKeysSQL, uniqueIndexesSQL := crashDB(t, inst.Store)
	var dups, total, distinct int64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM signatures GROUP BY tenant_id, idempotency_key HAVING COUNT(*) > 1) AS d`).Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, distinctKeysSQL).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if dups != 0 || total != distinct {
		t.Errorf("idempotency keys with two signatures: %d (rows %d, distinct keys %d)", dups, total, distinct)
	}
	if total != int64(len(acks)) {
		t.Errorf("store holds %d signatures, clients were answered %d: a signature exists that no client got", total, len(acks))
	}
	var uniqueIdx int64
	if err := db.QueryRowContext(ctx, uniqueIndexesSQL).Scan(&uniqueIdx); err != nil {
		t.Fatal(err)
	}
	if uniqueIdx < 2 {
		t.Errorf("signatures has %d unique indexes, want (tenant_id, idempotency_key) and audit_index", uniqueIdx)
	}
	var count, minIdx, maxIdx int64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(idx), MAX(idx) FROM audit_events`).Scan(&count, &minIdx, &maxIdx); err != nil {
		t.Fatal(err)
	}
	if minIdx != 0 || maxIdx != count-1 {
		t.Errorf("audit indexes have gaps: %d events, indexes %d..%d", count, minIdx, maxIdx)
	}
	inst.Close()

	// The exported log verifies with the CLI, as an auditor would run it.
	out := filepath.Join(t.TempDir(), "log")
	runCLI(t, bin, "audit", "export", "--data", dir, "--out", out)
	got := runCLI(t, bin, "audit", "verify", "--dir", out, "--vkey", filepath.Join(dir, "log.vkey"), "-q")
	t.Logf("audit verify: %s", strings.TrimSpace(got))
}

// crashDB returns a database/sql handle on the store, and the store's
// dialect of two checks: the signatures and distinct (tenant, key) pairs,
// and the number of unique indexes on signatures.
func crashDB(t *testing.T, st store.Store) (db *sql.DB, distinctKeysSQL, uniqueIndexesSQL string) {
	t.Helper()
	if pg, ok := st.(*postgres.Store); ok {
		db := stdlib.OpenDBFromPool(pg.Pool())
		t.Cleanup(func() { db.Close() })
		return db, `SELECT COUNT(*), COUNT(DISTINCT (tenant_id, idempotency_key)) FROM signatures`,
			`SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'signatures' AND indexdef LIKE 'CREATE UNIQUE INDEX%'`
	}
	return sqlDB(t, st), `SELECT COUNT(*), COUNT(DISTINCT tenant_id || char(0) || idempotency_key) FROM signatures`,
		`SELECT COUNT(*) FROM pragma_index_list('signatures') WHERE "unique" = 1`
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildCountersign builds the binary once per test process.
func buildCountersign(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "countersign-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "countersign"), "github.com/countersign/countersign/cmd/countersign").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "countersign")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNode runs `countersign node` as a child process.
func startNode(t *testing.T, bin, dir, addr, instance string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "node", "--data", dir, "--listen", addr, "--release", "crash-r1", "--instance", instance, "--log-level", "warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("node %s output:\n%s", instance, logs.String())
		}
	})
	return cmd
}

// waitReady polls /readyz until the node answers 200.
func waitReady(t *testing.T, base string, cmd *exec.Cmd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("node %v not ready within 10s", cmd.Args)
}

func postSign(hc *http.Client, base, token, idem string, body []byte) ([]byte, int, error) {
	req, err := http.NewRequest("POST", base+"/v1/sign", bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", idem)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), resp.StatusCode, nil
}

func runCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("countersign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
