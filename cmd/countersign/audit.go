package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/sqlite"
)

func init() {
	register("audit", "verifiable audit log: prove, verify-proof, verify, export, tail, show", runAudit)
}

const auditUsage = `<subcommand> [flags]

subcommands:
  prove         export a C2SP tlog-proof for a signature or an event
  verify-proof  verify a tlog-proof file offline
  verify        verify the whole log (tiles, entries, checkpoint) from a URL or directory
  export        write checkpoint, tiles and entry bundles as static files
  tail          follow new entries of a running node
  show          print one entry`

func runAudit(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(env.stderr, "usage: countersign audit %s\n", auditUsage)
		if len(args) == 0 {
			return usageError("audit: missing subcommand")
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "prove":
		return runAuditProve(ctx, env, rest)
	case "verify-proof":
		return runAuditVerifyProof(ctx, env, rest)
	case "verify":
		return runAuditVerify(ctx, env, rest)
	case "export":
		return runAuditExport(ctx, env, rest)
	case "tail":
		return runAuditTail(ctx, env, rest)
	case "show":
		return runAuditShow(ctx, env, rest)
	}
	return usageError("audit: unknown subcommand %q\nusage: countersign audit %s", sub, auditUsage)
}

// auditOpenData opens the store of a data dir read-only in intent (no
// migration; the schema range is checked): the store its configuration
// names, SQLite or PostgreSQL, or the SQLite file --db names.
func auditOpenData(ctx context.Context, dataDir, dbPath string) (store.Store, error) {
	if dbPath == "" {
		if dataDir == "" {
			return nil, usageError("give --data DIR (or --db FILE)")
		}
		st, err := install.OpenStore(ctx, dataDir, install.OpenOptions{})
		if err != nil {
			return nil, fmt.Errorf("open audit store: %w", err)
		}
		return st, nil
	}
	if _, err := os.Stat(dbPath); err != nil {
		return nil, fmt.Errorf("open audit store: %w", err)
	}
	return sqlite.Open(ctx, dbPath, store.Options{})
}

// auditVKey accepts a verifier key or a file holding one.
func auditVKey(v string) (string, error) {
	if v == "" {
		return "", usageError("give --vkey (the log's note verifier key, or a file holding it)")
	}
	if _, err := os.Stat(v); err != nil {
		return v, nil // not a file: the key itself
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return "", fmt.Errorf("read --vkey: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func runAuditProve(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit prove", "--data DIR (--signature ID [--tenant T] | --index N) --out FILE")
	data := fs.String("data", "", "data directory")
	db := fs.String("db", "", "a SQLite database file to read instead of the store DIR is configured with")
	sigID := fs.String("signature", "", "signature ID")
	tenant := fs.String("tenant", "", "tenant of the signature (faster lookup)")
	index := fs.Int64("index", -1, "audit event index, instead of --signature")
	out := fs.String("out", "", "output .tlog-proof file (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*sigID == "") == (*index < 0) {
		return usageError("give exactly one of --signature or --index")
	}
	st, err := auditOpenData(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	idx := *index
	if *sigID != "" {
		if idx, err = auditSignatureIndex(ctx, st, *tenant, *sigID); err != nil {
			return err
		}
	}
	p, err := auditlog.ProveIndex(ctx, st, idx)
	if err != nil {
		return err
	}
	if err := writeOutput(env, *out, p.Marshal()); err != nil {
		return err
	}
	if *out != "" && *out != "-" {
		fmt.Fprintf(env.stderr, "wrote %s: event %d in checkpoint\n", *out, idx)
	}
	return nil
}

// auditSignatureIndex finds a signature's audit index, by tenant when given
// and otherwise by scanning signatures in audit order.
func auditSignatureIndex(ctx context.Context, st store.Store, tenant, id string) (int64, error) {
	if tenant != "" {
		s, err := st.Signature(ctx, tenant, id)
		if err != nil {
			return 0, fmt.Errorf("signature %s of tenant %s: %w", id, tenant, err)
		}
		return s.AuditIndex, nil
	}
	size, err := st.AuditSize(ctx)
	if err != nil {
		return 0, err
	}
	const page = 1000
	for from := int64(0); from < size; {
		sigs, err := st.Signatures(ctx, from, size, page)
		if err != nil {
			return 0, err
		}
		for _, s := range sigs {
			if s.ID == id {
				return s.AuditIndex, nil
			}
		}
		if len(sigs) < page {
			break
		}
		from = sigs[len(sigs)-1].AuditIndex + 1
	}
	return 0, fmt.Errorf("signature %s: %w", id, store.ErrNotFound)
}

func runAuditVerifyProof(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit verify-proof", "--proof FILE --vkey KEY [--entry FILE]")
	proofFile := fs.String("proof", "", ".tlog-proof file")
	vkey := fs.String("vkey", "", "log verifier key, or a file holding it")
	entryFile := fs.String("entry", "", "entry data to check (default: the proof's extra data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *proofFile == "" {
		return usageError("give --proof FILE")
	}
	key, err := auditVKey(*vkey)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(*proofFile)
	if err != nil {
		return err
	}
	p, err := auditlog.ParseProof(raw)
	if err != nil {
		return err
	}
	var leaf []byte
	if *entryFile != "" {
		if leaf, err = os.ReadFile(*entryFile); err != nil {
			return err
		}
	}
	cp, entry, err := auditlog.VerifyProof(p, key, leaf)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "OK: entry %d is in %s at size %d (root %s)\n%s\n", p.Index, cp.Origin, cp.Size, auditB64(cp.Hash), entry)
	return nil
}

func runAuditVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit verify", "(--url URL | --dir DIR) --vkey KEY [--since CHECKPOINT_FILE]")
	u := fs.String("url", "", "node URL or log prefix (http://host:port or .../v1/audit/)")
	dir := fs.String("dir", "", "directory written by 'countersign audit export'")
	vkey := fs.String("vkey", "", "log verifier key, or a file holding it")
	since := fs.String("since", "", "older signed checkpoint file to prove consistency from")
	quiet := fs.Bool("q", false, "no progress output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*u == "") == (*dir == "") {
		return usageError("give exactly one of --url or --dir")
	}
	key, err := auditVKey(*vkey)
	if err != nil {
		return err
	}
	src, err := auditSource(*u, *dir)
	if err != nil {
		return err
	}
	var opts auditlog.VerifyOptions
	if *since != "" {
		if opts.Since, err = os.ReadFile(*since); err != nil {
			return err
		}
	}
	if !*quiet {
		last := time.Now()
		opts.Progress = func(done, total int64) {
			if time.Since(last) > time.Second {
				last = time.Now()
				fmt.Fprintf(env.stderr, "verified %d/%d entries\n", done, total)
			}
		}
	}
	start := time.Now()
	res, err := auditlog.Verify(ctx, src, key, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "OK: %s: %d entries, root %s, recomputed from every entry in %s\n",
		res.Checkpoint.Origin, res.Checkpoint.Size, auditB64(res.Checkpoint.Hash), time.Since(start).Round(time.Millisecond))
	if res.Since != nil {
		fmt.Fprintf(env.stdout, "OK: consistent with the checkpoint of size %d (root %s)\n", res.Since.Size, auditB64(res.Since.Hash))
	}
	return nil
}

