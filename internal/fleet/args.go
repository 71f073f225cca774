package fleet

import (
	"fmt"
	"strings"
	"text/template"
)

// RenderArgs renders each of a release's arguments as a text/template over
// data (a backend's per-replica values: .Listen, .Port, .Pool, .Release,
// .Instance, ...; a field the backend does not have is an error). If no
// argument mentions .Listen or .Port, listenArgs are appended so the node
// always learns its address. Errors wrap ErrInvalid and name the argument.
func RenderArgs(args, listenArgs []string, data any) ([]string, error) {
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
			return nil, fmt.Errorf("%w: argument %d %q: %w", ErrInvalid, i, a, err)
		}
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("%w: argument %d %q: %w", ErrInvalid, i, a, err)
		}
		out = append(out, b.String())
	}
	return out, nil
}
