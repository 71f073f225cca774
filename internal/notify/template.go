package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	deftemplates "github.com/countersign/countersign/templates"
)

// Templates are the parsed, validated notice and postmortem templates.
// Each notice template defines "subject" and "body"; the postmortem
// template defines "body".
type Templates struct {
	phases     map[Phase]*template.Template
	postmortem *template.Template
	// Sources maps each template file to where it was read from.
	Sources map[string]string
}

// DefaultTemplates returns the templates shipped in templates/.
func DefaultTemplates() (*Templates, error) {
	return LoadTemplates("")
}

// LoadTemplates reads the templates from dir, file by file, falling back
// to the shipped default for any file dir does not have (dir "" means
// the defaults only). Every template is validated: it must define what its
// phase needs, use each of the phase's required fields, and refer only to
// fields of the model (checked by rendering a complete example).
func LoadTemplates(dir string) (*Templates, error) {
	t := &Templates{phases: map[Phase]*template.Template{}, Sources: map[string]string{}}
	load := func(spec phaseSpec, defs ...string) (*template.Template, error) {
		src, from, err := readTemplate(dir, spec.file)
		if err != nil {
			return nil, err
		}
		t.Sources[spec.file] = from
		tpl, err := template.New(spec.file).Funcs(funcs).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, &TemplateError{File: from, Err: err}
		}
		if err := validate(tpl, from, spec, defs); err != nil {
			return nil, err
		}
		return tpl, nil
	}
	for _, p := range Phases {
		tpl, err := load(phaseSpecs[p], "subject", "body")
		if err != nil {
			return nil, err
		}
		t.phases[p] = tpl
	}
	tpl, err := load(postmortemSpec, "body")
	if err != nil {
		return nil, err
	}
	t.postmortem = tpl
	// Render the complete example through every template: a reference to
	// a field the model lacks fails here, at load, not during an incident.
	ex := ExampleInput()
	for _, p := range Phases {
		tenant := ""
		if p.TenantScoped() {
			tenant = ex.Impact.Tenants[0].ID
		}
		if _, err := t.Render(ex, RenderOptions{Phase: p, Tenant: tenant, Revision: 1,
			NextUpdateAt: ex.Incident.DetectedAt.Add(time.Hour)}); err != nil {
			return nil, &TemplateError{File: t.Sources[phaseSpecs[p].file], Err: err}
		}
	}
	if _, err := t.Postmortem(ex); err != nil {
		return nil, &TemplateError{File: t.Sources[postmortemSpec.file], Err: err}
	}
	return t, nil
}

func readTemplate(dir, name string) (src []byte, from string, err error) {
	if dir != "" {
		p := filepath.Join(dir, name)
		src, err = os.ReadFile(p)
		if err == nil {
			return src, p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", fmt.Errorf("notify: %w", err)
		}
	}
	src, err = fs.ReadFile(deftemplates.FS, name)
	if err != nil {
		return nil, "", fmt.Errorf("notify: default template %s: %w", name, err)
	}
	return src, "templates/" + name + " (default)", nil
}

// validate checks that tpl defines defs and uses every required field.
func validate(tpl *template.Template, file string, spec phaseSpec, defs []string) error {
	used := map[string]bool{}
	for _, d := range defs {
		dt := tpl.Lookup(d)
		if dt == nil || dt.Tree == nil || dt.Root == nil || len(dt.Root.Nodes) == 0 {
			return &TemplateError{File: file, Field: fmt.Sprintf("{{define %q}}", d), Err: errors.New("missing definition")}
		}
		w := walker{tpl: tpl, used: used, seen: map[string]bool{}}
		w.list(dt.Root, "", map[string]string{"$": ""})
	}
	for _, f := range spec.fields {
		ok := false
		for u := range used {
			if u == f || strings.HasPrefix(u, f+".") {
				ok = true
				break
			}
		}
		if !ok {
			return &TemplateError{File: file, Field: "." + f,
				Err: fmt.Errorf("required field is never used (a %s notice must show it)", spec.name)}
		}
	}
	return nil
}

// walker collects the model paths a template refers to, following with,
// range, variables and {{template}} calls so that {{with .Incident}}{{.ID}}
// counts as Incident.ID.
type walker struct {
	tpl  *template.Template
	used map[string]bool
	seen map[string]bool
}

const unknownDot = "\x00" // dot is not a model path (e.g. a function result)

func join(prefix string, ident []string) string {
	if prefix == unknownDot {
		return unknownDot
	}
	p := strings.Join(ident, ".")
	if prefix == "" {
		return p
	}
	return prefix + "." + p
}

