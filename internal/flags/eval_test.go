package flags

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/keys"
	"github.com/open-feature/go-sdk/openfeature"
)

func TestEvaluateString(t *testing.T) {
	s, _ := openSet(t, copyFixture(t, "targeting.flagd.json"))
	tests := []struct {
		name        string
		ec          EvalContext
		want        string
		wantVariant string
		wantReason  string
	}{
		{"no targeting match falls to default variant", EvalContext{Tenant: "umbrella", Release: "v1.0.0"}, "sha256", "sha256", "DEFAULT"},
		{"tenant ==", EvalContext{Tenant: "acme", Release: "v1.0.0"}, "sha384", "sha384", "TARGETING_MATCH"},
		{"tenant in list", EvalContext{Tenant: "initech"}, "sha512", "sha512", "TARGETING_MATCH"},
		{"release ==", EvalContext{Tenant: "umbrella", Release: "v2.0.0"}, "sha384", "sha384", "TARGETING_MATCH"},
		{"empty context", EvalContext{}, "sha256", "sha256", "DEFAULT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.String(t.Context(), CMSDigest, "code-default", tt.ec); got != tt.want {
				t.Errorf("String(%s, %+v) = %q, want %q", CMSDigest, tt.ec, got, tt.want)
			}
			r := s.Evaluate(t.Context(), CMSDigest, tt.ec)
			if r.Err != nil || r.Value != tt.want || r.Variant != tt.wantVariant || r.Reason != tt.wantReason {
				t.Errorf("Evaluate = %+v, want value %q variant %q reason %s", r, tt.want, tt.wantVariant, tt.wantReason)
			}
		})
	}
}

