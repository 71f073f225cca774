package node

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/auditlog"
)

// These tests keep docs/openapi.yaml and docs/api.md from drifting away from
// the code: the routes are read from the source of routes() (and of the
// audit log handler the node mounts), the problem types from
// internal/api/problem.go, the field names from the wire types themselves.

const (
	openAPIPath = "../../docs/openapi.yaml"
	apiDocPath  = "../../docs/api.md"
)

// route is one mux pattern the node serves.
type route struct {
	method  string // "" matches every method
	path    string
	authed  bool   // wrapped in s.authed: bearer token required
	handler string // method name of the handler, when known
	node    bool   // registered by routes() itself (answers problem+json)
}

func (r route) String() string { return strings.TrimSpace(r.method + " " + r.path) }

// prefix reports whether the pattern matches a whole subtree (ends in "/").
func (r route) prefix() bool { return strings.HasSuffix(r.path, "/") }

// catchAll is routes()'s fallback pattern: it answers 404 for every unknown
// endpoint and is documented in api.md, not as an OpenAPI path.
const catchAll = "/"

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	routes := append(nodeRoutes(t), auditRoutes(t)...)
	ops := operations(t, doc)

	for _, r := range routes {
		if !slices.ContainsFunc(ops, r.serves) {
			t.Errorf("route %q is not documented in docs/openapi.yaml (add it under paths)", r)
		}
	}
	for _, op := range ops {
		if !slices.ContainsFunc(routes, func(r route) bool { return r.serves(op) }) {
			t.Errorf("docs/openapi.yaml documents %s %s, which the node does not serve", op.method, op.path)
		}
	}
}

// TestOpenAPIOperationsMatchHandlers checks what each route promises:
// authentication, the Idempotency-Key header, problem+json errors and
// Retry-After on 503.
func TestOpenAPIOperationsMatchHandlers(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := operations(t, doc)
	idem := handlersCallingIdempotencyKey(t)
	for _, r := range nodeRoutes(t) {
		for _, op := range ops {
			if !r.serves(op) {
				continue
			}
			t.Run(op.method+" "+op.path, func(t *testing.T) {
				checkOperation(t, doc, r, op, idem[r.handler])
			})
		}
	}
}

func checkOperation(t *testing.T, doc map[string]any, r route, op operation, needsIdem bool) {
	sec, hasSec := op.body["security"]
	public := hasSec && len(asSlice(sec)) == 0
	if r.authed && public {
		t.Errorf("the route needs a bearer token but the operation says security: []")
	}
	if !r.authed && !public {
		t.Errorf("the route is unauthenticated; give the operation security: []")
	}
	responses := asMap(op.body["responses"])
	if r.authed {
		if _, ok := responses["401"]; !ok {
			t.Errorf("authenticated operation documents no 401")
		}
		if _, ok := responses["503"]; !ok {
			t.Errorf("authenticated operation documents no 503 (the token check can fail)")
		}
	}
	if documented := hasIdempotencyHeader(doc, op.body); documented != needsIdem {
		t.Errorf("handler %s requires the Idempotency-Key header: %v; the operation documents it as required: %v", r.handler, needsIdem, documented)
	}
	for code, resp := range responses {
		status, err := strconv.Atoi(code)
		if err != nil {
			t.Errorf("response code %q is not a number", code)
			continue
		}
		resp := asMap(deref(t, doc, resp))
		if status >= 400 && r.node {
			if _, ok := asMap(resp["content"])[api.ContentTypeProblem]; !ok {
				t.Errorf("%d response is not %s", status, api.ContentTypeProblem)
			}
		}
		if status == 503 {
			if _, ok := asMap(resp["headers"])["Retry-After"]; !ok {
				t.Errorf("503 response has no Retry-After header")
			}
		}
	}
}

func hasIdempotencyHeader(doc map[string]any, op map[string]any) bool {
	for _, p := range asSlice(op["parameters"]) {
		p := asMap(derefNoFail(doc, p))
		if p["in"] == "header" && strings.EqualFold(fmt.Sprint(p["name"]), "Idempotency-Key") && p["required"] == true {
			return true
		}
	}
	return false
}

