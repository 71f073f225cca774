package s3lock

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/countersign/countersign/internal/snapshot"
)

// enforcing runs fn against versitygw with and without bucket versioning:
// Object Lock is enforced either way, but a versioned bucket keeps every
// PUT as a new version while an unversioned one refuses overwrites.
func enforcing(t *testing.T, fn func(t *testing.T, srv *s3Server, cfg Config)) {
	for _, v := range []bool{false, true} {
		name := "versitygw"
		if v {
			name += "-versioned"
		}
		t.Run(name, func(t *testing.T) {
			srv := startVersityGW(t, serverOpts{versioning: v})
			fn(t, srv, srv.config(t, srv.bucket(t, "snap", true)))
		})
	}
}

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	st, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readAll(t *testing.T, st snapshot.ImmutableStore, name string) []byte {
	t.Helper()
	rc, err := st.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readLatest reads a key's latest version with the admin client.
func readLatest(t *testing.T, srv *s3Server, key string) string {
	t.Helper()
	obj, err := srv.admin.GetObject(t.Context(), "snap", key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPutGetStatList(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		ctx := t.Context()
		cfg.Prefix = "cs/prod"
		st := open(t, cfg)
		obj, err := st.Put(ctx, "snapshots/a/part.bin", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		const helloSHA = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
		if obj != (snapshot.Object{Name: "snapshots/a/part.bin", Size: 5, SHA256: helloSHA}) {
			t.Errorf("Put = %+v", obj)
		}
		if got := readAll(t, st, "snapshots/a/part.bin"); string(got) != "hello" {
			t.Errorf("Get = %q", got)
		}
		if got, err := st.Stat(ctx, "snapshots/a/part.bin"); err != nil || got != obj {
			t.Errorf("Stat = %+v, %v; want %+v", got, err, obj)
		}
		// The key carries the prefix, the metadata the digest, and the
		// server kept the SHA-256 it was sent (x-amz-checksum-sha256).
		info, err := srv.admin.StatObject(ctx, "snap", "cs/prod/snapshots/a/part.bin", minio.StatObjectOptions{Checksum: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := userMeta(info, metaSHA256); got != helloSHA {
			t.Errorf("x-amz-meta-sha256 = %q", got)
		}
		if sum, ok := fullObjectSHA256(info); !ok || sum != helloSHA {
			t.Errorf("server checksum = %q (%v), want %s", info.ChecksumSHA256, ok, helloSHA)
		}
		if _, err := st.Put(ctx, "snapshots/b/x", strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, "manifests/0000000001.json", strings.NewReader("{}")); err != nil {
			t.Fatal(err)
		}
		names, err := st.List(ctx, "snapshots/")
		if err != nil {
			t.Fatal(err)
		}
		if want := "snapshots/a/part.bin,snapshots/b/x"; strings.Join(names, ",") != want {
			t.Errorf("List(snapshots/) = %v, want %s", names, want)
		}
		// The canaries of Check (under the same prefix) are not listed.
		all, err := st.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3 {
			t.Errorf("List() = %v, want the 3 objects", all)
		}
		if _, err := st.Get(ctx, "snapshots/nope"); !errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("Get(missing) = %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(ctx, "snapshots/nope"); !errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
		}
		for _, bad := range []string{"", "a//b", ".hidden", "a/../b", "sp ace"} {
			if _, err := st.Put(ctx, bad, strings.NewReader("x")); !errors.Is(err, snapshot.ErrInvalidName) {
				t.Errorf("Put(%q) = %v, want ErrInvalidName", bad, err)
			}
		}
	})
}

// TestPutSetsRetention reads the lock back through the S3 API rather than
// through the Store.
func TestPutSetsRetention(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      Mode
		legalHold bool
	}{
		{"compliance", Compliance, false},
		{"governance with legal hold", Governance, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startVersityGW(t, serverOpts{versioning: true})
			cfg := srv.config(t, srv.bucket(t, "snap", true))
			now := time.Now().UTC().Truncate(time.Second)
			cfg.Mode, cfg.LegalHold, cfg.Retention = tc.mode, tc.legalHold, 48*time.Hour
			cfg.Now = func() time.Time { return now }
			st := open(t, cfg)
			if _, err := st.Put(t.Context(), "m/1", strings.NewReader("locked")); err != nil {
				t.Fatal(err)
			}
			v, _, err := st.owner(t.Context(), "m/1")
			if err != nil {
				t.Fatal(err)
			}
			r := srv.retention(t, "snap", "m/1", v.id)
			if r.Mode != string(tc.mode) {
				t.Errorf("retention mode = %q, want %s", r.Mode, tc.mode)
			}
			if want := now.Add(48 * time.Hour); !r.RetainUntilDate.Equal(want) {
				t.Errorf("retain until = %v, want %v", r.RetainUntilDate, want)
			}
			hold, err := srv.admin.GetObjectLegalHold(t.Context(), "snap", "m/1", minio.GetObjectLegalHoldOptions{VersionID: v.id})
			switch {
			case tc.legalHold && (err != nil || hold == nil || *hold != minio.LegalHoldEnabled):
				t.Errorf("legal hold = %v, %v; want ON", hold, err)
			case !tc.legalHold && err == nil && hold != nil && *hold == minio.LegalHoldEnabled:
				t.Errorf("legal hold = ON without LegalHold")
			}
		})
	}
}

// TestLockedObjectSurvivesAttacks attacks a stored object with the
// server's root credentials: deleting its version and overwriting it fail
// or leave it intact, and the Store keeps serving the original bytes.
func TestLockedObjectSurvivesAttacks(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		ctx := t.Context()
		st := open(t, cfg)
		if _, err := st.Put(ctx, "m/1", strings.NewReader("original")); err != nil {
			t.Fatal(err)
		}
		v, _, err := st.owner(ctx, "m/1")
		if err != nil {
			t.Fatal(err)
		}
		err = srv.admin.RemoveObject(ctx, "snap", "m/1", minio.RemoveObjectOptions{VersionID: v.id, GovernanceBypass: true})
		if err == nil || !isLockRefusal(err) {
			t.Errorf("deleting the locked version (with governance bypass, under COMPLIANCE) = %v, want an Object Lock refusal", err)
		}
		// Unversioned, the lock refuses overwrites and deletes. Versioned,
		// a plain PUT adds a version that a naive reader of the latest
		// version would take for the object, and a delete without a
		// version id adds a delete marker that hides it; the Store reads
		// the owning (first) version and sees neither.
		versioned := st.versioned.Load()
		_, perr := srv.admin.PutObject(ctx, "snap", "m/1", strings.NewReader("forged"), 6, minio.PutObjectOptions{})
		if versioned {
			if perr != nil {
				t.Fatalf("plain PUT on a versioned bucket = %v, want a new version", perr)
			}
			if latest := readLatest(t, srv, "m/1"); latest != "forged" {
				t.Errorf("latest version = %q, want the forged one", latest)
			}
		} else if !isLockRefusal(perr) {
			t.Errorf("plain PUT over a locked object = %v, want an Object Lock refusal", perr)
		}
		derr := srv.admin.RemoveObject(ctx, "snap", "m/1", minio.RemoveObjectOptions{})
		if versioned && derr != nil {
			t.Errorf("delete without version id on a versioned bucket = %v, want a delete marker", derr)
		} else if !versioned && !isLockRefusal(derr) {
			t.Errorf("delete of a locked object = %v, want an Object Lock refusal", derr)
		}
		if got := readAll(t, st, "m/1"); string(got) != "original" {
			t.Errorf("Get after attacks = %q, want original", got)
		}
		if names, err := st.List(ctx, "m/"); err != nil || strings.Join(names, ",") != "m/1" {
			t.Errorf("List after attacks = %v, %v", names, err)
		}
		if _, err := st.Put(ctx, "m/1", strings.NewReader("again")); !errors.Is(err, snapshot.ErrExists) {
			t.Errorf("Put after attacks = %v, want ErrExists", err)
		}
	})
}

