package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite"

	"github.com/countersign/countersign/internal/api"
)

// The floor server is the least a durable signing server built on this
// stack (net/http over loopback TCP, crypto/ecdsa, modernc SQLite or
// PostgreSQL through pgx) can spend per signature. BenchmarkFloor drives it
// with the same load generator as `countersign bench sign` and counts its
// CPU, so the node's figures can be read against what the components
// themselves cost on the same machine in the same run.
//
// It is deliberately less than a signing service — it exists only in this
// test binary and is never built into countersign:
//   - one bearer token compared in constant time, no tenants or key store;
//   - the request body is searched for its fields, not parsed;
//   - a response with the node's fields but fixed values except the signature;
//   - durable modes write one signature row (the (tenant, idempotency key)
//     unique index is the only secondary index) and one audit event row per
//     signature in group commits of up to 1,024 rows, with no idempotency
//     lookup, no Merkle tree, no metrics and no checkpoint tuning.
//
// Modes: "http" (no signature: a fixed one is returned), "sign" (ECDSA
// P-256 over SHA-256 of the document, nothing stored), "sqlite" and
// "postgres" (sign, then commit durably before answering).
type floorServer struct {
	mode  string
	token []byte
	key   *ecdsa.PrivateKey
	queue chan *floorWrite
	sigs  atomic.Int64
}

type floorWrite struct {
	idem   string
	digest [32]byte
	sig    []byte
	entry  []byte
	done   chan error
}

// floorEnv names the environment variables that turn the test binary into
// a floor server (see TestMain).
const (
	floorEnvMode  = "COUNTERSIGN_FLOOR_MODE"
	floorEnvStore = "COUNTERSIGN_FLOOR_STORE" // SQLite file or PostgreSQL URL
	floorToken    = "floor-token"
	// floorCommitMax bounds a group commit, as the node's committer does.
	floorCommitMax = 1024
)

// runFloorServer serves on a loopback port until stdin closes; it prints
// "listening ADDR PUBLIC-KEY-PEM-BASE64" on stdout first.
func runFloorServer(mode, storeURL string) error {
	debug.SetGCPercent(400) // the node's default (--gc-percent)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	fs := &floorServer{mode: mode, token: []byte(floorToken), key: key}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var open func(context.Context, string) (func(context.Context, int64, []*floorWrite) error, func(), error)
	switch mode {
	case "http", "sign":
	case "sqlite":
		open = openFloorSQLite
	case "postgres":
		open = openFloorPostgres
	default:
		return fmt.Errorf("floor: unknown mode %q", mode)
	}
	if open != nil {
		commit, closeDB, err := open(ctx, storeURL)
		if err != nil {
			return err
		}
		defer closeDB()
		fs.queue = make(chan *floorWrite, 4*floorCommitMax)
		go fs.writer(ctx, commit)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sign", fs.handleSign)
	mux.HandleFunc("POST /v1/sign:batch", fs.handleBatch)
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, fs.sigs.Load())
	})
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	fmt.Printf("listening %s %s\n", ln.Addr(), base64.StdEncoding.EncodeToString(pub))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent holds our stdin open
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// field returns the string value of "name":"..." in b (no escapes: the
// load generator sends none) and what follows it.
func field(b []byte, name string) (val, rest []byte, ok bool) {
	i := bytes.Index(b, []byte(`"`+name+`":"`))
	if i < 0 {
		return nil, nil, false
	}
	b = b[i+len(name)+4:]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return nil, nil, false
	}
	return b[:j], b[j+1:], true
}

