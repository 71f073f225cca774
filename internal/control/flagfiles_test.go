package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/flags"
)

func TestEnsureReleaseFlags(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := &World{cfg: Config{Dir: dir}}
	if _, err := flags.EnsureFile(FlagsPath(dir)); err != nil {
		t.Fatal(err)
	}
	custom := []byte(`{"flags":{"signing.new-path":{"state":"ENABLED","variants":{"off":false,"on":true},"defaultVariant":"on"}}}`)
	tests := []struct {
		name    string
		spec    ReleaseSpec
		want    []byte // file content afterwards; nil: the world's defaults
		wantErr error
	}{
		{name: "defaults copied", spec: ReleaseSpec{ID: "v1"}},
		{name: "own file", spec: ReleaseSpec{ID: "v2", Flags: custom}, want: custom},
		{name: "kept on redeploy", spec: ReleaseSpec{ID: "v2"}, want: custom},
		{name: "path in id", spec: ReleaseSpec{ID: "../x"}, wantErr: ErrInvalidRelease},
		{name: "invalid file", spec: ReleaseSpec{ID: "v3", Flags: []byte(`{"flags":{"x":{"state":"NOPE"}}}`)}, wantErr: flags.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, err := w.ensureReleaseFlags(ctx, tt.spec)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if fileExists(ReleaseFlagsPath(dir, tt.spec.ID)) {
					t.Fatalf("a refused flag file was stored")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if path != filepath.Join(dir, ReleasesDir, tt.spec.ID+".flagd.json") {
				t.Fatalf("path %s", path)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want == nil {
				want = flags.Default()
			}
			if string(got) != string(want) {
				t.Fatalf("file = %s, want %s", got, want)
			}
		})
	}
}

func TestPreviousPort(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "client.url")
	tests := []struct {
		name, content string
		want          int
	}{
		{"missing", "", -1},
		{"url", "nats://127.0.0.1:41234\n", 41234},
		{"garbage", "::nope", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(f)
			if tt.content != "" {
				if err := os.WriteFile(f, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := previousPort(f); got != tt.want {
				t.Fatalf("previousPort = %d, want %d", got, tt.want)
			}
		})
	}
}
