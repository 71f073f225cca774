package s3lock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
)

// The S3 servers these tests start are real programs built by
// scripts/s3-testserver.sh: versitygw v1.8.0 (enforces Object Lock) and
// gofakes3 v1.2.0 (implements no Object Lock at all and ignores its
// headers). They run on loopback with a temporary root and a random key.

// unavailable fails under CI=true and skips otherwise.
func unavailable(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unavailable (CI=true requires it; run scripts/s3-testserver.sh): %v", what, err)
	}
	t.Skipf("%s unavailable, skipping (run scripts/s3-testserver.sh; CI=true makes this fail): %v", what, err)
}

// findBinary looks for a test server in $COUNTERSIGN_S3_BIN, then
// $HOME/.cache/countersign/bin (where scripts/s3-testserver.sh puts it),
// then $PATH.
func findBinary(name string) (string, error) {
	var dirs []string
	if d := os.Getenv("COUNTERSIGN_S3_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".cache", "countersign", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not in %s nor on $PATH", name, strings.Join(dirs, ", "))
	}
	return p, nil
}

// s3Server is a running test server.
type s3Server struct {
	name     string
	endpoint string
	creds    *credentials.Credentials
	admin    *minio.Client // for setup and for attacks that bypass the Store
	log      string        // path of the server's output
	root     string        // versitygw: the posix root (bucket directories)
}

type serverOpts struct {
	versioning bool // versitygw: --versioning-dir
}

// startVersityGW starts versitygw's posix backend on a temporary root.
// Its metadata (object lock configuration, retention, legal holds) lives in
// user xattrs; on a file system without them it uses --sidecar.
func startVersityGW(t *testing.T, o serverOpts) *s3Server {
	t.Helper()
	bin, err := findBinary("versitygw")
	if err != nil {
		unavailable(t, "versitygw", err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var backendArgs []string
	if o.versioning {
		backendArgs = append(backendArgs, "--versioning-dir", filepath.Join(dir, "versions"))
		if err := os.Mkdir(filepath.Join(dir, "versions"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Setxattr(root, "user.countersign-test", []byte("1"), 0); err != nil {
		t.Logf("no user xattrs in %s (%v): using --sidecar", root, err)
		sc := filepath.Join(dir, "sidecar")
		if err := os.Mkdir(sc, 0o755); err != nil {
			t.Fatal(err)
		}
		backendArgs = append(backendArgs, "--sidecar", sc)
	}
	access, secret := "countersign-test", randomHex(20)
	srv := startServer(t, "versitygw", bin, func(addr string) []string {
		return append([]string{"--port", addr, "--region", "us-east-1", "--quiet", "posix"}, append(backendArgs, root)...)
	}, []string{"ROOT_ACCESS_KEY_ID=" + access, "ROOT_SECRET_ACCESS_KEY=" + secret}, access, secret)
	srv.root = root
	return srv
}

// startGoFakeS3 starts gofakes3 with its in-memory backend. It checks no
// signatures, so any key works.
func startGoFakeS3(t *testing.T) *s3Server {
	t.Helper()
	bin, err := findBinary("gofakes3")
	if err != nil {
		unavailable(t, "gofakes3", err)
	}
	return startServer(t, "gofakes3", bin, func(addr string) []string {
		return []string{"-backend", "memory", "-host", addr, "-quiet"}
	}, nil, "countersign-test", randomHex(20))
}

func startServer(t *testing.T, name, bin string, args func(addr string) []string, env []string, access, secret string) *s3Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(t.TempDir(), name+".log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args(addr)...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("start %s: %v", name, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); logf.Close() }()
		if err := waitListening(addr, exited, 15*time.Second); err != nil {
			cmd.Process.Kill()
			<-exited
			out, _ := os.ReadFile(logPath)
			lastErr = fmt.Errorf("%s on %s: %v\n%s", name, addr, err, out)
			continue // most likely the port was taken between freeAddr and the bind
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
		creds := credentials.NewStaticV4(access, secret, "")
		admin, err := minio.New(addr, &minio.Options{Creds: creds, Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
		if err != nil {
			t.Fatal(err)
		}
		return &s3Server{name: name, endpoint: addr, creds: creds, admin: admin, log: logPath}
	}
	t.Fatalf("starting %s failed: %v", name, lastErr)
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitListening polls until addr accepts connections or the process exits.
func waitListening(addr string, exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not listening after " + timeout.String())
}

// bucket creates a bucket, with Object Lock if lock is set.
func (s *s3Server) bucket(t *testing.T, name string, lock bool) string {
	t.Helper()
	if err := s.admin.MakeBucket(context.Background(), name, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
		t.Fatalf("%s: make bucket %s (lock=%v): %v", s.name, name, lock, err)
	}
	return name
}

// config is a Config for bucket on s, logging into the test's log.
func (s *s3Server) config(t *testing.T, bucket string) Config {
	return Config{
		Endpoint:    s.endpoint,
		Region:      "us-east-1",
		Insecure:    true,
		PathStyle:   true,
		Bucket:      bucket,
		Credentials: s.creds,
		Logger:      testLogger(t),
	}
}

// testLogger writes slog records to t.Log and, if rec is given, keeps them.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// recorder is a slog.Handler that keeps records for assertions.
type recorder struct {
	buf *bytes.Buffer
	h   slog.Handler
}

func newRecorder() *recorder {
	b := &bytes.Buffer{}
	return &recorder{buf: b, h: slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

func (r *recorder) logger() *slog.Logger { return slog.New(r.h) }
func (r *recorder) String() string       { return r.buf.String() }

// retention is an object version's retention as the GetObjectRetention
// API reports it, read with a raw signed request: minio-go insists on the
// <Retention> root element, versitygw answers <ObjectLockRetention>.
type retention struct {
	Mode            string    `xml:"Mode"`
	RetainUntilDate time.Time `xml:"RetainUntilDate"`
}

func (s *s3Server) retention(t *testing.T, bucket, key, versionID string) retention {
	t.Helper()
	q := url.Values{"retention": {""}}
	if versionID != "" {
		q.Set("versionId", versionID)
	}
	u := &url.URL{Scheme: "http", Host: s.endpoint, Path: "/" + bucket + "/" + key, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sha256.New().Sum(nil)))
	req.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
	v, err := s.creds.Get()
	if err != nil {
		t.Fatal(err)
	}
	req = signer.SignV4(*req, v.AccessKeyID, v.SecretAccessKey, "", "us-east-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GetObjectRetention %s version %q: %s: %s", key, versionID, resp.Status, body)
	}
	var r retention
	if err := xml.Unmarshal(body, &r); err != nil {
		t.Fatalf("GetObjectRetention %s: %v: %s", key, err, body)
	}
	return r
}
