package s3lock

import (
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/countersign/countersign/internal/snapshot"
)

func TestCheckProvesEnforcement(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		rec := newRecorder()
		cfg.Logger = rec.logger()
		st := open(t, cfg)
		rep := st.Enforcement()
		if !rep.Enforced() || len(rep.Warnings) > 0 {
			t.Fatalf("report %+v, want enforced without warnings", rep)
		}
		if !rep.LockEnabled || !rep.RetentionApplied || !rep.ConditionalWrite || !rep.OverwriteRefused || !rep.DeleteRefused {
			t.Errorf("report %+v: every probe should have passed", rep)
		}
		if wantVersioned := strings.HasSuffix(t.Name(), "-versioned"); (rep.Versioning == "Enabled") != wantVersioned || (rep.CanaryVersion != "") != wantVersioned {
			t.Errorf("versioning %q, canary version %q", rep.Versioning, rep.CanaryVersion)
		}
		if !strings.Contains(rec.String(), "Object Lock enforcement proven") {
			t.Errorf("log lacks the proof:\n%s", rec)
		}
		// The canary is there, still locked, and the Store does not list it.
		r := srv.retention(t, "snap", rep.Canary, rep.CanaryVersion)
		if r.Mode != string(Compliance) || !r.RetainUntilDate.After(time.Now()) {
			t.Errorf("canary retention %+v", r)
		}
		if names, err := st.List(t.Context(), ""); err != nil || len(names) != 0 {
			t.Errorf("List = %v, %v; want nothing", names, err)
		}
		// Check can run again at any time.
		if rep2, err := st.Check(t.Context()); err != nil || rep2.Canary == rep.Canary {
			t.Errorf("second Check = %+v, %v", rep2, err)
		}
	})
}

// TestUnenforcedGoFakeS3 runs the store against gofakes3, a real S3
// implementation without Object Lock: it creates the "locked" bucket,
// takes the lock headers, even echoes them on HEAD, and lets the canary be
// replaced and deleted.
func TestUnenforcedGoFakeS3(t *testing.T) {
	srv := startGoFakeS3(t)
	srv.bucket(t, "snap", true)
	cfg := srv.config(t, "snap")
	rec := newRecorder()
	cfg.Logger = rec.logger()

	_, err := New(t.Context(), cfg)
	var ue *UnenforcedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnenforced) {
		t.Fatalf("New = %v, want an *UnenforcedError", err)
	}
	t.Logf("New: %v", err)
	rep := ue.Report
	if rep.LockEnabled || rep.OverwriteRefused || rep.DeleteRefused {
		t.Errorf("report %+v: the lock is neither configured nor enforced", rep)
	}
	for _, want := range []string{"does not implement Object Lock", "replaced its content", "deleting the locked canary succeeded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if log := rec.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "server accepts Object Lock settings but does not enforce them") {
		t.Errorf("no loud warning in the log:\n%s", log)
	}

	// With allow_unenforced the store works, and says what it is.
	cfg.AllowUnenforced = true
	rec = newRecorder()
	cfg.Logger = rec.logger()
	st, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New with AllowUnenforced = %v", err)
	}
	if !strings.Contains(rec.String(), "continuing because allow_unenforced is set") {
		t.Errorf("no warning about continuing:\n%s", rec)
	}
	ctx := t.Context()
	obj, err := st.Put(ctx, "m/1", strings.NewReader("unprotected"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, st, "m/1"); string(got) != "unprotected" {
		t.Errorf("Get = %q", got)
	}
	if got, err := st.Stat(ctx, "m/1"); err != nil || got != obj {
		t.Errorf("Stat = %+v, %v; want %+v", got, err, obj)
	}
	if _, err := st.Put(ctx, "m/1", strings.NewReader("again")); !errors.Is(err, snapshot.ErrExists) {
		t.Errorf("second Put = %v, want ErrExists", err)
	}
	t.Logf("log:\n%s", rec)
	// Nothing stops anyone from deleting it: the reason for the warning.
	if err := srv.admin.RemoveObject(ctx, "snap", "m/1", minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("delete on gofakes3 = %v", err)
	}
	if names, err := st.List(ctx, ""); err != nil || len(names) != 0 {
		t.Errorf("List after delete = %v, %v", names, err)
	}
}