func auditSource(u, dir string) (auditlog.TileSource, error) {
	if dir != "" {
		return auditlog.DirSource(dir), nil
	}
	return auditlog.NewHTTPSource(u, &http.Client{Timeout: 30 * time.Second})
}

func runAuditExport(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit export", "--data DIR --out DIR2")
	data := fs.String("data", "", "data directory")
	db := fs.String("db", "", "a SQLite database file to read instead of the store DIR is configured with")
	out := fs.String("out", "", "output directory (tlog-tiles layout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return usageError("give --out DIR2")
	}
	st, err := auditOpenData(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	cp, err := auditlog.Export(ctx, auditlog.StoreSource{R: st}, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "exported %s at size %d (root %s) to %s\n", cp.Origin, cp.Size, auditB64(cp.Hash), *out)
	return nil
}

func runAuditShow(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit show", "--data DIR --index N")
	data := fs.String("data", "", "data directory")
	db := fs.String("db", "", "a SQLite database file to read instead of the store DIR is configured with")
	index := fs.Int64("index", -1, "event index")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *index < 0 {
		return usageError("give --index N")
	}
	st, err := auditOpenData(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	evs, err := st.AuditEvents(ctx, *index, 1)
	if err != nil {
		return err
	}
	if len(evs) != 1 || evs[0].Index != *index {
		return fmt.Errorf("audit event %d: %w", *index, store.ErrNotFound)
	}
	size, err := st.TreeSize(ctx)
	if err != nil {
		return err
	}
	state := "integrated into the tree"
	if *index >= size {
		state = "committed, not yet integrated"
	}
	h := tlog.RecordHash(evs[0].Entry)
	fmt.Fprintf(env.stdout, "index %d (%s)\nleaf hash %s\n", *index, state, auditB64(h))
	return auditPrintEntry(env, evs[0].Entry)
}

func auditPrintEntry(env *cliEnv, entry []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, entry, "", "  "); err != nil {
		_, err := fmt.Fprintf(env.stdout, "%q\n", entry)
		return err
	}
	buf.WriteByte('\n')
	_, err := env.stdout.Write(buf.Bytes())
	return err
}

func runAuditTail(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "audit tail", "--url URL [--vkey KEY] [--from N] [--interval D]")
	u := fs.String("url", "", "node URL or log prefix")
	vkey := fs.String("vkey", "", "log verifier key (checks every checkpoint and its consistency)")
	from := fs.Int64("from", -1, "first index to print (default: the last 10 entries)")
	interval := fs.Duration("interval", time.Second, "poll interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *u == "" {
		return usageError("give --url URL")
	}
	src, err := auditlog.NewHTTPSource(*u, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	key := ""
	if *vkey != "" {
		if key, err = auditVKey(*vkey); err != nil {
			return err
		}
	}
	t := &auditlog.Tailer{Src: src, VerifierKey: key, Next: *from}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		err := t.Poll(ctx, func(index int64, entry []byte) error {
			_, err := fmt.Fprintf(env.stdout, "%d %s\n", index, entry)
			return err
		})
		if err != nil {
			if errors.Is(err, auditlog.ErrVerify) || ctx.Err() != nil {
				return err
			}
			fmt.Fprintf(env.stderr, "audit tail: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func auditB64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }
