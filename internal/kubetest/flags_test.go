package kubetest

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// These tests need no binaries: they cover the pure helpers Start is made of.

func TestTokenFileLine(t *testing.T) {
	got, err := tokenFileLine("t0k", "admin", "uid-1", "system:masters", "dev")
	if err != nil {
		t.Fatal(err)
	}
	if want := "t0k,admin,uid-1,\"system:masters,dev\"\n"; got != want {
		t.Errorf("tokenFileLine = %q, want %q", got, want)
	}
	for _, bad := range [][]string{{"", "u", "i"}, {"t,x", "u", "i"}, {"t", "u\"", "i"}, {"t", "u", "i", "g\n"}} {
		if _, err := tokenFileLine(bad[0], bad[1], bad[2], bad[3:]...); err == nil {
			t.Errorf("tokenFileLine(%q) = nil error, want one", bad)
		}
	}
}

func TestRenderKubeconfigRoundTrip(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	data, err := renderKubeconfig("https://127.0.0.1:6443", ca, "system:serviceaccount:ns:sa", "secret-token", "ns")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatalf("clientcmd.Load: %v", err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("current context %q missing", cfg.CurrentContext)
	}
	if got := cfg.Clusters[ctx.Cluster].Server; got != "https://127.0.0.1:6443" {
		t.Errorf("server = %q", got)
	}
	if got := string(cfg.Clusters[ctx.Cluster].CertificateAuthorityData); got != string(ca) {
		t.Errorf("CA data = %q, want %q", got, ca)
	}
	if got := cfg.AuthInfos[ctx.AuthInfo].Token; got != "secret-token" {
		t.Errorf("token = %q", got)
	}
	if ctx.Namespace != "ns" {
		t.Errorf("namespace = %q, want ns", ctx.Namespace)
	}
}

func TestProcessArgs(t *testing.T) {
	l := layout{Dir: "/d"}
	p := ports{EtcdClient: 10001, EtcdPeer: 10002, APIServer: 10003}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"etcd", etcdArgs(l, p), []string{
			"--listen-client-urls=http://127.0.0.1:10001", "--listen-peer-urls=http://127.0.0.1:10002",
			"--initial-cluster=kubetest=http://127.0.0.1:10002", "--data-dir=/d/etcd", "--unsafe-no-fsync",
		}},
		{"kube-apiserver", apiserverArgs(l, p), []string{
			"--etcd-servers=http://127.0.0.1:10001", "--secure-port=10003", "--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none", "--authorization-mode=Node,RBAC",
			"--token-auth-file=/d/tokens.csv", "--service-account-signing-key-file=/d/sa.key",
			"--service-account-key-file=/d/sa.pub", "--service-cluster-ip-range=10.96.0.0/16",
			"--tls-cert-file=/d/apiserver.crt", "--client-ca-file=/d/ca.crt",
		}},
		{"kube-controller-manager", controllerManagerArgs(l), []string{
			"--kubeconfig=/d/kubeconfig", "--secure-port=0", "--leader-elect=false",
			"--service-account-private-key-file=/d/sa.key", "--root-ca-file=/d/ca.crt",
		}},
		{"kube-scheduler", schedulerArgs(l), []string{"--kubeconfig=/d/kubeconfig", "--secure-port=0", "--leader-elect=false"}},
		{"kwok", kwokArgs(l, []string{"/m/a.yaml", "/m/b.yaml"}), []string{
			"--kubeconfig=/d/kubeconfig", "--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake", "--config=/m/a.yaml", "--config=/m/b.yaml",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, w := range tt.want {
				if !slices.Contains(tt.args, w) {
					t.Errorf("args lack %q; got %q", w, tt.args)
				}
			}
		})
	}
}

func TestTailLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"a\nb\nc\n\n", 1, "c"},
		{"only", 1, "only"},
		{"a\nb", 0, ""},
	}
	for _, tt := range tests {
		if got := tailLines([]byte(tt.in), tt.n); got != tt.want {
			t.Errorf("tailLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ps, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if p <= 0 || seen[p] {
			t.Fatalf("freePorts(5) = %v: want 5 distinct positive ports", ps)
		}
		seen[p] = true
	}
}