// TestLockHeadersRejected covers servers and buckets that refuse locked
// writes: versitygw with a bucket made without Object Lock, and versitygw
// --nometa, which accepts creating a bucket with Object Lock but keeps no
// configuration. Put could never work there, so allow_unenforced does not
// help: the error is not ErrUnenforced.
func TestLockHeadersRejected(t *testing.T) {
	t.Run("bucket without lock", func(t *testing.T) {
		srv := startVersityGW(t, serverOpts{versioning: true})
		cfg := srv.config(t, srv.bucket(t, "plain", false))
		cfg.AllowUnenforced = true
		_, err := New(t.Context(), cfg)
		if err == nil || errors.Is(err, ErrUnenforced) || !strings.Contains(err.Error(), "no Object Lock configuration") {
			t.Fatalf("New = %v, want a refused canary naming the missing configuration", err)
		}
		t.Logf("New: %v", err)
	})
	t.Run("versitygw nometa", func(t *testing.T) {
		bin, err := findBinary("versitygw")
		if err != nil {
			unavailable(t, "versitygw", err)
		}
		root := t.TempDir()
		secret := randomHex(20)
		srv := startServer(t, "versitygw-nometa", bin, func(addr string) []string {
			return []string{"--port", addr, "--region", "us-east-1", "--quiet", "posix", "--nometa", root}
		}, []string{"ROOT_ACCESS_KEY_ID=nometa", "ROOT_SECRET_ACCESS_KEY=" + secret}, "nometa", secret)
		cfg := srv.config(t, srv.bucket(t, "snap", true))
		cfg.AllowUnenforced = true
		_, err = New(t.Context(), cfg)
		if err == nil || errors.Is(err, ErrUnenforced) || !strings.Contains(err.Error(), "writing a canary with COMPLIANCE retention") {
			t.Fatalf("New = %v, want a refused canary", err)
		}
		t.Logf("New: %v", err)
	})
	t.Run("missing bucket", func(t *testing.T) {
		srv := startVersityGW(t, serverOpts{})
		_, err := New(t.Context(), srv.config(t, "nope"))
		if err == nil || !strings.Contains(err.Error(), "bucket nope does not exist") {
			t.Fatalf("New = %v", err)
		}
	})
}

