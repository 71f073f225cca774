package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func TestWriteOnceDirPutGetStatList(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	obj, err := d.Put(ctx, "snapshots/a/part.bin", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	const helloSHA = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if obj != (Object{Name: "snapshots/a/part.bin", Size: 5, SHA256: helloSHA}) {
		t.Errorf("Put = %+v", obj)
	}
	if got := readObject(t, d, "snapshots/a/part.bin"); string(got) != "hello" {
		t.Errorf("Get = %q", got)
	}
	st, err := d.Stat(ctx, "snapshots/a/part.bin")
	if err != nil || st != obj {
		t.Errorf("Stat = %+v, %v; want %+v", st, err, obj)
	}
	fi, err := os.Stat(filepath.Join(d.Root(), "snapshots", "a", "part.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("mode = %v, want 0444", fi.Mode().Perm())
	}
	if _, err := d.Put(ctx, "snapshots/b/x", strings.NewReader("")); err != nil {
		t.Fatal(err)
	}
	names, err := d.List(ctx, "snapshots/")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"snapshots/a/part.bin", "snapshots/b/x"}; strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("List = %v, want %v", names, want)
	}
	if _, err := d.Get(ctx, "snapshots/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := d.Stat(ctx, "snapshots/nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
}

// TestWriteOnceDirRefusesOverwrite checks that an existing name is never
// overwritten or truncated. It matters most as root, whom 0444 does not
// stop: the refusal must come from Put itself.
func TestWriteOnceDirRefusesOverwrite(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	if _, err := d.Put(ctx, "m/one", strings.NewReader("original")); err != nil {
		t.Fatal(err)
	}
	t.Logf("running as uid %d", os.Geteuid())
	for _, tc := range []struct {
		name string
		data string
		prep func(t *testing.T)
	}{
		{"same content", "original", nil},
		{"longer", "a much longer replacement", nil},
		{"empty", "", nil},
		{"after chmod 0644", "replacement", func(t *testing.T) {
			// Even with the mode bit gone (as root it never mattered) Put refuses.
			if err := os.Chmod(filepath.Join(d.Root(), "m", "one"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep(t)
			}
			_, err := d.Put(ctx, "m/one", strings.NewReader(tc.data))
			if !errors.Is(err, ErrExists) {
				t.Fatalf("Put over existing = %v, want ErrExists", err)
			}
			if got := readObject(t, d, "m/one"); string(got) != "original" {
				t.Fatalf("content after refused Put = %q, want %q", got, "original")
			}
		})
	}
	leftovers, _ := filepath.Glob(filepath.Join(d.Root(), "m", ".put-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestWriteOnceDirConcurrentPutsOneWins(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	const n = 16
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  []int
		errs []error
	)
	for i := range n {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
			_, err := d.Put(ctx, "race", bytes.NewReader(data))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won = append(won, i)
			} else if !errors.Is(err, ErrExists) {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 || len(won) != 1 {
		t.Fatalf("winners %v, unexpected errors %v; want exactly one winner", won, errs)
	}
	want := bytes.Repeat([]byte{byte('a' + won[0])}, 64<<10)
	if got := readObject(t, d, "race"); !bytes.Equal(got, want) {
		t.Errorf("stored object is not the winner's (len %d)", len(got))
	}
}

func TestWriteOnceDirFailedReaderStoresNothing(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("partial data"), iotest.ErrReader(boom))
	if _, err := d.Put(ctx, "p/x", r); !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want boom", err)
	}
	if _, err := d.Stat(ctx, "p/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("object exists after failed Put: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Put(cctx, "p/y", strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled ctx = %v, want context.Canceled", err)
	}
	names, _ := d.List(ctx, "")
	if len(names) != 0 {
		t.Errorf("List = %v, want nothing", names)
	}
	entries, _ := os.ReadDir(filepath.Join(d.Root(), "p"))
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"snapshots/20260504T100000.000Z-ab/store.sqlite", true},
		{"", false},
		{"/abs", false},
		{"a//b", false},
		{"a/", false},
		{"../x", false},
		{"a/../b", false},
		{".hidden", false},
		{"a/.put-1", false},
		{"sp ace", false},
		{"back\\slash", false},
		{strings.Repeat("x", 513), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckName(tc.name)
			if (err == nil) != tc.ok {
				t.Errorf("CheckName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Errorf("error %v does not wrap ErrInvalidName", err)
			}
		})
	}
	d := newDir(t)
	if _, err := d.Put(context.Background(), "../escape", strings.NewReader("x")); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Put(../escape) = %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(d.Root()), "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("escape file written: %v", err)
	}
}