func TestGovernanceBypassDeletes(t *testing.T) {
	srv := startVersityGW(t, serverOpts{versioning: true})
	cfg := srv.config(t, srv.bucket(t, "snap", true))
	cfg.Mode = Governance
	st := open(t, cfg)
	ctx := t.Context()
	if _, err := st.Put(ctx, "g/1", strings.NewReader("governed")); err != nil {
		t.Fatal(err)
	}
	v, _, err := st.owner(ctx, "g/1")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.admin.RemoveObject(ctx, "snap", "g/1", minio.RemoveObjectOptions{VersionID: v.id}); err == nil || !isLockRefusal(err) {
		t.Fatalf("delete without bypass = %v, want an Object Lock refusal", err)
	}
	// GOVERNANCE is what it says: a principal allowed to bypass it can.
	if err := srv.admin.RemoveObject(ctx, "snap", "g/1", minio.RemoveObjectOptions{VersionID: v.id, GovernanceBypass: true}); err != nil {
		t.Fatalf("delete with governance bypass as root = %v", err)
	}
	if _, err := st.Get(ctx, "g/1"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Get after bypass delete = %v, want ErrNotFound", err)
	}
}

func TestPutRefusesExisting(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		ctx := t.Context()
		st := open(t, cfg)
		if _, err := st.Put(ctx, "m/one", strings.NewReader("original")); err != nil {
			t.Fatal(err)
		}
		for _, data := range []string{"original", "a much longer replacement", ""} {
			if _, err := st.Put(ctx, "m/one", strings.NewReader(data)); !errors.Is(err, snapshot.ErrExists) {
				t.Fatalf("Put(%q) over existing = %v, want ErrExists", data, err)
			}
		}
		if got := readAll(t, st, "m/one"); string(got) != "original" {
			t.Errorf("content after refused Puts = %q", got)
		}
	})
}