// TestCheckRemovesExpiredCanaries lets a canary's one-second lock expire
// on the server and expects the next Check to delete it. The wait is for
// the server's clock, which a test cannot inject.
func TestCheckRemovesExpiredCanaries(t *testing.T) {
	enforcing(t, func(t *testing.T, srv *s3Server, cfg Config) {
		cfg.CanaryRetention = time.Second
		var skew time.Duration
		cfg.Now = func() time.Time { return time.Now().Add(skew) }
		st := open(t, cfg)
		first := st.Enforcement()
		until, err := time.Parse(canaryTimeLayout, strings.SplitN(strings.TrimPrefix(first.Canary, canaryDir), "-", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(until.Add(1100 * time.Millisecond)))
		skew = 2 * time.Minute // past the grace minute, for the client side only
		second, err := st.Check(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		keys := canaryKeys(t, srv, st.versioned.Load())
		if keys[first.Canary] || keys[first.Canary+"-cond"] {
			t.Errorf("expired canary still there: %v", keys)
		}
		if !keys[second.Canary] {
			t.Errorf("new canary %s missing: %v", second.Canary, keys)
		}
	})
}

func canaryKeys(t *testing.T, srv *s3Server, versioned bool) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	for o := range srv.admin.ListObjectsIter(t.Context(), "snap", minio.ListObjectsOptions{
		Prefix: canaryDir, Recursive: true, WithVersions: versioned,
	}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys[o.Key] = true
	}
	return keys
}

func TestLockProblem(t *testing.T) {
	until := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	info := func(kv ...string) minio.ObjectInfo {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return minio.ObjectInfo{Headers: h}
	}
	for _, tc := range []struct {
		name string
		info minio.ObjectInfo
		want string
	}{
		{"as asked", info(hdrLockMode, "COMPLIANCE", hdrRetainUntil, "2026-06-01T12:00:00Z"), ""},
		{"later is fine", info(hdrLockMode, "COMPLIANCE", hdrRetainUntil, "2026-06-01T12:00:00.5Z"), ""},
		{"none", info(), "reports no retention"},
		{"other mode", info(hdrLockMode, "GOVERNANCE", hdrRetainUntil, "2026-06-01T12:00:00Z"), `mode "GOVERNANCE", want COMPLIANCE`},
		{"too early", info(hdrLockMode, "COMPLIANCE", hdrRetainUntil, "2026-06-01T11:59:59Z"), "retain-until 2026-06-01T11:59:59Z, want 2026-06-01T12:00:00Z or later"},
		{"garbage", info(hdrLockMode, "COMPLIANCE", hdrRetainUntil, "tomorrow"), `unreadable retain-until "tomorrow"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lockProblem(tc.info, Compliance, until)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("lockProblem = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("snapshot bytes")
	for _, tc := range []struct {
		name string
		size int64
		want string
		err  string
	}{
		{"match", int64(len(data)), sha(data), ""},
		{"no digest stored", int64(len(data)), "", ""},
		{"digest differs", int64(len(data)), sha([]byte("other")), "differs from the stored SHA-256"},
		{"short", int64(len(data)) + 1, sha(data), "read 14 bytes, object has 15"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &verifyingReader{name: "x", r: strings.NewReader(string(data)), c: io.NopCloser(nil), h: sha256.New(), size: tc.size, want: tc.want}
			got, err := io.ReadAll(r)
			if tc.err == "" && (err != nil || string(got) != string(data)) {
				t.Errorf("ReadAll = %q, %v", got, err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("ReadAll error = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestVerifyStored covers Put's read-back on a version whose lock the
// server dropped: an ErrUnenforced error, or a warning with AllowUnenforced.
func TestVerifyStored(t *testing.T) {
	until := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	want := snapshot.Object{Name: "m/1", Size: 5, SHA256: sha([]byte("hello"))}
	stored := func(mode string, hold string) minio.ObjectInfo {
		h := http.Header{}
		if mode != "" {
			h.Set(hdrLockMode, mode)
			h.Set(hdrRetainUntil, until.Format(time.RFC3339))
		}
		if hold != "" {
			h.Set(hdrLegalHold, hold)
		}
		return minio.ObjectInfo{Size: 5, VersionID: "v1", Headers: h, UserMetadata: minio.StringMap{"Sha256": want.SHA256}}
	}
	for _, tc := range []struct {
		name      string
		info      minio.ObjectInfo
		legalHold bool
		allow     bool
		wantErr   string
		unenf     bool
	}{
		{"locked", stored("COMPLIANCE", ""), false, false, "", false},
		{"lock dropped", stored("", ""), false, false, "reports no retention", true},
		{"lock dropped, allowed", stored("", ""), false, true, "", false},
		{"legal hold dropped", stored("COMPLIANCE", "OFF"), true, false, `legal hold is "OFF"`, true},
		{"legal hold kept", stored("COMPLIANCE", "ON"), true, false, "", false},
		{"size differs", func() minio.ObjectInfo { i := stored("COMPLIANCE", ""); i.Size = 4; return i }(), false, false, "stored 4 bytes, sent 5", false},
		{"digest differs", func() minio.ObjectInfo {
			i := stored("COMPLIANCE", "")
			i.UserMetadata = minio.StringMap{"Sha256": "00"}
			return i
		}(), false, false, `stored SHA-256 metadata "00"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			s := &Store{cfg: Config{Mode: Compliance, LegalHold: tc.legalHold, AllowUnenforced: tc.allow, Logger: rec.logger()}}
			err := s.verifyStored(t.Context(), tc.info, want, until)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("verifyStored = %v, want %q", err, tc.wantErr)
			}
			if errors.Is(err, ErrUnenforced) != tc.unenf {
				t.Errorf("errors.Is(%v, ErrUnenforced) = %v", err, !tc.unenf)
			}
			if tc.allow && !strings.Contains(rec.String(), "stored without Object Lock") {
				t.Errorf("no warning logged:\n%s", rec)
			}
		})
	}
}