// TestOpenAPISchemasMatchWireTypes compares each component schema with the
// JSON encoding of its Go type: the same property names, required exactly
// when the field is always present (responses), closed when the server
// refuses unknown fields (requests), and base64 for every []byte.
func TestOpenAPISchemasMatchWireTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	schemas := asMap(asMap(doc["components"])["schemas"])
	tests := []struct {
		schema  string
		typ     any
		request bool // decoded with DisallowUnknownFields
	}{
		{"Digest", api.Digest{}, true},
		{"SignRequest", api.SignRequest{}, true},
		{"SignResponse", api.SignResponse{}, false},
		{"VerifyRequest", api.VerifyRequest{}, true},
		{"VerifyResponse", api.VerifyResponse{}, false},
		{"KeyVersion", api.KeyVersion{}, false},
		{"Key", api.Key{}, false},
		{"KeyList", api.KeyList{}, false},
		{"BatchSignRequest", api.BatchSignRequest{}, true},
		{"BatchSignItem", api.BatchSignItem{}, true},
		{"BatchSignResponse", api.BatchSignResponse{}, false},
		{"BatchSignResult", api.BatchSignResult{}, false},
		{"Problem", api.Problem{}, false},
		{"InclusionProof", auditlog.InclusionProof{}, false},
		{"ConsistencyProof", auditlog.ConsistencyProof{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			s, ok := schemas[tt.schema].(map[string]any)
			if !ok {
				t.Fatalf("components.schemas.%s is missing", tt.schema)
			}
			fields := jsonFields(reflect.TypeOf(tt.typ))
			props := asMap(s["properties"])
			var want, got, wantReq []string
			for name, f := range fields {
				want = append(want, name)
				if !f.omitempty {
					wantReq = append(wantReq, name)
				}
				if f.bytes {
					p := asMap(deref(t, doc, props[name]))
					if p["contentEncoding"] != "base64" {
						t.Errorf("property %q is []byte (base64 on the wire) but has no contentEncoding: base64", name)
					}
				}
			}
			for name := range props {
				got = append(got, name)
			}
			sort.Strings(want)
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Errorf("properties = %v, want the JSON fields of %T: %v", got, tt.typ, want)
			}
			req := stringsOf(s["required"])
			for _, r := range req {
				if _, ok := fields[r]; !ok {
					t.Errorf("required names %q, which %T does not have", r, tt.typ)
				}
			}
			if tt.request {
				if s["additionalProperties"] != false {
					t.Errorf("the server refuses unknown fields; say additionalProperties: false")
				}
				return
			}
			sort.Strings(req)
			sort.Strings(wantReq)
			if !slices.Equal(req, wantReq) {
				t.Errorf("required = %v, want the fields without omitempty: %v", req, wantReq)
			}
		})
	}
}

// TestDocsListEveryProblemType checks that every problem type constant of
// internal/api is explained in docs/api.md and listed in the OpenAPI Problem
// schema, and that neither names a type the code does not define.
func TestDocsListEveryProblemType(t *testing.T) {
	types := problemTypes(t)
	md, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := loadOpenAPI(t)
	problem := asMap(asMap(asMap(asMap(doc["components"])["schemas"])["Problem"])["properties"])
	enum := stringsOf(asMap(problem["type"])["enum"])

	for name, uri := range types {
		if !strings.Contains(string(md), uri) {
			t.Errorf("docs/api.md does not document api.%s (%s)", name, uri)
		}
		if !slices.Contains(enum, uri) {
			t.Errorf("docs/openapi.yaml Problem.type enum lacks api.%s (%s)", name, uri)
		}
	}
	known := map[string]bool{"about:blank": true}
	for _, uri := range types {
		known[uri] = true
	}
	for _, uri := range enum {
		if !known[uri] {
			t.Errorf("docs/openapi.yaml Problem.type lists %s, which internal/api does not define", uri)
		}
	}
	re := regexp.MustCompile(regexp.QuoteMeta(api.TypeBase) + `[a-z0-9-]+`)
	for _, uri := range re.FindAllString(string(md), -1) {
		if !known[uri] {
			t.Errorf("docs/api.md mentions %s, which internal/api does not define", uri)
		}
	}
}

// TestAPIDocMentionsEveryPath checks that docs/api.md covers every
// documented endpoint (each has a section with a curl example).
func TestAPIDocMentionsEveryPath(t *testing.T) {
	md, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range operations(t, loadOpenAPI(t)) {
		if !strings.Contains(string(md), op.path) {
			t.Errorf("docs/api.md does not mention %s", op.path)
		}
	}
}

// TestOpenAPIRefsResolve catches a $ref to a renamed or deleted component.
func TestOpenAPIRefsResolve(t *testing.T) {
	doc := loadOpenAPI(t)
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := pointer(doc, ref); err != nil {
					t.Errorf("%s: %v", at, err)
				}
			}
			for k, x := range v {
				walk(x, at+"/"+k)
			}
		case []any:
			for i, x := range v {
				walk(x, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "#")
}

// --- the OpenAPI document ---

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", openAPIPath, err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("%s: openapi = %q, want 3.1.x", openAPIPath, v)
	}
	return doc
}

