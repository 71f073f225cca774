package manifests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var binary struct {
	once sync.Once
	dir  string // removed by TestMain
	path string
	err  error
	out  []byte
}

// countersign builds the binary the image carries, once per test binary
// (a few seconds from a warm build cache).
func countersign(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			binary.err = err
			return
		}
		if binary.dir, binary.err = os.MkdirTemp("", "countersign-manifests-"); binary.err != nil {
			return
		}
		binary.path = filepath.Join(binary.dir, "countersign")
		cmd := exec.Command("go", "build", "-o", binary.path, "./cmd/countersign")
		cmd.Dir = dir
		binary.out, binary.err = cmd.CombinedOutput()
	})
	if binary.err != nil {
		t.Fatalf("go build ./cmd/countersign: %v\n%s", binary.err, binary.out)
	}
	return binary.path
}

var helpFlagRE = regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`)

// flagsOf returns the flags `countersign <sub> -h` lists.
func flagsOf(t *testing.T, bin, sub string) []string {
	t.Helper()
	cmd := exec.Command(bin, sub, "-h")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("countersign %s -h: %v\n%s", sub, err, out.String())
	}
	var flags []string
	for _, m := range helpFlagRE.FindAllStringSubmatch(out.String(), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("countersign %s -h lists no flags:\n%s", sub, out.String())
	}
	return flags
}

// TestManifestsRunRealCommands checks each container's command line
// against the binary: the subcommand exists, every flag is one it
// defines, and every $(VAR) is a variable of the container (Kubernetes
// leaves an undefined one in the argument as written).
func TestManifestsRunRealCommands(t *testing.T) {
	bin := countersign(t)
	known := map[string][]string{}
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			for _, d := range r.deployments {
				for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
					if !strings.HasPrefix(c.Image, "countersign") && !strings.Contains(c.Image, "/countersign") {
						continue // not our image
					}
					where := "Deployment " + d.Name + " container " + c.Name
					if len(c.Command) > 0 || len(c.Args) == 0 {
						t.Errorf("%s: want the image's entrypoint with args `<subcommand> --flag=value...`, got command %v args %v", where, c.Command, c.Args)
						continue
					}
					sub := c.Args[0]
					if _, ok := known[sub]; !ok {
						known[sub] = flagsOf(t, bin, sub)
					}
					checkArgs(t, where, c, known[sub])
				}
			}
		})
	}
}

var varRefRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkArgs(t *testing.T, where string, c corev1.Container, flags []string) {
	t.Helper()
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, a := range c.Args[1:] {
		name, _, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("%s: argument %q: write flags as --name=value (a value never becomes a separate argument)", where, a)
			continue
		}
		if !slices.Contains(flags, name) {
			t.Errorf("%s: `countersign %s` has no flag --%s (it has %v)", where, c.Args[0], name, flags)
		}
		for _, m := range varRefRE.FindAllStringSubmatch(a, -1) {
			if !env[m[1]] {
				t.Errorf("%s: argument %q refers to $(%s), which the container's env does not define", where, a, m[1])
			}
		}
	}
}
