package kubetest

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// serviceClusterIPRange is the Service IP range of every test cluster. The
// apiserver's serving certificate carries the first address of it
// (the in-cluster "kubernetes" Service).
const serviceClusterIPRange = "10.96.0.0/16"

// kwokNodeAnnotation marks the Node objects the KWOK controller of a test
// cluster manages; kwok runs with --manage-nodes-with-annotation-selector
// set to exactly this key=value.
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// ports are the loopback ports one cluster listens on.
type ports struct {
	EtcdClient, EtcdPeer, APIServer int
}

// layout names every file of a cluster inside its working directory, so that
// the flag builders below stay pure functions of it.
type layout struct {
	Dir string
}

func (l layout) path(name string) string     { return filepath.Join(l.Dir, name) }
func (l layout) etcdData() string            { return l.path("etcd") }
func (l layout) caCert() string              { return l.path("ca.crt") }
func (l layout) servingCert() string         { return l.path("apiserver.crt") }
func (l layout) servingKey() string          { return l.path("apiserver.key") }
func (l layout) saKey() string               { return l.path("sa.key") }
func (l layout) saPub() string               { return l.path("sa.pub") }
func (l layout) tokenFile() string           { return l.path("tokens.csv") }
func (l layout) kubeconfig() string          { return l.path("kubeconfig") }
func (l layout) log(component string) string { return l.path(component + ".log") }

func loopbackURL(scheme string, port int) string {
	return scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// etcdArgs runs a single-member etcd with every listener on loopback.
// --unsafe-no-fsync: the data is thrown away with the cluster, and fsync is
// what makes etcd slow on shared disks.
func etcdArgs(l layout, p ports) []string {
	client := loopbackURL("http", p.EtcdClient)
	peer := loopbackURL("http", p.EtcdPeer)
	return []string{
		"--name=kubetest",
		"--data-dir=" + l.etcdData(),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=kubetest=" + peer,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

// apiserverArgs: --endpoint-reconciler-type=none because the apiserver
// refuses a loopback advertise address otherwise; Node,RBAC so that RBAC
// tests see the same authorizer chain as a real cluster.
func apiserverArgs(l layout, p ports) []string {
	return []string{
		"--etcd-servers=" + loopbackURL("http", p.EtcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.APIServer),
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + l.servingCert(),
		"--tls-private-key-file=" + l.servingKey(),
		"--client-ca-file=" + l.caCert(),
		"--token-auth-file=" + l.tokenFile(),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + l.saPub(),
		"--service-account-signing-key-file=" + l.saKey(),
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--profiling=false",
	}
}

func controllerManagerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig(),
		"--secure-port=0",
		"--leader-elect=false",
		"--service-account-private-key-file=" + l.saKey(),
		"--root-ca-file=" + l.caCert(),
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--profiling=false",
	}
}

func schedulerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig(),
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
	}
}

// kwokArgs runs KWOK standalone with the given Stage files. It manages only
// the nodes carrying kwokNodeAnnotation=fake, so a stray real node (there is
// none) would never be touched, and it serves nothing (no --server-address).
func kwokArgs(l layout, stages []string) []string {
	args := []string{
		"--kubeconfig=" + l.kubeconfig(),
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
	}
	for _, s := range stages {
		args = append(args, "--config="+s)
	}
	return args
}

// adminUser is the token-file identity of the admin kubeconfig.
const adminUser = "kubetest-admin"

// tokenFileLine renders one line of the apiserver's --token-auth-file:
// token,user,uid,"group1,group2".
func tokenFileLine(token, user, uid string, groups ...string) (string, error) {
	for _, f := range append([]string{token, user, uid}, groups...) {
		if f == "" || strings.ContainsAny(f, ",\"\n\r") {
			return "", fmt.Errorf("kubetest: token file field %q is empty or contains a comma, quote or newline", f)
		}
	}
	line := token + "," + user + "," + uid
	if len(groups) > 0 {
		line += ",\"" + strings.Join(groups, ",") + "\""
	}
	return line + "\n", nil
}

// renderKubeconfig returns a kubeconfig with one cluster, one user
// authenticating with a bearer token, and one current context.
func renderKubeconfig(server string, caPEM []byte, user, token, namespace string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user, Namespace: namespace}
	cfg.CurrentContext = "kubetest"
	return clientcmd.Write(*cfg)
}
