package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// No container engine runs on the development machines, so `docker build`
// cannot be tested here. These tests check what can go wrong without one:
// the build context and the COPY instructions cover every file
// `go build ./cmd/countersign` reads, the toolchain image matches go.mod,
// and the runtime runs the binary as a numeric non-root user.

const repoRoot = "../.."

type instruction struct {
	cmd  string // upper case
	args string
	line int
}

// dockerfile parses the repository's Dockerfile into instructions (joining
// continuation lines, dropping comments).
func dockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if len(out) == 0 {
		t.Fatal("Dockerfile has no instructions")
	}
	return out
}

// ignoreRule is one .dockerignore line as a regexp over slash paths.
type ignoreRule struct {
	re      *regexp.Regexp
	exclude bool
}

func dockerignore(t *testing.T) []ignoreRule {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []ignoreRule
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{exclude: true}
		if p, ok := strings.CutPrefix(line, "!"); ok {
			line, r.exclude = p, false
		}
		line = strings.Trim(filepath.ToSlash(filepath.Clean(line)), "/")
		var re strings.Builder
		for i := 0; i < len(line); i++ {
			switch {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString(`(.*/)?`)
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(`.*`)
				i++
			case line[i] == '*':
				re.WriteString(`[^/]*`)
			case line[i] == '?':
				re.WriteString(`[^/]`)
			default:
				re.WriteString(regexp.QuoteMeta(line[i : i+1]))
			}
		}
		r.re = regexp.MustCompile(`^` + re.String() + `$`)
		rules = append(rules, r)
	}
	return rules
}

// ignored applies Docker's rule: the last pattern matching the path or
// one of its parent directories decides.
func ignored(rules []ignoreRule, path string) bool {
	out := false
	for _, r := range rules {
		for p := path; p != "."; p = filepath.ToSlash(filepath.Dir(p)) {
			if r.re.MatchString(p) {
				out = r.exclude
				break
			}
		}
	}
	return out
}

// buildInputs lists, relative to the repository root, every file of the
// main module that `go build ./cmd/countersign` reads with cgo on.
func buildInputs(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,CgoFiles,CFiles,HFiles,EmbedFiles", "./cmd/countersign")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/countersign: %v\n%s", err, stderr.String())
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			Dir                                           string
			Module                                        *struct{ Main bool }
			GoFiles, CgoFiles, CFiles, HFiles, EmbedFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, list := range [][]string{p.GoFiles, p.CgoFiles, p.CFiles, p.HFiles, p.EmbedFiles} {
			for _, f := range list {
				files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if len(files) < 50 {
		t.Fatalf("go list found only %d files of the main module; the parse is wrong", len(files))
	}
	return files
}

func TestDockerBuildContextHasEverySource(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	var copied []string
	for _, in := range dockerfile(t) {
		if in.cmd != "COPY" || strings.Contains(in.args, "--from=") {
			continue
		}
		fields := strings.Fields(in.args)
		for _, src := range fields[:len(fields)-1] {
			src = strings.TrimSuffix(src, "/")
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("Dockerfile line %d: COPY source %s: %v", in.line, src, err)
			}
			copied = append(copied, src)
		}
	}
	rules := dockerignore(t)
	for _, f := range buildInputs(t) {
		inCopy := false
		for _, c := range copied {
			inCopy = inCopy || f == c || strings.HasPrefix(f, c+"/")
		}
		if !inCopy {
			t.Errorf("%s is read by go build but no COPY brings it into the image build", f)
		}
		if ignored(rules, f) {
			t.Errorf("%s is read by go build but .dockerignore leaves it out of the context", f)
		}
	}
	// The allow-list keeps what must never reach a build context out.
	for _, f := range []string{".git/config", "bin/countersign", "world/countersign.json", "data/passphrase",
		"internal/node/server_test.go", "internal/sign/testdata/x.pem", "deploy/kubernetes/overlays/dev/kustomization.yaml"} {
		if !ignored(rules, f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

func TestDockerfileStages(t *testing.T) {
	ins := dockerfile(t)
	args := map[string]string{}
	var froms []string
	var last []instruction // instructions of the final stage
	var stages [][]instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if k, v, ok := strings.Cut(in.args, "="); ok {
				args[k] = v
			}
		case "FROM":
			froms = append(froms, in.args)
			if last != nil {
				stages = append(stages, last)
			}
			last = nil
		}
		last = append(last, in)
	}
	if len(froms) != 3 || !strings.HasSuffix(froms[0], " AS build") || !strings.HasSuffix(froms[1], " AS control") {
		t.Fatalf("want a build stage, the control stage and the default runtime stage last, got FROM %v", froms)
	}
	// The control plane's image carries pg_dump (step 4 on PostgreSQL) and
	// runs as the same non-root user.
	var pgClient, controlUser bool
	for _, in := range stages[len(stages)-1] {
		pgClient = pgClient || (in.cmd == "RUN" && strings.Contains(in.args, "postgresql-client-${PG_MAJOR}"))
		controlUser = controlUser || (in.cmd == "USER" && in.args == "65532:65532")
	}
	if !pgClient || !controlUser {
		t.Errorf("control stage: installs postgresql-client=%v, USER 65532:65532=%v; want both", pgClient, controlUser)
	}
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	// GOTOOLCHAIN=local: the builder's Go must be go.mod's, not newer.
	if want := "golang:" + string(goLine[1]) + "-"; !strings.HasPrefix(args["GO_IMAGE"], want) {
		t.Errorf("ARG GO_IMAGE=%s, want an image of Go %s (%s...)", args["GO_IMAGE"], goLine[1], want)
	}
	var user, entry, copyTo string
	for _, in := range last {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entry = in.args
		case "COPY":
			if f := strings.Fields(in.args); strings.HasPrefix(f[0], "--from=") {
				copyTo = f[len(f)-1]
			}
		}
	}
	if !regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`).MatchString(user) {
		t.Errorf("runtime stage USER %q, want numeric non-root uid:gid (the kubelet checks runAsNonRoot by number)", user)
	}
	if user != "65532:65532" {
		t.Errorf("runtime stage USER %q, want 65532:65532, the runAsUser/runAsGroup of the manifests", user)
	}
	if entry != `["`+copyTo+`"]` {
		t.Errorf("ENTRYPOINT %s, want the binary the runtime stage copies in, [%q]", entry, copyTo)
	}
}
