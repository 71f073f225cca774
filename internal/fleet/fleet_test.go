package fleet

import (
	"errors"
	"strings"
	"testing"
)

func TestReleaseValidate(t *testing.T) {
	good := Release{ID: "v1", Artifact: "/bin/node", SHA256: strings.Repeat("ab", 32), SchemaMin: 2, SchemaMax: 4}
	tests := []struct {
		name string
		mod  func(*Release)
		ok   bool
	}{
		{"valid", func(*Release) {}, true},
		{"no id", func(r *Release) { r.ID = "" }, false},
		{"no artifact", func(r *Release) { r.Artifact = "" }, false},
		{"short digest", func(r *Release) { r.SHA256 = "abcd" }, false},
		{"upper-case digest", func(r *Release) { r.SHA256 = strings.Repeat("AB", 32) }, false},
		{"inverted schema range", func(r *Release) { r.SchemaMin, r.SchemaMax = 5, 4 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.mod(&r)
			err := r.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	for v, want := range map[int]bool{1: false, 2: true, 4: true, 5: false} {
		if got := good.SupportsSchema(v); got != want {
			t.Errorf("SupportsSchema(%d) = %v, want %v", v, got, want)
		}
	}
}

func TestReleaseCloneIsDeep(t *testing.T) {
	r := Release{Args: []string{"a"}, Env: []string{"K=v"}, Labels: map[string]string{"k": "v"}}
	c := r.Clone()
	c.Args[0], c.Env[0], c.Labels["k"] = "x", "x", "x"
	if r.Args[0] != "a" || r.Env[0] != "K=v" || r.Labels["k"] != "v" {
		t.Fatalf("Clone shares memory: %+v", r)
	}
}
