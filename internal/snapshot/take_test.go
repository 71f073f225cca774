package snapshot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func takeN(t *testing.T, d ImmutableStore, n int) []Manifest {
	t.Helper()
	var ms []Manifest
	for i := range n {
		m, sum, err := Take(context.Background(), Config{Store: d, IncidentID: "inc-1", Release: "v2", Instance: "ctl-1",
			Parts: []Part{
				bytesPart{name: "a.bin", data: bytes.Repeat([]byte{byte(i)}, 1000)},
				bytesPart{name: "b.json", data: []byte(`{"i":` + string(rune('0'+i)) + `}`)},
			}})
		if err != nil {
			t.Fatal(err)
		}
		o, err := d.Stat(context.Background(), m.ObjectName())
		if err != nil || o.SHA256 != sum {
			t.Fatalf("Take returned sha256 %s, object has %+v (%v)", sum, o, err)
		}
		ms = append(ms, m)
	}
	return ms
}

func TestTakeBuildsChain(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	ms := takeN(t, d, 3)
	for i, m := range ms {
		if m.Seq != int64(i+1) {
			t.Errorf("manifest %d has seq %d", i, m.Seq)
		}
		if (i == 0) != (m.Prev == nil) {
			t.Errorf("manifest %d prev = %+v", i, m.Prev)
		}
		if i > 0 && m.Prev.Manifest != ms[i-1].ObjectName() {
			t.Errorf("manifest %d links %s, want %s", i, m.Prev.Manifest, ms[i-1].ObjectName())
		}
		if p, ok := m.Part("a.bin"); !ok || p.Size != 1000 || p.Kind != "test.bytes" || p.Meta["len"] != 1000 {
			t.Errorf("manifest %d part a.bin = %+v", i, p)
		}
	}
	got, _, err := ReadManifest(ctx, d, ms[1].ObjectName())
	if err != nil {
		t.Fatal(err)
	}
	if got.IncidentID != "inc-1" || got.Release != "v2" || got.Instance != "ctl-1" || got.SnapshotID != ms[1].SnapshotID {
		t.Errorf("read back %+v", got)
	}
	reps, err := VerifyChain(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if !r.OK() || len(r.Parts) != 2 {
			t.Errorf("report %+v", r)
		}
	}
}

// tamperable makes a published file writable (root could write it anyway).
func tamperable(t *testing.T, d *WriteOnceDir, name string) string {
	t.Helper()
	p := filepath.Join(d.Root(), filepath.FromSlash(name))
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyDetectsTampering(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, d *WriteOnceDir, ms []Manifest)
		verify int    // index of the manifest to verify
		want   string // in the error
		chain  bool   // a ChainError, else a PartError
	}{
		{"flip a byte in a part", func(t *testing.T, d *WriteOnceDir, ms []Manifest) {
			p := tamperable(t, d, ms[2].Parts[0].Object)
			b, _ := os.ReadFile(p)
			b[500] ^= 1
			os.WriteFile(p, b, 0o444)
		}, 2, "part a.bin", false},
		{"truncate a part", func(t *testing.T, d *WriteOnceDir, ms []Manifest) {
			os.Truncate(tamperable(t, d, ms[2].Parts[1].Object), 1)
		}, 2, "part b.json", false},
		{"delete a part", func(t *testing.T, d *WriteOnceDir, ms []Manifest) {
			os.Remove(filepath.Join(d.Root(), filepath.FromSlash(ms[2].Parts[0].Object)))
		}, 2, "missing", false},
		{"replace an older manifest", func(t *testing.T, d *WriteOnceDir, ms []Manifest) {
			p := filepath.Join(d.Root(), filepath.FromSlash(ms[0].ObjectName()))
			b, _ := os.ReadFile(p)
			os.Remove(p)
			if _, err := d.Put(ctx, ms[0].ObjectName(), bytes.NewReader(bytes.Replace(b, []byte("inc-1"), []byte("inc-X"), 1))); err != nil {
				t.Fatal(err)
			}
		}, 1, "previous manifest replaced", true},
		{"delete an older manifest", func(t *testing.T, d *WriteOnceDir, ms []Manifest) {
			os.Remove(filepath.Join(d.Root(), filepath.FromSlash(ms[1].ObjectName())))
		}, 2, "previous manifest deleted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDir(t)
			ms := takeN(t, d, 3)
			if _, err := Verify(ctx, d, ms[tc.verify].ObjectName()); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tc.tamper(t, d, ms)
			rep, err := Verify(ctx, d, ms[tc.verify].ObjectName())
			if err == nil || rep.OK() {
				t.Fatalf("Verify after tampering = %+v, nil", rep)
			}
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want ErrVerify mentioning %q", err, tc.want)
			}
			var pe *PartError
			var ce *ChainError
			if tc.chain && !errors.As(err, &ce) || !tc.chain && !errors.As(err, &pe) {
				t.Errorf("error %T %v: want chain=%v", err, err, tc.chain)
			}
			if _, err := VerifyChain(ctx, d); err == nil {
				t.Error("VerifyChain found nothing")
			}
		})
	}
}

func TestTakeTokenIsIdempotent(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	cfg := Config{Store: d, Token: "run-1/snapshot", Parts: []Part{bytesPart{name: "x", data: []byte("1")}}}
	m1, s1, err := Take(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m2, s2, err := Take(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m1.SnapshotID != m2.SnapshotID || s1 != s2 {
		t.Errorf("second Take made %s (%s), want %s (%s)", m2.SnapshotID, s2, m1.SnapshotID, s1)
	}
	cfg.Token = "run-2/snapshot"
	m3, _, err := Take(ctx, cfg)
	if err != nil || m3.Seq != 2 {
		t.Errorf("Take with another token = seq %d, %v", m3.Seq, err)
	}
}

func TestTakeFailedPartWritesNoManifest(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	boom := errors.New("boom")
	_, _, err := Take(ctx, Config{Store: d, Parts: []Part{
		bytesPart{name: "ok", data: []byte("fine")},
		bytesPart{name: "bad", data: []byte("half"), err: boom},
	}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "part bad") {
		t.Fatalf("Take = %v, want boom naming part bad", err)
	}
	ms, _ := Manifests(ctx, d)
	if len(ms) != 0 {
		t.Errorf("manifests written: %v", ms)
	}
	names, _ := d.List(ctx, "")
	for _, n := range names {
		if strings.HasSuffix(n, "/bad") {
			t.Errorf("failed part stored: %s", n)
		}
	}
	for _, parts := range [][]Part{nil, {bytesPart{name: "a"}, bytesPart{name: "a"}}, {bytesPart{name: "a/b"}}} {
		if _, _, err := Take(ctx, Config{Store: d, Parts: parts}); err == nil {
			t.Errorf("Take with parts %v succeeded", parts)
		}
	}
}

func TestConcurrentTakesKeepOneChain(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, _, err := Take(ctx, Config{Store: d, Parts: []Part{bytesPart{name: "x", data: []byte("x")}}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	reps, err := VerifyChain(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != n {
		t.Errorf("%d manifests, want %d", len(reps), n)
	}
}
