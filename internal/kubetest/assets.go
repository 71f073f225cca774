package kubetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// kubeVersion is the Kubernetes release the test bed runs (tools/kube/go.mod).
const kubeVersion = "v1.37.2"

// binEnv names the environment variable holding the binary directory.
const binEnv = "COUNTERSIGN_KUBE_BIN"

// buildCommand is the command that builds the binaries Start runs.
const buildCommand = "bash scripts/kube-testbed.sh build"

// binaries are the programs Start runs, all built by buildCommand.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

const mainModule = "github.com/countersign/countersign"

// binDir is $COUNTERSIGN_KUBE_BIN, or $HOME/.cache/countersign/kube-v1.37.2/bin.
func binDir() (string, error) {
	if d := os.Getenv(binEnv); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("kubetest: %s is unset and the home directory is unknown: %w", binEnv, err)
	}
	return filepath.Join(home, ".cache", "countersign", "kube-"+kubeVersion, "bin"), nil
}

// binaryPaths returns the path of every binary in dir, or an error naming
// the missing ones and the command that builds them.
func binaryPaths(dir string) (map[string]string, error) {
	paths := map[string]string{}
	var missing []string
	for _, b := range binaries {
		p := filepath.Join(dir, b)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
			continue
		}
		paths[b] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kubetest: missing %s in %s (%s); build them with `%s` from the repository root "+
			"(10–20 min from a cold Go cache, seconds when up to date)",
			strings.Join(missing, ", "), dir, binEnv, buildCommand)
	}
	return paths, nil
}

// toolsModuleDir finds tools/kube by walking up from the working directory
// to the main module's root (go test runs in the package directory).
func toolsModuleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	for {
		if isMainModuleRoot(dir) {
			return filepath.Join(dir, "tools", "kube"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kubetest: no directory above the working directory holds the go.mod of %s "+
				"(needed to find tools/kube)", mainModule)
		}
		dir = parent
	}
}

func isMainModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == mainModule
		}
	}
	return false
}

var moduleDirs struct {
	mu   sync.Mutex
	dirs map[string]string
}

// moduleDir returns the module-cache directory of modulePath at the version
// tools/kube/go.mod selects: the KWOK stages and the Gateway API CRDs are
// read from there, never copied into the repository.
func moduleDir(modulePath string) (string, error) {
	moduleDirs.mu.Lock()
	defer moduleDirs.mu.Unlock()
	if d, ok := moduleDirs.dirs[modulePath]; ok {
		return d, nil
	}
	tools, err := toolsModuleDir()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "mod", "download", "-json", modulePath)
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kubetest: go mod download -json %s in %s: %w: %s", modulePath, tools, err,
			strings.TrimSpace(stderr.String()))
	}
	dir, err := parseDownloadDir(out, modulePath)
	if err != nil {
		return "", err
	}
	if moduleDirs.dirs == nil {
		moduleDirs.dirs = map[string]string{}
	}
	moduleDirs.dirs[modulePath] = dir
	return dir, nil
}

// parseDownloadDir reads the .Dir of modulePath from `go mod download -json`
// output (a stream of JSON objects).
func parseDownloadDir(out []byte, modulePath string) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m struct{ Path, Version, Dir, Error string }
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("kubetest: go mod download -json output: %w", err)
		}
		if m.Path != modulePath {
			continue
		}
		if m.Error != "" {
			return "", fmt.Errorf("kubetest: download %s@%s: %s", m.Path, m.Version, m.Error)
		}
		if m.Dir == "" {
			return "", fmt.Errorf("kubetest: go mod download gave no directory for %s@%s", m.Path, m.Version)
		}
		return m.Dir, nil
	}
	return "", fmt.Errorf("kubetest: go mod download -json did not report %s", modulePath)
}

// kwokStages are the "fast" profile's Stage files in the kwok module.
var kwokStages = []string{
	"kustomize/stage/node/fast/node-initialize.yaml",
	"kustomize/stage/node/heartbeat/node-heartbeat.yaml",
	"kustomize/stage/pod/fast/pod-ready.yaml",
	"kustomize/stage/pod/fast/pod-complete.yaml",
	"kustomize/stage/pod/fast/pod-delete.yaml",
}

func kwokStageFiles() ([]string, error) {
	dir, err := moduleDir("sigs.k8s.io/kwok")
	if err != nil {
		return nil, err
	}
	files := make([]string, len(kwokStages))
	for i, s := range kwokStages {
		files[i] = filepath.Join(dir, filepath.FromSlash(s))
		if _, err := os.Stat(files[i]); err != nil {
			return nil, fmt.Errorf("kubetest: KWOK stage: %w", err)
		}
	}
	return files, nil
}