type operation struct {
	method string // upper case
	path   string
	body   map[string]any
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func operations(t *testing.T, doc map[string]any) []operation {
	t.Helper()
	var ops []operation
	for path, item := range asMap(doc["paths"]) {
		for key, op := range asMap(item) {
			if !slices.Contains(httpMethods, key) {
				continue
			}
			ops = append(ops, operation{method: strings.ToUpper(key), path: path, body: asMap(op)})
		}
	}
	if len(ops) == 0 {
		t.Fatalf("%s has no operations", openAPIPath)
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].path+ops[i].method < ops[j].path+ops[j].method })
	return ops
}

// serves reports whether the route answers the documented operation.
func (r route) serves(op operation) bool {
	if r.method != "" && r.method != op.method {
		return false
	}
	if r.prefix() {
		return strings.HasPrefix(op.path, r.path) && len(op.path) > len(r.path)
	}
	return normalizeWildcards(r.path) == normalizeWildcards(op.path)
}

var wildcard = regexp.MustCompile(`\{[^}]*\}`)

// normalizeWildcards makes "/v1/keys/{name}" and "/v1/keys/{key}" equal.
func normalizeWildcards(p string) string { return wildcard.ReplaceAllString(p, "{}") }

func deref(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	for i := 0; i < 10; i++ {
		ref, ok := asMap(v)["$ref"].(string)
		if !ok {
			return v
		}
		var err error
		if v, err = pointer(doc, ref); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("$ref chain longer than 10")
	return nil
}

func derefNoFail(doc map[string]any, v any) any {
	if ref, ok := asMap(v)["$ref"].(string); ok {
		if r, err := pointer(doc, ref); err == nil {
			return r
		}
	}
	return v
}

// pointer resolves a local JSON pointer reference ("#/a/b").
func pointer(doc map[string]any, ref string) (any, error) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not local", ref)
	}
	var cur any = doc
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not inside an object", ref, tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("$ref %q: no %q", ref, tok)
		}
	}
	return cur, nil
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

func stringsOf(v any) []string {
	var out []string
	for _, x := range asSlice(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// --- the Go wire types ---

type jsonField struct {
	omitempty bool
	bytes     bool
}

// jsonFields lists the JSON names encoding/json gives t's fields, with
// embedded structs flattened.
func jsonFields(t reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for n, jf := range jsonFields(f.Type) {
				out[n] = jf
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = jsonField{
			omitempty: slices.Contains(strings.Split(opts, ","), "omitempty"),
			bytes:     f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Uint8,
		}
	}
	return out
}

// --- routes, read from the source ---

// nodeRoutes parses this package's source and returns the patterns that
// (*Server).routes registers, except the catch-all.
func nodeRoutes(t *testing.T) []route {
	t.Helper()
	consts, files := parseDir(t, ".")
	fn := findFunc(files, "routes", true)
	if fn == nil {
		t.Fatal("no (*Server).routes method in package node; teach openapi_test.go where routes are registered")
	}
	var routes []route
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || !isMuxRegistration(call) {
			return true
		}
		pattern, err := evalString(call.Args[0], consts)
		if err != nil {
			// The Extra loop mounts handlers from Config (the audit log
			// API, checked from its own source below); any other pattern
			// that is not a constant string cannot be checked.
			if id, isIdent := call.Args[0].(*ast.Ident); !isIdent || !rangesOverExtra(fn.Body, id.Name) {
				t.Errorf("routes(): pattern %s: %v; openapi_test.go cannot check it", exprString(call.Args[0]), err)
			}
			return true
		}
		r := parsePattern(pattern)
		r.node = true
		r.authed, r.handler = authedHandler(call.Args[1])
		if r.path != catchAll {
			routes = append(routes, r)
		}
		return true
	})
	if len(routes) < 5 {
		t.Fatalf("found only %d routes in routes(); the parser in openapi_test.go is out of date", len(routes))
	}
	return routes
}

// auditRoutes reads the audit log read API's patterns from the source of
// auditlog.Handler, which the node mounts under auditlog.PathPrefix.
func auditRoutes(t *testing.T) []route {
	t.Helper()
	consts, files := parseDir(t, "../auditlog")
	fn := findFunc(files, "Handler", false)
	if fn == nil {
		t.Fatal("no auditlog.Handler; teach openapi_test.go where the audit routes are registered")
	}
	var routes []route
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || !isMuxRegistration(call) {
			return true
		}
		pattern, err := evalString(call.Args[0], consts)
		if err != nil {
			t.Errorf("auditlog.Handler: pattern %s: %v", exprString(call.Args[0]), err)
			return true
		}
		routes = append(routes, parsePattern(pattern))
		return true
	})
	if len(routes) == 0 {
		t.Fatal("found no routes in auditlog.Handler")
	}
	for _, r := range routes {
		if !strings.HasPrefix(r.path, auditlog.PathPrefix) {
			t.Errorf("audit route %q is outside %s", r, auditlog.PathPrefix)
		}
	}
	return routes
}

