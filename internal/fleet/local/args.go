package local

import (
	"fmt"
	"strings"
	"text/template"

	"github.com/countersign/countersign/internal/fleet"
)

// argData is what a release's argument templates may refer to.
type argData struct {
	Listen    string // 127.0.0.1:<port>
	Port      int
	Pool      string
	Replica   int
	Instance  string // <pool>-r<revision>-<replica>
	Release   string
	DataDir   string // a directory of this replica under the state directory
	FlagsFile string
}

// renderArgs renders each argument as a text/template. If no release
// argument mentions .Listen or .Port, listenArgs are appended so the node
// always learns its address.
func renderArgs(args, listenArgs []string, d argData) ([]string, error) {
	mentions := false
	for _, a := range args {
		if strings.Contains(a, ".Listen") || strings.Contains(a, ".Port") {
			mentions = true
		}
	}
	all := args
	if !mentions {
		all = append(append([]string(nil), args...), listenArgs...)
	}
	out := make([]string, 0, len(all))
	for i, a := range all {
		if !strings.Contains(a, "{{") {
			out = append(out, a)
			continue
		}
		t, err := template.New("arg").Option("missingkey=error").Parse(a)
		if err != nil {
			return nil, fmt.Errorf("%w: argument %d %q: %w", fleet.ErrInvalid, i, a, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, d); err != nil {
			return nil, fmt.Errorf("%w: argument %d %q: %w", fleet.ErrInvalid, i, a, err)
		}
		out = append(out, b.String())
	}
	return out, nil
}
