package evidence

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/reconcile"
	"github.com/countersign/countersign/internal/reconcile/reconciletest"
)

type built struct {
	world *reconciletest.World
	files []File
	rep   *reconcile.Report
	lead  *ecdsa.PrivateKey
	tar   []byte
	res   Result
}

func build(t *testing.T) *built {
	t.Helper()
	// Parts of odd sizes: Verify streams them and checks their padding.
	w, rep, files := bundleFiles(t, []File{{Name: "store.db", Data: bytes.Repeat([]byte("store page "), 3001)}, {Name: "queue.tar", Data: []byte("queue\n")}})
	lead, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	res, err := Build(context.Background(), &buf, files, rep.Summary(), lead)
	if err != nil {
		t.Fatal(err)
	}
	return &built{world: w, files: files, rep: rep, lead: lead, tar: buf.Bytes(), res: res}
}

// bundleFiles seeds a window, reconciles it and lays out a bundle's files
// with parts as the snapshot parts.
func bundleFiles(t testing.TB, parts []File) (*reconciletest.World, *reconcile.Report, []File) {
	t.Helper()
	ctx := context.Background()
	w := reconciletest.Seed(t, reconciletest.DefaultCounts())
	before, err := reconcile.CheckpointBefore(w.Inst.HistoryPath(), w.Deploy)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := reconcile.Run(ctx, reconcile.Config{Store: w.Inst.Store, VerifierKey: w.Inst.Config.LogVerifierKey, Before: before,
		Window: w.Window, Incident: "inc-1", Now: w.Now})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(w.Dir, w.Inst.Config.CACert))
	if err != nil {
		t.Fatal(err)
	}
	c := &Contents{Incident: "inc-1", Report: rep, SnapshotManifest: []byte(`{"format":"countersign-snapshot/v1"}` + "\n"),
		Timeline: []byte(`[{"t":"2026-11-26T10:00:00Z","what":"deploy v2-bad"}]` + "\n"), LogVerifierKey: w.Inst.Config.LogVerifierKey, CAChainPEM: ca, Snapshots: parts}
	if err := Gather(ctx, w.Inst.Store, c); err != nil {
		t.Fatal(err)
	}
	files, err := c.Files()
	if err != nil {
		t.Fatal(err)
	}
	return w, rep, files
}

func TestBuildVerify(t *testing.T) {
	b := build(t)
	v, err := Verify(context.Background(), bytes.NewReader(b.tar), b.lead.Public())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if v.StatementSHA256 != b.res.StatementSHA256 || v.Summary.Signatures != 17 || v.Summary.Classes["invalid"] != 5 {
		t.Errorf("verified %+v", v)
	}
	var proofs, artifacts int
	for _, c := range v.Checks {
		switch {
		case strings.HasPrefix(c.File, dirProofs):
			proofs++
		case strings.HasPrefix(c.File, dirArtifacts):
			artifacts++
		}
	}
	if proofs != 9 || artifacts != 9 {
		t.Errorf("verified %d proofs and %d artifacts, want 9 each (one per remediated signature)", proofs, artifacts)
	}
	again, err := Build(context.Background(), &bytes.Buffer{}, b.files, b.rep.Summary(), b.lead)
	if err != nil || len(again.Files) != len(b.res.Files) {
		t.Fatalf("rebuild: %v", err)
	}
	ev, err := AnchorEvent("inc-1", b.res, "incident-lead", b.world.Now())
	if err != nil || ev.Type != EventStatement || !bytes.Contains(ev.Entry, []byte(b.res.StatementSHA256)) {
		t.Errorf("anchor event %s, %v", ev.Entry, err)
	}
}

// retar re-encodes files (statement included) canonically.
func retar(files []File) []byte { return canonical(files) }

// canonical is the exact archive Build writes for files.
func canonical(files []File) []byte {
	var b bytes.Buffer
	if err := writeTar(&b, files); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}

// readTar reads every file of an archive into memory.
func readTar(raw []byte) ([]File, error) {
	tr := tar.NewReader(bytes.NewReader(raw))
	var files []File
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: h.Name, Data: data})
	}
}