// handlersCallingIdempotencyKey returns the Server methods whose body calls
// idempotencyKey, i.e. that require the Idempotency-Key header.
func handlersCallingIdempotencyKey(t *testing.T) map[string]bool {
	t.Helper()
	_, files := parseDir(t, ".")
	out := map[string]bool{}
	for _, f := range files {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if call, ok := n.(*ast.CallExpr); ok {
					if id, ok := call.Fun.(*ast.Ident); ok && id.Name == "idempotencyKey" {
						out[fn.Name.Name] = true
					}
				}
				return true
			})
		}
	}
	if len(out) == 0 {
		t.Fatal("no handler calls idempotencyKey; teach openapi_test.go how the Idempotency-Key is read")
	}
	return out
}

func parseDir(t *testing.T, dir string) (consts map[string]string, files []*ast.File) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	consts = map[string]string{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := stringLit(vs.Values[i]); ok {
							consts[n.Name] = s
						}
					}
				}
			}
		}
	}
	return consts, files
}

func findFunc(files []*ast.File, name string, method bool) *ast.FuncDecl {
	for _, f := range files {
		for _, d := range f.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == name && (fn.Recv != nil) == method && fn.Body != nil {
				return fn
			}
		}
	}
	return nil
}

// isMuxRegistration matches x.Handle(pattern, h) and x.HandleFunc(pattern, h).
func isMuxRegistration(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && (sel.Sel.Name == "Handle" || sel.Sel.Name == "HandleFunc") && len(call.Args) == 2
}

// authedHandler reports whether h is s.authed(name, s.handler).
func authedHandler(h ast.Expr) (authed bool, handler string) {
	call, ok := h.(*ast.CallExpr)
	if !ok {
		if sel, ok := h.(*ast.SelectorExpr); ok {
			return false, sel.Sel.Name
		}
		return false, ""
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "authed" {
		return false, ""
	}
	for _, a := range call.Args {
		if s, ok := a.(*ast.SelectorExpr); ok {
			return true, s.Sel.Name
		}
	}
	return true, ""
}

// rangesOverExtra reports whether name is the key of a range over
// something.Extra inside body.
func rangesOverExtra(body *ast.BlockStmt, name string) bool {
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		rs, ok := n.(*ast.RangeStmt)
		if !ok {
			return true
		}
		key, _ := rs.Key.(*ast.Ident)
		sel, _ := rs.X.(*ast.SelectorExpr)
		if key != nil && key.Name == name && sel != nil && sel.Sel.Name == "Extra" {
			found = true
		}
		return !found
	})
	return found
}

func parsePattern(p string) route {
	method, path, ok := strings.Cut(p, " ")
	if !ok {
		return route{path: p}
	}
	return route{method: method, path: strings.TrimSpace(path)}
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// evalString evaluates a concatenation of string literals and string
// constants of the package.
func evalString(e ast.Expr, consts map[string]string) (string, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if s, ok := stringLit(e); ok {
			return s, nil
		}
	case *ast.Ident:
		if s, ok := consts[e.Name]; ok {
			return s, nil
		}
		return "", fmt.Errorf("%s is not a string constant of the package", e.Name)
	case *ast.ParenExpr:
		return evalString(e.X, consts)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			x, err := evalString(e.X, consts)
			if err != nil {
				return "", err
			}
			y, err := evalString(e.Y, consts)
			return x + y, err
		}
	}
	return "", fmt.Errorf("cannot evaluate %s", exprString(e))
}

func exprString(e ast.Expr) string { return types.ExprString(e) }

// problemTypes reads every problem type constant (Type*, except TypeBase)
// from internal/api/problem.go's source, with its value.
func problemTypes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../api/problem.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	var names []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				v, err := evalString(vs.Values[i], consts)
				if err != nil {
					continue // not a string constant
				}
				consts[n.Name] = v
				if strings.HasPrefix(n.Name, "Type") && n.Name != "TypeBase" {
					names = append(names, n.Name)
				}
			}
		}
	}
	out := map[string]string{}
	for _, n := range names {
		out[n] = consts[n]
	}
	if len(out) < 10 || out["TypeMalformed"] != api.TypeMalformed {
		t.Fatalf("read %d problem types from internal/api/problem.go (TypeMalformed = %q); the parser in openapi_test.go is out of date", len(out), out["TypeMalformed"])
	}
	return out
}