func (w *walker) list(l *parse.ListNode, dot string, vars map[string]string) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		w.node(n, dot, vars)
	}
}

func (w *walker) node(n parse.Node, dot string, vars map[string]string) {
	switch n := n.(type) {
	case *parse.ActionNode:
		w.pipe(n.Pipe, dot, vars)
	case *parse.IfNode:
		w.pipe(n.Pipe, dot, vars)
		w.list(n.List, dot, vars)
		w.list(n.ElseList, dot, vars)
	case *parse.WithNode:
		inner := w.pipe(n.Pipe, dot, vars)
		w.list(n.List, inner, vars)
		w.list(n.ElseList, dot, vars)
	case *parse.RangeNode:
		inner := w.pipe(n.Pipe, dot, vars)
		scoped := maps(vars)
		if d := n.Pipe.Decl; len(d) > 0 {
			scoped[d[len(d)-1].Ident[0]] = inner
		}
		w.list(n.List, inner, scoped)
		w.list(n.ElseList, dot, vars)
	case *parse.TemplateNode:
		arg := unknownDot
		if n.Pipe != nil {
			arg = w.pipe(n.Pipe, dot, vars)
		}
		key := n.Name + "\x00" + arg
		if t := w.tpl.Lookup(n.Name); t != nil && t.Tree != nil && !w.seen[key] {
			w.seen[key] = true
			w.list(t.Root, arg, map[string]string{"$": arg})
		}
	}
}

// pipe records the fields a pipeline uses and returns the model path of
// its value when it is a plain field reference.
func (w *walker) pipe(p *parse.PipeNode, dot string, vars map[string]string) string {
	if p == nil {
		return unknownDot
	}
	result := unknownDot
	for i, c := range p.Cmds {
		for _, a := range c.Args {
			if path := w.arg(a, dot, vars); path != unknownDot && len(p.Cmds) == 1 && len(c.Args) == 1 && i == 0 {
				result = path
			}
		}
	}
	if len(p.Decl) == 1 && len(p.Cmds) == 1 && len(p.Cmds[0].Args) == 1 {
		vars[p.Decl[0].Ident[0]] = result
	}
	return result
}

func (w *walker) arg(a parse.Node, dot string, vars map[string]string) string {
	switch a := a.(type) {
	case *parse.FieldNode:
		return w.use(join(dot, a.Ident))
	case *parse.DotNode:
		return dot
	case *parse.VariableNode:
		base, ok := vars[a.Ident[0]]
		if !ok {
			return unknownDot
		}
		if len(a.Ident) == 1 {
			return base
		}
		return w.use(join(base, a.Ident[1:]))
	case *parse.ChainNode:
		if _, ok := a.Node.(*parse.PipeNode); ok {
			w.pipe(a.Node.(*parse.PipeNode), dot, vars)
		}
		return unknownDot
	case *parse.PipeNode:
		return w.pipe(a, dot, vars)
	}
	return unknownDot
}

func (w *walker) use(path string) string {
	if path != unknownDot && !strings.HasPrefix(path, unknownDot) {
		w.used[path] = true
	}
	return path
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func execute(tpl *template.Template, name string, v any) (string, error) {
	var b bytes.Buffer
	if err := tpl.ExecuteTemplate(&b, name, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// funcs are the helpers templates may use.
var funcs = template.FuncMap{
	// ts formats a time in UTC to the second; the zero time is "—".
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	// hm formats a time as "15:04 UTC".
	"hm": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("15:04 UTC")
	},
	// between is the duration from a to b, rounded to the second, or "n/a".
	"between": func(a, b time.Time) string {
		if a.IsZero() || b.IsZero() {
			return "n/a"
		}
		return b.Sub(a).Round(time.Second).String()
	},
	// dur formats a duration: to the millisecond under 10 s (containment is
	// measured in hundreds of milliseconds), to the second above; negative
	// is "n/a".
	"dur": func(d time.Duration) string {
		switch {
		case d < 0:
			return "n/a"
		case d < 10*time.Second:
			return d.Round(time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	},
	"join": strings.Join,
	// cell makes text safe inside a Markdown table cell.
	"cell": func(s string) string {
		return strings.ReplaceAll(strings.Join(strings.Fields(s), " "), "|", `\|`)
	},
	// plural picks one or many by n.
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
	"inc":      func(i int) int { return i + 1 },
	"contains": func(list []string, s string) bool { return slices.Contains(list, s) },
}