func TestTamperMatrix(t *testing.T) {
	b := build(t)
	all, err := readTar(b.tar)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(name string, fn func([]byte) []byte) []byte {
		fs := slices.Clone(all)
		for i := range fs {
			if fs[i].Name == name {
				fs[i].Data = fn(slices.Clone(fs[i].Data))
			}
		}
		return retar(fs)
	}
	tests := []struct {
		name     string
		bundle   func() []byte
		wantFile string
		wantText string
	}{
		{"edit report", func() []byte {
			return edit(FileReportMarkdown, func(d []byte) []byte { return bytes.Replace(d, []byte("invalid"), []byte("valid!!"), 1) })
		}, FileReportMarkdown, "changed"},
		{"edit one byte of an artifact", func() []byte {
			name := b.files[slices.IndexFunc(b.files, func(f File) bool { return strings.HasSuffix(f.Name, ".p7s") })].Name
			return edit(name, func(d []byte) []byte { d[10] ^= 1; return d })
		}, "", "changed"},
		{"add a file", func() []byte {
			fs := slices.Clone(all)
			fs = slices.Insert(fs, 0, File{Name: "aaa-extra.txt", Data: []byte("hello")})
			return retar(fs)
		}, "aaa-extra.txt", "added"},
		{"remove a file", func() []byte {
			return retar(slices.DeleteFunc(slices.Clone(all), func(f File) bool { return f.Name == FileConsistency }))
		}, FileConsistency, "removed"},
		{"reorder two files", func() []byte {
			fs := slices.Clone(all)
			fs[0], fs[1] = fs[1], fs[0]
			return retar(fs)
		}, all[1].Name, "reordered"},
		{"statement not last", func() []byte {
			fs := slices.Clone(all)
			n := len(fs) - 1
			fs[0], fs[n] = fs[n], fs[0]
			return retar(fs)
		}, StatementFile, "reordered"},
		{"re-sign with another key", func() []byte {
			var buf bytes.Buffer
			if _, err := Build(context.Background(), &buf, b.files, b.rep.Summary(), other); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}, StatementFile, "not signed by the incident lead"},
		{"header mtime changed", func() []byte {
			raw := slices.Clone(b.tar)
			// The first entry's ustar header is block 0; change its owner
			// name (offset 265) and fix the checksum so tar still reads it.
			copy(raw[265:], "mallory")
			copy(raw[148:156], "        ")
			sum := 0
			for _, c := range raw[:512] {
				sum += int(c)
			}
			copy(raw[148:156], fmt.Sprintf("%06o\x00 ", sum))
			return raw
		}, all[0].Name, "canonical"},
		{"trailing bytes", func() []byte { return append(slices.Clone(b.tar), []byte("junk")...) }, "", "trailing"},
		{"edit a snapshot part", func() []byte {
			return edit(dirSnapshots+"store.db", func(d []byte) []byte { d[len(d)/2] ^= 1; return d })
		}, dirSnapshots + "store.db", "changed"},
		{"padding changed", func() []byte {
			raw := slices.Clone(b.tar)
			end := len(headerBytes(all[0].Name, int64(len(all[0].Data)))) + len(all[0].Data)
			if end%512 == 0 {
				t.Fatalf("first entry %s has no padding", all[0].Name)
			}
			raw[end] = 'x'
			return raw
		}, all[1].Name, "canonical"},
		{"end of archive cut short", func() []byte { return slices.Clone(b.tar[:len(b.tar)-512]) }, "", "end of archive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bundle := tc.bundle()
			_, err := Verify(context.Background(), bytes.NewReader(bundle), b.lead.Public())
			var fe *FileError
			if !errors.As(err, &fe) || !errors.Is(err, ErrVerify) {
				t.Fatalf("Verify = %v, want a *FileError", err)
			}
			if tc.wantFile != "" && fe.File != tc.wantFile {
				t.Errorf("file = %q, want %q (%v)", fe.File, tc.wantFile, err)
			}
			if tc.wantFile == "" && !strings.Contains(tc.wantText, "trailing") && !strings.Contains(tc.wantText, "end of archive") && fe.File == "" {
				t.Errorf("no file named: %v", err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not say %q", err, tc.wantText)
			}
		})
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required (CI=true): %v", tool, err)
			}
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
}

func writePub(t *testing.T, path string, pub crypto.PublicKey) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStandardToolsRecipe runs docs/evidence.md's recipe: openssl for the
// DSSE signature and the CMS artifacts, sha256sum for every file.
func TestStandardToolsRecipe(t *testing.T) {
	needTools(t, "bash", "tar", "jq", "openssl", "sha256sum", "base64")
	b := build(t)
	dir := t.TempDir()
	bundle, lead := filepath.Join(dir, "bundle.tar"), filepath.Join(dir, "lead.pub")
	if err := os.WriteFile(bundle, b.tar, 0o644); err != nil {
		t.Fatal(err)
	}
	writePub(t, lead, b.lead.Public())
	out := filepath.Join(dir, "x")
	run := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		o, err := cmd.CombinedOutput()
		return string(o), err
	}
	recipe, err := filepath.Abs("testdata/verify-recipe.sh")
	if err != nil {
		t.Fatal(err)
	}
	if o, err := run("bash", recipe, bundle, lead, out); err != nil || !strings.Contains(o, "bundle verified") {
		t.Fatalf("recipe failed: %v\n%s", err, o)
	}
	// A tampered copy fails the same recipe.
	bad := edit1(t, b.tar)
	if err := os.WriteFile(bundle, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := run("bash", recipe, bundle, lead, filepath.Join(dir, "y")); err == nil {
		t.Fatalf("recipe accepted a tampered bundle:\n%s", o)
	}
	// openssl cms on the CMS artifacts, with the tenant's document.
	for _, d := range b.rep.Signatures.Remediation {
		for _, v := range d.Documents {
			if v.Format != "cms" {
				continue
			}
			doc := filepath.Join(dir, v.SignatureID+".doc")
			if err := os.WriteFile(doc, b.world.Documents[v.SignatureID], 0o644); err != nil {
				t.Fatal(err)
			}
			o, err := run("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", filepath.Join(out, ArtifactFile(v.SignatureID, "cms")),
				"-content", doc, "-CAfile", filepath.Join(out, FileCA), "-purpose", "any", "-attime", fmt.Sprint(v.SignedAt.Unix()), "-out", os.DevNull)
			wantOK := v.Class == reconcile.ClassDrift // genuine; invalid ones must fail
			if (err == nil) != wantOK {
				t.Errorf("openssl cms -verify %s (%s): err %v, want ok=%v\n%s", v.SignatureID, v.Class, err, wantOK, o)
			}
		}
	}
}

func edit1(t *testing.T, tarball []byte) []byte {
	t.Helper()
	fs, err := readTar(tarball)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fs {
		if fs[i].Name == FileReportJSON {
			fs[i].Data = append(slices.Clone(fs[i].Data), ' ')
		}
	}
	return canonical(fs)
}