func TestStartNamesMissingBinaryAndBuildCommand(t *testing.T) {
	dir := t.TempDir()
	// Only etcd present: every other binary must be named.
	if err := os.WriteFile(filepath.Join(dir, "etcd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(binEnv, dir)
	_, err := Start(t.Context(), Options{})
	if err == nil {
		t.Fatal("Start with no binaries returned nil error")
	}
	msg := err.Error()
	for _, want := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", dir, buildCommand} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if want := "missing kube-apiserver, kube-controller-manager, kube-scheduler, kwok in "; !strings.Contains(msg, want) {
		t.Errorf("error %q: want exactly the absent binaries (%q), etcd is present", msg, want)
	}
}

func TestBinDirDefault(t *testing.T) {
	t.Setenv(binEnv, "")
	t.Setenv("HOME", "/home/x")
	got, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := "/home/x/.cache/countersign/kube-v1.37.2/bin"; got != want {
		t.Errorf("binDir() = %q, want %q", got, want)
	}
}

func TestParseDownloadDir(t *testing.T) {
	out := []byte(`{"Path":"a.example/x","Version":"v1.0.0","Dir":"/mod/x"}
{"Path":"sigs.k8s.io/kwok","Version":"v0.8.0","Dir":"/mod/kwok@v0.8.0"}`)
	got, err := parseDownloadDir(out, "sigs.k8s.io/kwok")
	if err != nil || got != "/mod/kwok@v0.8.0" {
		t.Errorf("parseDownloadDir = %q, %v; want /mod/kwok@v0.8.0", got, err)
	}
	if _, err := parseDownloadDir(out, "sigs.k8s.io/gateway-api"); err == nil {
		t.Error("parseDownloadDir of an unreported module: nil error")
	}
	bad := []byte(`{"Path":"sigs.k8s.io/kwok","Version":"v9.9.9","Error":"unknown revision"}`)
	if _, err := parseDownloadDir(bad, "sigs.k8s.io/kwok"); err == nil || !strings.Contains(err.Error(), "unknown revision") {
		t.Errorf("parseDownloadDir with Error: %v", err)
	}
}

func TestReadManifests(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"b.yaml": "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: b.example.com\n",
		"a.yaml": "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n---\n# comment only\n---\n" +
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\n",
		"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n",
		"notes.txt":          "not yaml",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := readManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	want := []string{"ConfigMap/one", "ConfigMap/two", "CustomResourceDefinition/b.example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("readManifests = %q, want %q", got, want)
	}
}

func TestKWOKNode(t *testing.T) {
	n := kwokNode(nodeName(3))
	if n.Name != "kwok-node-3" || n.Annotations[kwokNodeAnnotation] != "fake" {
		t.Errorf("node %s annotations %v: want kwok-node-3 with %s=fake", n.Name, n.Annotations, kwokNodeAnnotation)
	}
	if pods := n.Status.Allocatable.Pods().Value(); pods < 100 {
		t.Errorf("allocatable pods = %s, want >= 100", strconv.FormatInt(pods, 10))
	}
	if len(n.Spec.Taints) != 0 {
		t.Errorf("taints %v: a tainted node would keep test pods Pending", n.Spec.Taints)
	}
}

// TestStartFailureCarriesLogsAndCleansUp runs Start against stand-in
// binaries that print a line and exit: the error must say which process
// exited and quote its log; a temporary Dir Start made is removed, a Dir the
// caller gave is kept for its logs.
func TestStartFailureCarriesLogsAndCleansUp(t *testing.T) {
	if _, err := kwokStageFiles(); err != nil {
		t.Fatalf("KWOK stages from tools/kube: %v", err)
	}
	bin := t.TempDir()
	for _, b := range binaries {
		script := "#!/bin/sh\necho \"stand-in " + b + " failing\" >&2\nexit 3\n"
		if err := os.WriteFile(filepath.Join(bin, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(binEnv, bin)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where Start makes its own Dir

	_, err := Start(t.Context(), Options{})
	if err == nil {
		t.Fatal("Start with failing binaries returned nil error")
	}
	msg := err.Error()
	for _, want := range []string{"exited", "waiting for kube-apiserver /readyz", "stand-in etcd failing", "etcd.log"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("Start left %v in its temporary directory's parent", left)
	}

	dir := filepath.Join(t.TempDir(), "cluster")
	if _, err := Start(t.Context(), Options{Dir: dir}); err == nil {
		t.Fatal("Start with failing binaries and a Dir returned nil error")
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd.log")); err != nil {
		t.Errorf("log not kept in the given Dir: %v", err)
	}
}
