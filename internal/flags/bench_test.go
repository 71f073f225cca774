package flags

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/open-feature/go-sdk/openfeature"
)

func BenchmarkBoolFractional(b *testing.B) {
	s, _ := openSet(b, filepath.Join("testdata", "targeting.flagd.json"))
	ec := EvalContext{Tenant: "acme", Release: "v1", Instance: "n1"}
	for b.Loop() {
		s.Bool(b.Context(), NewSigningPath, false, ec)
	}
}

func BenchmarkProviderBoolFractional(b *testing.B) {
	s, _ := openSet(b, filepath.Join("testdata", "targeting.flagd.json"))
	fc := openfeature.FlattenedContext{"targetingKey": "acme", "tenant": "acme"}
	for b.Loop() {
		s.Provider().BooleanEvaluation(b.Context(), NewSigningPath, false, fc)
	}
}

func BenchmarkStringStatic(b *testing.B) {
	s, _ := openSet(b, filepath.Join("testdata", "targeting.flagd.json"))
	ec := EvalContext{Tenant: "acme", Release: "v1", Instance: "n1"}
	for b.Loop() {
		s.String(b.Context(), "bench.batch-size", "", ec)
	}
}

func BenchmarkCompile(b *testing.B) {
	raw, _ := os.ReadFile(filepath.Join("testdata", "targeting.flagd.json"))
	for b.Loop() {
		if _, err := compile(raw); err != nil {
			b.Fatal(err)
		}
	}
}
