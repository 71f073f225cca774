package s3lock

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Config // compared on the URL-settable fields
	}{
		{"s3://snap", Config{Endpoint: DefaultEndpoint, Bucket: "snap", Mode: Compliance, Retention: DefaultRetention}},
		{"s3://snap/cs/prod/?endpoint=127.0.0.1:7070&region=us-east-1&insecure=1&mode=compliance&retention=720h",
			Config{Endpoint: "127.0.0.1:7070", Region: "us-east-1", Insecure: true, Bucket: "snap", Prefix: "cs/prod", Mode: Compliance, Retention: 720 * time.Hour}},
		{"s3://snap?mode=GOVERNANCE&retention=7d&legal_hold=1&allow_unenforced=true&path_style=1",
			Config{Endpoint: DefaultEndpoint, Bucket: "snap", Mode: Governance, Retention: 7 * 24 * time.Hour, LegalHold: true, AllowUnenforced: true, PathStyle: true}},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := ParseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if got.Endpoint != tc.want.Endpoint || got.Region != tc.want.Region || got.Insecure != tc.want.Insecure ||
				got.PathStyle != tc.want.PathStyle || got.Bucket != tc.want.Bucket || got.Prefix != tc.want.Prefix ||
				got.Mode != tc.want.Mode || got.Retention != tc.want.Retention || got.LegalHold != tc.want.LegalHold ||
				got.AllowUnenforced != tc.want.AllowUnenforced {
				t.Errorf("ParseURL = %+v\nwant       %+v", got, tc.want)
			}
			if got.Credentials != nil {
				t.Error("a parsed URL must carry no credentials")
			}
			if got.CanaryRetention != DefaultCanaryRetention || got.PartSize != DefaultPartSize {
				t.Errorf("defaults not applied: %+v", got)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct {
		url, want string
		secret    string // must not appear in the error
	}{
		{"https://snap", `scheme "https"`, ""},
		{"s3://AKIAEXAMPLE:hunter2@snap", "must not carry credentials", "hunter2"},
		{"s3://:hunter2@snap", "must not carry credentials", "hunter2"},
		{"s3:///prefix", "no bucket", ""},
		{"s3://snap?secret_key=hunter2", `unknown store URL parameter "secret_key"`, "hunter2"},
		{"s3://snap?mode=strict", `mode "strict"`, ""},
		{"s3://snap?mode=compliance&mode=governance", "given 2 times", ""},
		{"s3://snap?retention=0s", "positive duration", ""},
		{"s3://snap?retention=-1h", "positive duration", ""},
		{"s3://snap?retention=xd", "positive number of days", ""},
		{"s3://snap?insecure=maybe", "want 1 or 0", ""},
		{"s3://snap?endpoint=https://s3.example.com", "want HOST[:PORT]", ""},
		{"s3://snap/.hidden", "prefix", ""},
		{"s3://snap#x", "fragment", ""},
		{"s3://snap/%zz?x=hunter2", "invalid URL escape", "hunter2"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := ParseURL(tc.url)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseURL = %v, want an error with %q", err, tc.want)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error repeats the secret: %v", err)
			}
		})
	}
}

func TestConfigLogValueHasNoCredentials(t *testing.T) {
	var buf bytes.Buffer
	cfg := Config{Bucket: "snap", Credentials: credentials.NewStaticV4("AKIAEXAMPLE", "hunter2", "tok")}
	slog.New(slog.NewTextHandler(&buf, nil)).Info("open", "config", cfg)
	if s := buf.String(); strings.Contains(s, "hunter2") || strings.Contains(s, "AKIAEXAMPLE") || !strings.Contains(s, "config.bucket=snap") {
		t.Errorf("logged %s", s)
	}
}

// noCredentials empties every source EnvCredentials reads.
func noCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("HOME", dir)
}

func TestOpenWithoutCredentials(t *testing.T) {
	noCredentials(t)
	_, err := Open(t.Context(), "s3://snap?endpoint=127.0.0.1:1&insecure=1")
	if err == nil || !strings.Contains(err.Error(), "no S3 credentials") {
		t.Fatalf("Open = %v, want a missing-credentials error", err)
	}
}

// TestOpen opens a store the way the command line does, with credentials
// from the environment and then from a shared credentials file.
func TestOpen(t *testing.T) {
	srv := startVersityGW(t, serverOpts{versioning: true})
	srv.bucket(t, "snap", true)
	v, err := srv.creds.Get()
	if err != nil {
		t.Fatal(err)
	}
	url := "s3://snap/cs?endpoint=" + srv.endpoint + "&region=us-east-1&insecure=1&path_style=1&mode=governance&retention=2h"
	for _, tc := range []struct {
		name string
		env  func(t *testing.T)
	}{
		{"env", func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
			t.Setenv("AWS_SECRET_ACCESS_KEY", v.SecretAccessKey)
		}},
		{"credentials file", func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "credentials")
			writeFile(t, f, "[snapshots]\naws_access_key_id = "+v.AccessKeyID+"\naws_secret_access_key = "+v.SecretAccessKey+"\n")
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", f)
			t.Setenv("AWS_PROFILE", "snapshots")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noCredentials(t)
			tc.env(t)
			var logs bytes.Buffer
			prev := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			t.Cleanup(func() { slog.SetDefault(prev) })
			st, err := Open(t.Context(), url)
			if err != nil {
				t.Fatal(err)
			}
			name := "n/" + strings.ReplaceAll(tc.name, " ", "-")
			if _, err := st.Put(t.Context(), name, strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
			own, _, err := st.owner(t.Context(), "cs/"+name)
			if err != nil {
				t.Fatal(err)
			}
			if r := srv.retention(t, "snap", "cs/"+name, own.id); r.Mode != string(Governance) || r.RetainUntilDate.After(time.Now().Add(2*time.Hour)) {
				t.Errorf("retention %+v, want GOVERNANCE for 2h", r)
			}
			if strings.Contains(logs.String(), v.SecretAccessKey) {
				t.Errorf("the secret key was logged:\n%s", logs.String())
			}
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		noCredentials(t)
		t.Setenv("AWS_ACCESS_KEY_ID", v.AccessKeyID)
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-"+v.SecretAccessKey)
		_, err := Open(t.Context(), url)
		if err == nil || strings.Contains(err.Error(), v.SecretAccessKey) {
			t.Fatalf("Open with a wrong secret = %v", err)
		}
		t.Logf("Open: %v", err)
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
