package playbook

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrReference is wrapped when a template reference cannot be resolved at run time.
var ErrReference = errors.New("playbook: unresolved reference")

type refKind int

const (
	refParam refKind = iota + 1
	refStep
	refRun
)

// ref is one parsed ${...} reference.
type ref struct {
	raw  string // the text between ${ and }
	kind refKind
	name string   // parameter, step ID, or run field
	path []string // output key path, for refStep
}

// parseRef parses the inside of ${...}.
func parseRef(s string) (ref, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	r := ref{raw: s}
	switch {
	case len(parts) == 2 && parts[0] == "params" && parts[1] != "":
		r.kind, r.name = refParam, parts[1]
	case len(parts) == 2 && parts[0] == "run" && (parts[1] == "id" || parts[1] == "actor"):
		r.kind, r.name = refRun, parts[1]
	case len(parts) >= 4 && parts[0] == "steps" && parts[2] == "outputs" && parts[1] != "":
		r.kind, r.name, r.path = refStep, parts[1], parts[3:]
		for _, p := range r.path {
			if p == "" {
				return ref{}, fmt.Errorf("bad reference ${%s}: empty key", s)
			}
		}
	default:
		return ref{}, fmt.Errorf("bad reference ${%s}: want ${params.NAME}, ${steps.ID.outputs.KEY} or ${run.id}", s)
	}
	return r, nil
}

// segment is a piece of a template: literal text or a reference.
type segment struct {
	lit string
	ref *ref
}

func splitTemplate(s string) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	for len(s) > 0 {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			lit.WriteString(s)
			break
		}
		lit.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$${"):
			lit.WriteString("${")
			s = s[3:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated reference in %q", s)
			}
			r, err := parseRef(s[2:end])
			if err != nil {
				return nil, err
			}
			if lit.Len() > 0 {
				segs = append(segs, segment{lit: lit.String()})
				lit.Reset()
			}
			segs = append(segs, segment{ref: &r})
			s = s[end+1:]
		default:
			lit.WriteByte('$')
			s = s[1:]
		}
	}
	if lit.Len() > 0 {
		segs = append(segs, segment{lit: lit.String()})
	}
	return segs, nil
}

func parseTemplate(s string) ([]ref, error) {
	segs, err := splitTemplate(s)
	if err != nil {
		return nil, err
	}
	var refs []ref
	for _, g := range segs {
		if g.ref != nil {
			refs = append(refs, *g.ref)
		}
	}
	return refs, nil
}

// scope is what references resolve against.
type scope struct {
	runID, actor string
	params       map[string]string
	outputs      map[string]map[string]any // by step ID
	// deferred, when set, makes unresolvable step references render as a
	// placeholder instead of failing (for plans).
	deferred bool
}

func (sc *scope) lookup(r ref) (any, error) {
	switch r.kind {
	case refParam:
		v, ok := sc.params[r.name]
		if !ok {
			return nil, fmt.Errorf("%w: ${%s}: parameter not set", ErrReference, r.raw)
		}
		return v, nil
	case refRun:
		if r.name == "id" {
			return sc.runID, nil
		}
		return sc.actor, nil
	}
	var cur any = sc.outputs[r.name]
	for _, k := range r.path {
		m, ok := cur.(map[string]any)
		if !ok {
			cur = nil
			break
		}
		cur = m[k]
	}
	if cur == nil {
		if sc.deferred {
			return "<" + r.raw + ">", nil
		}
		return nil, fmt.Errorf("%w: ${%s}: step %q has no such output", ErrReference, r.raw, r.name)
	}
	return cur, nil
}

// expand resolves every reference in v (strings inside maps and lists too).
func (sc *scope) expand(v any) (any, error) {
	switch x := v.(type) {
	case string:
		segs, err := splitTemplate(x)
		if err != nil {
			return nil, err
		}
		if len(segs) == 1 && segs[0].ref != nil {
			return sc.lookup(*segs[0].ref)
		}
		var b strings.Builder
		for _, g := range segs {
			if g.ref == nil {
				b.WriteString(g.lit)
				continue
			}
			val, err := sc.lookup(*g.ref)
			if err != nil {
				return nil, err
			}
			fmt.Fprint(&b, val)
		}
		return b.String(), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, err := sc.expand(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := sc.expand(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = r
		}
		return out, nil
	default:
		return v, nil
	}
}

// condition is a parsed "when".
type condition struct {
	src    string
	ref    ref
	negate bool
	op     string // "" for a truth test
	value  any    // float64, bool or string
}

var condOps = []string{"==", "!=", "<=", ">=", "<", ">"}

func parseCondition(s string) (*condition, error) {
	c := &condition{src: s}
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "!") {
		c.negate = true
		t = strings.TrimSpace(t[1:])
	}
	if !strings.HasPrefix(t, "${") {
		return nil, fmt.Errorf("condition %q must start with a ${...} reference", s)
	}
	end := strings.IndexByte(t, '}')
	if end < 0 {
		return nil, fmt.Errorf("condition %q: unterminated reference", s)
	}
	r, err := parseRef(t[2:end])
	if err != nil {
		return nil, err
	}
	c.ref = r
	rest := strings.TrimSpace(t[end+1:])
	if rest == "" {
		return c, nil
	}
	if c.negate {
		return nil, fmt.Errorf("condition %q: '!' only applies to a bare reference", s)
	}
	for _, op := range condOps {
		if strings.HasPrefix(rest, op) {
			c.op = op
			rest = strings.TrimSpace(rest[len(op):])
			break
		}
	}
	if c.op == "" || rest == "" {
		return nil, fmt.Errorf("condition %q: want ${REF} OP VALUE with OP one of == != < <= > >=", s)
	}
	switch {
	case rest == "true" || rest == "false":
		c.value = rest == "true"
	case len(rest) >= 2 && (rest[0] == '"' || rest[0] == '\''):
		if rest[len(rest)-1] != rest[0] {
			return nil, fmt.Errorf("condition %q: unterminated string", s)
		}
		c.value = rest[1 : len(rest)-1]
	default:
		if f, err := strconv.ParseFloat(rest, 64); err == nil {
			c.value = f
		} else {
			c.value = rest
		}
	}
	if _, isNum := c.value.(float64); !isNum && c.op != "==" && c.op != "!=" {
		return nil, fmt.Errorf("condition %q: %s needs a number", s, c.op)
	}
	return c, nil
}

// eval evaluates the condition; a missing output is nil (false, and unequal to anything).
func (c *condition) eval(sc *scope) (bool, error) {
	v, err := sc.lookup(c.ref)
	if err != nil {
		if !errors.Is(err, ErrReference) || c.ref.kind != refStep {
			return false, err
		}
		v = nil
	}
	if c.op == "" {
		return truthy(v) != c.negate, nil
	}
	if want, ok := c.value.(float64); ok {
		got, ok := toFloat(v)
		if !ok {
			return c.op == "!=", nil
		}
		switch c.op {
		case "==":
			return got == want, nil
		case "!=":
			return got != want, nil
		case "<":
			return got < want, nil
		case "<=":
			return got <= want, nil
		case ">":
			return got > want, nil
		default:
			return got >= want, nil
		}
	}
	eq := v != nil && fmt.Sprint(v) == fmt.Sprint(c.value)
	if b, ok := c.value.(bool); ok {
		vb, isBool := v.(bool)
		eq = isBool && vb == b
	}
	return eq == (c.op == "=="), nil
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != "" && x != "false" && x != "0"
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	if f, ok := toFloat(v); ok {
		return f != 0
	}
	return true
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}