func TestConcurrentPutsOneWins(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		const n = 8
		st := open(t, cfg)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  []int
			errs []error
		)
		for i := range n {
			wg.Go(func() {
				data := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
				_, err := st.Put(t.Context(), "race", bytes.NewReader(data))
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won = append(won, i)
				} else if !errors.Is(err, snapshot.ErrExists) {
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 || len(won) != 1 {
			t.Fatalf("winners %v, unexpected errors %v", won, errs)
		}
		if got := readAll(t, st, "race"); !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + won[0])}, 64<<10)) {
			t.Errorf("stored content is not the winner's")
		}
	})
}

func TestFailedReaderStoresNothing(t *testing.T) {
	srv := startVersityGW(t, serverOpts{versioning: true})
	cfg := srv.config(t, srv.bucket(t, "snap", true))
	cfg.SpoolDir = t.TempDir()
	st := open(t, cfg)
	ctx := t.Context()
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom))
	if _, err := st.Put(ctx, "f/1", r); !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.Put(cctx, "f/2", strings.NewReader("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v", err)
	}
	if names, err := st.List(ctx, "f/"); err != nil || len(names) != 0 {
		t.Errorf("List = %v, %v; want nothing", names, err)
	}
	if left, _ := os.ReadDir(cfg.SpoolDir); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// TestMultipart uploads an object of three parts (5 MiB, 5 MiB, 1 MiB+7).