// sign makes one item's signature (or, in mode "http", a fixed one).
func (fs *floorServer) sign(idem string, docB64 []byte) (*floorWrite, error) {
	doc, err := base64.StdEncoding.AppendDecode(nil, docB64)
	if err != nil {
		return nil, err
	}
	w := &floorWrite{idem: idem, digest: sha256.Sum256(doc)}
	if fs.mode == "http" {
		w.sig = make([]byte, 71)
		return w, nil
	}
	w.sig, err = ecdsa.SignASN1(rand.Reader, fs.key, w.digest[:])
	if err != nil {
		return nil, err
	}
	if fs.queue != nil { // a durable mode
		w.entry = fmt.Appendf(nil, `{"v":1,"type":"signature.created","time":%q,"actor":"tenant:floor","tenant":"floor","subject":"signature:%s","details":{"algorithm":"ecdsa-p256","document_digest":"%x","key":"default","key_version":1}}`,
			time.Now().UTC().Format(time.RFC3339Nano), idem, w.digest)
		w.done = make(chan error, 1)
	}
	return w, nil
}

// appendSignature appends the node's 200 body for one signature.
func appendSignature(b []byte, w *floorWrite) []byte {
	b = append(b, `{"id":"sig_floor","format":"raw","signature":"`...)
	b = base64.StdEncoding.AppendEncode(b, w.sig)
	b = append(b, `","key":"default","key_version":1,"algorithm":"ecdsa-p256","algorithm_oid":"1.2.840.10045.4.3.2","digest_algorithm":"sha256","digest_oid":"2.16.840.1.101.3.4.2.1","document_digest":"`...)
	b = base64.StdEncoding.AppendEncode(b, w.digest[:])
	return append(b, `","release":"floor","instance":"floor","audit_index":0,"signed_at":"2026-01-01T00:00:00Z"}`...)
}

// body checks the token and reads the request body (at most limit bytes);
// it answers the request itself when it returns false.
func (fs *floorServer) body(rw http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), fs.token) != 1 {
		http.Error(rw, "unauthorized", http.StatusUnauthorized)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, limit))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