func TestEvaluateFallbacks(t *testing.T) {
	s, _ := openSet(t, copyFixture(t, "targeting.flagd.json"))
	ctx, ec := t.Context(), EvalContext{Tenant: "acme"}
	t.Run("disabled flag returns the code default", func(t *testing.T) {
		if got := s.String(ctx, KeysDefaultAlgorithm, "rsa-3072", ec); got != "rsa-3072" {
			t.Errorf("String(disabled) = %q, want the caller's default rsa-3072", got)
		}
		r := s.Evaluate(ctx, KeysDefaultAlgorithm, ec)
		if r.Reason != string(openfeature.DisabledReason) || r.Err != nil || r.Variant != "" {
			t.Errorf("Evaluate(disabled) = %+v, want reason DISABLED, no variant, no error", r)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		if got := s.Bool(ctx, "no.such.flag", true, ec); !got {
			t.Error("Bool(unknown) = false, want the caller's default true")
		}
		r := s.Evaluate(ctx, "no.such.flag", ec)
		if r.Reason != string(openfeature.ErrorReason) || r.Code != string(openfeature.FlagNotFoundCode) || r.Err == nil {
			t.Errorf("Evaluate(unknown) = %+v, want reason ERROR, code FLAG_NOT_FOUND and an error", r)
		}
	})
	t.Run("type mismatch", func(t *testing.T) {
		if got := s.Bool(ctx, CMSDigest, true, ec); !got {
			t.Error("Bool(string flag) = false, want the caller's default true")
		}
	})
	t.Run("numeric flag", func(t *testing.T) {
		if got := s.Int(ctx, "bench.batch-size", 1, ec); got != 100 {
			t.Errorf("Int = %d, want 100", got)
		}
		if got := s.Float(ctx, "bench.batch-size", 1, ec); got != 100 {
			t.Errorf("Float = %v, want 100", got)
		}
	})
	t.Run("$evaluators reference", func(t *testing.T) {
		for _, tenant := range []string{"pilot-1", "pilot-2"} {
			r := s.Evaluate(ctx, NewSigningPath, EvalContext{Tenant: tenant})
			if r.Value != true || r.Reason != string(openfeature.TargetingMatchReason) {
				t.Errorf("Evaluate(%s, tenant %s) = %+v, want true by TARGETING_MATCH", NewSigningPath, tenant, r)
			}
		}
	})
}

// TestFractional checks the 20/80 split of signing.new-path over many
// tenants, and that a tenant always lands in the same bucket.
func TestFractional(t *testing.T) {
	s, _ := openSet(t, copyFixture(t, "targeting.flagd.json"))
	const n = 4000
	on := 0
	for i := range n {
		ec := EvalContext{Tenant: fmt.Sprintf("tenant-%05d", i), Instance: fmt.Sprintf("node-%d", i%3)}
		got := s.Bool(t.Context(), NewSigningPath, false, ec)
		if got {
			on++
		}
		ec.Instance, ec.Release = "node-other", "v9"
		if again := s.Bool(t.Context(), NewSigningPath, false, ec); again != got {
			t.Fatalf("tenant %s: bucket changed across instances/releases (%v then %v)", ec.Tenant, got, again)
		}
	}
	frac := float64(on) / n
	// 20% of 4000, binomial sd ≈ 0.63%; ±3% is far outside chance.
	if math.Abs(frac-0.20) > 0.03 {
		t.Errorf("fraction on = %.3f (%d/%d), want 0.20 ± 0.03", frac, on, n)
	}
	// An explicit targeting key buckets instead of the tenant.
	diff := 0
	for i := range 200 {
		a := s.Bool(t.Context(), NewSigningPath, false, EvalContext{Tenant: "same", TargetingKey: fmt.Sprintf("k%d", i)})
		b := s.Bool(t.Context(), NewSigningPath, false, EvalContext{Tenant: "same"})
		if a != b {
			diff++
		}
	}
	if diff == 0 {
		t.Error("TargetingKey had no effect on bucketing")
	}
}

func TestDefaultFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "flags.json")
	created, err := EnsureFile(path)
	if err != nil || !created {
		t.Fatalf("EnsureFile = %v, %v; want created", created, err)
	}
	s, _ := openSet(t, path)
	ctx, ec := t.Context(), EvalContext{Tenant: "acme", Release: "v1", Instance: "n1"}
	if got := s.String(ctx, CMSDigest, "", ec); got != "sha256" {
		t.Errorf("%s = %q, want sha256", CMSDigest, got)
	}
	if got := s.Bool(ctx, NewSigningPath, true, ec); got {
		t.Errorf("%s = true, want false", NewSigningPath)
	}
	alg := s.String(ctx, KeysDefaultAlgorithm, "", ec)
	if _, err := keys.ParseAlgorithm(alg); err != nil || alg != string(keys.ECDSAP256) {
		t.Errorf("%s = %q (%v), want ecdsa-p256", KeysDefaultAlgorithm, alg, err)
	}
	// Every supported algorithm is a variant an operator can switch to.
	for _, a := range keys.Algorithms {
		if _, err := SetVariant(ctx, path, KeysDefaultAlgorithm, string(a), "test", "variant check", &memRecorder{}); err != nil {
			t.Errorf("variant %s: %v", a, err)
		}
	}
	if got, want := s.Names(), []string{KeysDefaultAlgorithm, CMSDigest, NewSigningPath}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Names = %v, want %v", got, want)
	}

	if err := os.WriteFile(path, []byte(`{"flags":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	created, err = EnsureFile(path)
	if err != nil || created {
		t.Fatalf("EnsureFile on existing = %v, %v; want not created", created, err)
	}
	if got := string(readFile(t, path)); got != `{"flags":{}}` {
		t.Errorf("EnsureFile overwrote an existing file: %q", got)
	}
}

func TestInvalidFilesRefusedAtOpen(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "invalid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			_, err := New(t.Context(), Config{Path: filepath.Join("testdata", "invalid", e.Name()), Logger: quietLogger()})
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("New = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want ErrNotExist", err)
	}
}
