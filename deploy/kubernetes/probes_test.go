package manifests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// testPassphrase opens the soft keys of the installation this test makes.
const testPassphrase = "manifests-test-passphrase"

// TestProbesAnswerOnTheRealBinary starts node, gateway and maintenance
// exactly as the manifests do (their args and literal env; paths, secrets
// and the PostgreSQL store swapped for local stand-ins, ports for free
// loopback ones) and requires every probe of the container to answer 200
// at its path and port. The control plane needs a Kubernetes API and is
// left to the kube tier.
func TestProbesAnswerOnTheRealBinary(t *testing.T) {
	bin := countersign(t)
	r := render(t, overlays[0])
	dir := t.TempDir()
	install := filepath.Join(dir, "install")
	initCmd := exec.Command(bin, "init", "--data", install, "--dev")
	initCmd.Env = append(os.Environ(), "COUNTERSIGN_KEY_PASSPHRASE="+testPassphrase)
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("countersign init: %v\n%s", err, out)
	}
	token := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(token, []byte("manifests-test-admin-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	flags, err := filepath.Abs("base/flags.flagd.json")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{ // in-pod path → stand-in
		"/var/lib/countersign":                    install,
		"/etc/countersign/flags/flags.flagd.json": flags,
		"/etc/countersign/admin-token/token":      token,
		"/var/lib/countersign/admin-token":        token,
	}
	for _, name := range []string{"countersign-node-stable", "countersign-gateway", "countersign-maintenance"} {
		t.Run(name, func(t *testing.T) {
			d := r.deployment(name)
			if d == nil {
				t.Fatalf("no Deployment %s", name)
			}
			c := d.Spec.Template.Spec.Containers[0]
			addrs := startContainer(t, bin, c, paths, filepath.Join(dir, name))
			for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if p == nil {
					continue
				}
				port := p.HTTPGet.Port.IntVal
				for _, cp := range c.Ports {
					if cp.Name == p.HTTPGet.Port.StrVal {
						port = cp.ContainerPort
					}
				}
				url := "http://" + addrs[port] + p.HTTPGet.Path
				if err := waitOK(t.Context(), url, 30*time.Second); err != nil {
					t.Errorf("%s probe %s (container port %d): %v", kind, p.HTTPGet.Path, port, err)
				}
			}
		})
	}
}

// startContainer runs c's command line on this machine and returns, for
// each container port, the loopback address the process listens on there.
func startContainer(t *testing.T, bin string, c corev1.Container, paths map[string]string, work string) map[int32]string {
	t.Helper()
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"POD_NAME": "manifests-test-0", "POD_NAMESPACE": Namespace}
	var environ []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.Name == "COUNTERSIGN_KEY_PASSPHRASE":
			v = testPassphrase
		case e.ValueFrom.FieldRef != nil:
			v = env[e.Name]
		default:
			continue // no NATS, no PostgreSQL password: the stand-ins need none
		}
		v = expand(v, env)
		env[e.Name] = v
		environ = append(environ, e.Name+"="+v)
	}
	addrs := map[int32]string{}
	var args []string
	for _, a := range c.Args[1:] {
		name, val, _ := strings.Cut(a, "=")
		val = expand(val, env)
		if host, port, err := net.SplitHostPort(val); err == nil && (host == "" || host == "0.0.0.0") {
			n, _ := strconv.Atoi(port)
			addrs[int32(n)] = freeAddr(t)
			val = addrs[int32(n)]
		} else if p, ok := paths[val]; ok {
			val = p
		} else if name == "--store" {
			val = "sqlite:" + filepath.Join(work, "store.db")
			args = append(args, "--migrate")
		}
		args = append(args, name+"="+val)
	}
	for _, p := range c.Ports {
		if addrs[p.ContainerPort] == "" {
			t.Fatalf("container port %d (%s) is not where any argument listens", p.ContainerPort, p.Name)
		}
	}
	cmd := exec.Command(bin, append([]string{c.Args[0]}, args...)...)
	cmd.Env = append(append(os.Environ(), environ...), "TMPDIR="+work)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("countersign %s %s:\n%s", c.Args[0], strings.Join(args, " "), out.String())
		}
	})
	return addrs
}

// expand replaces $(VAR) as the kubelet does.
func expand(s string, env map[string]string) string {
	return varRefRE.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitOK polls url until it answers 200.
func waitOK(ctx context.Context, url string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := "no answer"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: %s after %s", url, last, limit)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