func (fs *floorServer) handleSign(rw http.ResponseWriter, r *http.Request) {
	body, ok := fs.body(rw, r, 1<<20)
	if !ok {
		return
	}
	doc, _, ok := field(body, "document")
	if !ok {
		http.Error(rw, "no document", http.StatusBadRequest)
		return
	}
	w, err := fs.sign(r.Header.Get("Idempotency-Key"), doc)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	if w.done != nil {
		fs.queue <- w
		if err := <-w.done; err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fs.sigs.Add(1)
	out := appendSignature(make([]byte, 0, 512), w)
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Content-Length", strconv.Itoa(len(out)))
	rw.Write(out)
}

func (fs *floorServer) handleBatch(rw http.ResponseWriter, r *http.Request) {
	body, ok := fs.body(rw, r, 8<<20)
	if !ok {
		return
	}
	type item struct{ idem, doc []byte }
	var items []item
	for rest := body; ; {
		idem, after, ok := field(rest, "idempotency_key")
		if !ok {
			break
		}
		doc, after, ok := field(after, "document")
		if !ok {
			http.Error(rw, "item without a document", http.StatusBadRequest)
			return
		}
		items = append(items, item{idem, doc})
		rest = after
	}
	ws := make([]*floorWrite, len(items))
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Go(func() { ws[i], errs[i] = fs.sign(string(it.idem), it.doc) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	for _, w := range ws {
		if w.done != nil {
			fs.queue <- w
		}
	}
	for _, w := range ws {
		if w.done != nil {
			if err := <-w.done; err != nil {
				http.Error(rw, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
	}
	fs.sigs.Add(int64(len(ws)))
	out := append(make([]byte, 0, 512*len(ws)), `{"results":[`...)
	for i, w := range ws {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendSignature(append(out, `{"status":200,"signature":`...), w)
		out = append(out, '}')
	}
	out = append(out, "]}"...)
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Content-Length", strconv.Itoa(len(out)))
	rw.Write(out)
}

// writer is the group commit: it takes every queued write (up to
// floorCommitMax), commits them in one transaction and answers them all.
func (fs *floorServer) writer(ctx context.Context, commit func(ctx context.Context, first int64, ws []*floorWrite) error) {
	var next int64
	batch := make([]*floorWrite, 0, floorCommitMax)
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-fs.queue:
			batch = append(batch[:0], w)
		}
	drain:
		for len(batch) < floorCommitMax {
			select {
			case w := <-fs.queue:
				batch = append(batch, w)
			default:
				break drain
			}
		}
		err := commit(ctx, next, batch)
		if err == nil {
			next += int64(len(batch))
		}
		for _, w := range batch {
			w.done <- err
		}
	}
}

const floorSQLiteSchema = `
CREATE TABLE signatures (idx INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
	document_digest BLOB NOT NULL, signature BLOB NOT NULL, UNIQUE (tenant_id, idempotency_key));
CREATE TABLE audit_events (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);`

func openFloorSQLite(ctx context.Context, path string) (func(context.Context, int64, []*floorWrite) error, func(), error) {
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, floorSQLiteSchema); err != nil {
		db.Close()
		return nil, nil, err
	}
	commit := func(ctx context.Context, first int64, ws []*floorWrite) error {
		var sq, eq strings.Builder
		sq.WriteString("INSERT INTO signatures (idx, tenant_id, idempotency_key, document_digest, signature) VALUES ")
		eq.WriteString("INSERT INTO audit_events (idx, entry) VALUES ")
		sa := make([]any, 0, 5*len(ws))
		ea := make([]any, 0, 2*len(ws))
		for i, w := range ws {
			if i > 0 {
				sq.WriteByte(',')
				eq.WriteByte(',')
			}
			sq.WriteString("(?,'floor',?,?,?)")
			eq.WriteString("(?,?)")
			sa = append(sa, first+int64(i), w.idem, w.digest[:], w.sig)
			ea = append(ea, first+int64(i), w.entry)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, sq.String(), sa...); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, eq.String(), ea...); err != nil {
			return err
		}
		return tx.Commit()
	}
	return commit, func() { db.Close() }, nil
}

func openFloorPostgres(ctx context.Context, url string) (func(context.Context, int64, []*floorWrite) error, func(), error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	if _, err := pool.Exec(ctx, `
CREATE TABLE signatures (idx bigint PRIMARY KEY, tenant_id text NOT NULL, idempotency_key text NOT NULL,
	document_digest bytea NOT NULL, signature bytea NOT NULL, UNIQUE (tenant_id, idempotency_key));
CREATE TABLE audit_events (idx bigint PRIMARY KEY, entry bytea NOT NULL)`); err != nil {
		pool.Close()
		return nil, nil, err
	}
	commit := func(ctx context.Context, first int64, ws []*floorWrite) error {
		idx := make([]int64, len(ws))
		idem := make([]string, len(ws))
		dig := make([][]byte, len(ws))
		sig := make([][]byte, len(ws))
		ent := make([][]byte, len(ws))
		for i, w := range ws {
			idx[i], idem[i], dig[i], sig[i], ent[i] = first+int64(i), w.idem, w.digest[:], w.sig, w.entry
		}
		// One round trip: BEGIN, both inserts and COMMIT in one pipeline.
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(`INSERT INTO signatures (idx, tenant_id, idempotency_key, document_digest, signature)
			SELECT i, 'floor', k, d, s FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[]) AS u(i, k, d, s)`, idx, idem, dig, sig)
		b.Queue(`INSERT INTO audit_events (idx, entry) SELECT * FROM unnest($1::bigint[], $2::bytea[])`, idx, ent)
		b.Queue("COMMIT")
		err := pool.SendBatch(ctx, b).Close()
		if err != nil {
			_, _ = pool.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return err
	}
	return commit, pool.Close, nil
}

// checkFloorSignature verifies a floor server's response body (single)
// against its public key: the smoke test's proof that "sign" and the
// durable modes really signed.
func checkFloorSignature(body []byte, pubPEM []byte) error {
	var s api.SignResponse
	if err := json.Unmarshal(body, &s); err != nil {
		return err
	}
	blk, _ := pem.Decode(pubPEM)
	if blk == nil {
		return errors.New("no public key PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return err
	}
	digest, err := base64.StdEncoding.DecodeString(s.DocumentDigest)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
		return errors.New("signature does not verify")
	}
	return nil
}
