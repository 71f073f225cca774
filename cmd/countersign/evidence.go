package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/countersign/countersign/internal/evidence"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("evidence", "incident evidence bundle: build (signed, anchored in the log), verify (offline)", runEvidence)
}

const evidenceUsage = `<build|verify> [flags]

  build   --data DIR --report report.json --lead-key lead.pem --out bundle.tar [--manifest FILE] [--snapshot-dir DIR] [--timeline FILE]
  verify  --lead-pub lead.pub bundle.tar`

func runEvidence(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(env.stderr, "usage: countersign evidence %s\n", evidenceUsage)
		if len(args) == 0 {
			return usageError("evidence: missing subcommand")
		}
		return nil
	}
	switch args[0] {
	case "build":
		return runEvidenceBuild(ctx, env, args[1:])
	case "verify":
		return runEvidenceVerify(ctx, env, args[1:])
	}
	return usageError("evidence: unknown subcommand %q\nusage: countersign evidence %s", args[0], evidenceUsage)
}

func runEvidenceBuild(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "evidence build", "--report FILE --lead-key FILE --out FILE [flags]")
	data := fs.String("data", "./data", "data directory")
	reportFile := fs.String("report", "", "reconciliation report JSON (countersign reconcile --json) (required)")
	leadKey := fs.String("lead-key", "", "the incident lead's private key, PEM (ECDSA P-256 or Ed25519) (required)")
	out := fs.String("out", "", "bundle to write; refused if it exists (required)")
	manifest := fs.String("manifest", "", "snapshot manifest to include")
	snapDir := fs.String("snapshot-dir", "", "include the snapshot parts in this directory")
	timeline := fs.String("timeline", "", "incident timeline JSON to include")
	actor := fs.String("actor", "incident-lead", "actor of the anchoring audit event")
	noAnchor := fs.Bool("no-anchor", false, "do not record the statement's digest in the audit log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *reportFile == "" || *leadKey == "" || *out == "" {
		return usageError("evidence build: --report, --lead-key and --out are required")
	}
	rj, err := os.ReadFile(*reportFile)
	if err != nil {
		return err
	}
	var rep reconcile.Report
	if err := json.Unmarshal(rj, &rep); err != nil {
		return fmt.Errorf("evidence build: %s: %w", *reportFile, err)
	}
	lead, err := readLeadKey(*leadKey)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	inst, err := install.Open(ctx, *data, install.OpenOptions{Instance: "evidence", Logger: logger})
	if err != nil {
		return err
	}
	defer inst.Close()
	c := &evidence.Contents{Incident: rep.Incident, Report: &rep, LogVerifierKey: inst.Config.LogVerifierKey}
	if c.CAChainPEM, err = os.ReadFile(filepath.Join(inst.Dir, inst.Config.CACert)); err != nil {
		return err
	}
	for path, dst := range map[string]*[]byte{*manifest: &c.SnapshotManifest, *timeline: &c.Timeline} {
		if path != "" {
			if *dst, err = os.ReadFile(path); err != nil {
				return err
			}
		}
	}
	if *snapDir != "" {
		ents, err := os.ReadDir(*snapDir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				b, err := os.ReadFile(filepath.Join(*snapDir, e.Name()))
				if err != nil {
					return err
				}
				c.Snapshots = append(c.Snapshots, evidence.File{Name: e.Name(), Data: b})
			}
		}
	}
	if err := evidence.Gather(ctx, inst.Store, c); err != nil {
		return err
	}
	files, err := c.Files()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	res, err := evidence.Build(ctx, &buf, files, rep.Summary(), lead)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s: %d files, statement sha256 %s, signed by %s\n", *out, len(res.Files), res.StatementSHA256, res.KeyID)
	if *noAnchor {
		return nil
	}
	ev, err := evidence.AnchorEvent(rep.Incident, res, *actor, time.Now())
	if err != nil {
		return err
	}
	idx, err := inst.Store.AppendEvents(ctx, []store.AuditEvent{ev})
	if err != nil {
		return fmt.Errorf("evidence build: anchor the statement in the audit log: %w", err)
	}
	fmt.Fprintf(env.stdout, "anchored as audit event %d (%s); prove it with `countersign audit prove --index %d` once a checkpoint covers it\n",
		idx[0], evidence.EventStatement, idx[0])
	return nil
}

func runEvidenceVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "evidence verify", "--lead-pub FILE bundle.tar")
	leadPub := fs.String("lead-pub", "", "the incident lead's public key, PEM, obtained out of band (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *leadPub == "" || fs.NArg() != 1 {
		return usageError("evidence verify: give --lead-pub FILE and one bundle")
	}
	pb, err := os.ReadFile(*leadPub)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode(pb)
	if blk == nil {
		return fmt.Errorf("evidence verify: %s holds no PEM block", *leadPub)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return fmt.Errorf("evidence verify: %s: %w", *leadPub, err)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := evidence.Verify(ctx, f, pub)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	sort.SliceStable(v.Checks, func(i, j int) bool { return v.Checks[i].File < v.Checks[j].File })
	for _, c := range v.Checks {
		name := c.File
		if name == "" {
			name = "(archive)"
		}
		fmt.Fprintf(env.stdout, "ok  %-48s %s\n", name, c.What)
	}
	s := v.Summary
	fmt.Fprintf(env.stdout, "verified %d files; statement sha256 %s signed by %s\nincident %s: %d signatures (%v), log consistent=%v (%d -> %d), gaps %d, key violations %d, replayed %d, manual review %d\n",
		v.Files, v.StatementSHA256, v.KeyID, s.Incident, s.Signatures, s.Classes, s.LogConsistent, s.CheckpointBefore, s.CheckpointAfter,
		s.Gaps, s.KeyViolations, s.Replayed, s.ManualReview)
	return nil
}

// readLeadKey reads a PKCS#8 or SEC 1 private key.
func readLeadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("evidence: %s holds no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("evidence: %s: %T is not a signing key", path, k)
	}
	return s, nil
}