func TestMultipart(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		ctx := t.Context()
		cfg.PartSize = MinPartSize
		st := open(t, cfg)
		data := make([]byte, 2*MinPartSize+1<<20+7)
		for i := range data {
			data[i] = byte(i*7 + i/4096)
		}
		obj, err := st.Put(ctx, "big/dump", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if obj.Size != int64(len(data)) || obj.SHA256 != sha(data) {
			t.Errorf("Put = %+v", obj)
		}
		if got := readAll(t, st, "big/dump"); !bytes.Equal(got, data) {
			t.Errorf("Get returned %d bytes, different content", len(got))
		}
		if got, err := st.Stat(ctx, "big/dump"); err != nil || got != obj {
			t.Errorf("Stat = %+v, %v; want %+v", got, err, obj)
		}
		v, _, err := st.owner(ctx, "big/dump")
		if err != nil {
			t.Fatal(err)
		}
		if r := srv.retention(t, "snap", "big/dump", v.id); r.Mode != string(Compliance) || !r.RetainUntilDate.After(time.Now().Add(DefaultRetention-time.Hour)) {
			t.Errorf("retention of the multipart object = %+v", r)
		}
		if _, err := st.Put(ctx, "big/dump", bytes.NewReader(data)); !errors.Is(err, snapshot.ErrExists) {
			t.Errorf("second multipart Put = %v, want ErrExists", err)
		}
	})
}

// TestGetDetectsChangedBytes changes a stored object behind the server's
// back (in versitygw's posix root) and expects Get to fail at EOF.
func TestGetDetectsChangedBytes(t *testing.T) {
	srv := startVersityGW(t, serverOpts{})
	st := open(t, srv.config(t, srv.bucket(t, "snap", true)))
	if _, err := st.Put(t.Context(), "t/1", strings.NewReader("genuine")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(srv.root, "snap", "t", "1")
	if err := os.WriteFile(path, []byte("forged!"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := st.Get(t.Context(), "t/1")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "differs from the stored SHA-256") {
		t.Fatalf("reading forged bytes %q: err = %v, want a SHA-256 mismatch", b, err)
	}
}

// TestSnapshotChain runs snapshot.Take (concurrently, so that the chain
// depends on Put's ErrExists) and VerifyChain on the store.
func TestSnapshotChain(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		ctx := t.Context()
		st := open(t, cfg)
		const n = 4
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, _, err := snapshot.Take(ctx, snapshot.Config{Store: st, Parts: []snapshot.Part{
					bytesPart{name: "data.bin", data: bytes.Repeat([]byte{byte(i)}, 1000)},
				}})
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
		reps, err := snapshot.VerifyChain(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) != n {
			t.Errorf("%d manifests, want %d", len(reps), n)
		}
		for _, r := range reps {
			if !r.OK() {
				t.Errorf("manifest %s does not verify: %+v", r.Manifest, r)
			}
		}
	})
}

// bytesPart is a snapshot.Part with fixed content.
type bytesPart struct {
	name string
	data []byte
}

func (p bytesPart) Name() string { return p.name }
func (p bytesPart) Kind() string { return "test.bytes" }
func (p bytesPart) Write(_ context.Context, w io.Writer) (map[string]any, error) {
	_, err := w.Write(p.data)
	return nil, err
}

// TestServerVerifiesChecksum shows that the x-amz-checksum-sha256 header
// Put sends is the one the server checks: a wrong value is refused.
func TestServerVerifiesChecksum(t *testing.T) {
	srv := startVersityGW(t, serverOpts{versioning: true})
	st := open(t, srv.config(t, srv.bucket(t, "snap", true)))
	body := []byte("hello")
	md5sum := md5.Sum(body)
	for _, tc := range []struct {
		name, checksum string
		ok             bool
	}{
		{"right", sha(body), true},
		{"wrong", sha([]byte("other")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := hex.DecodeString(tc.checksum)
			opts := st.lockOptions(time.Now().Add(time.Hour), false)
			opts.UserMetadata = map[string]string{"x-amz-checksum-sha256": base64.StdEncoding.EncodeToString(raw)}
			_, err := st.core.PutObject(t.Context(), "snap", "c/"+tc.name, bytes.NewReader(body), int64(len(body)),
				base64.StdEncoding.EncodeToString(md5sum[:]), sha(body), opts)
			if tc.ok != (err == nil) {
				t.Fatalf("PUT with the %s checksum = %v", tc.name, err)
			}
			t.Logf("PUT with the %s checksum: %v", tc.name, err)
		})
	}
}
