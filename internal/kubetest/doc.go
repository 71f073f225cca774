// Package kubetest runs a real Kubernetes control plane for the `kube` test
// tier: etcd, kube-apiserver, kube-controller-manager and kube-scheduler of
// Kubernetes v1.37.2, plus KWOK, which plays the kubelet for annotated Node
// objects so that pods become Running and Ready without a container runtime.
// Deployments, ReplicaSets, scaling, rollout history, RBAC, TokenRequest and
// Gateway API CRDs behave as on a real cluster; nothing runs in the pods.
//
// Start builds nothing. It runs the binaries `scripts/kube-testbed.sh build`
// puts in $COUNTERSIGN_KUBE_BIN (default
// $HOME/.cache/countersign/kube-v1.37.2/bin), pinned by tools/kube/go.mod,
// and reads the KWOK stage files and the Gateway API CRDs from that module's
// download cache (`go mod download -json`), so the repository holds no
// third-party YAML. A missing binary fails Start at once, naming it and the
// build command.
//
// Invariant: no process outlives its Cluster. Each binary runs in its own
// process group with Pdeathsig=SIGKILL (a panicking or timed-out test binary
// takes them along); Stop signals the groups, etcd last, and is idempotent.
// Shared clusters are stopped by Main, which TestMain must call:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
//	func TestX(t *testing.T) {
//		c := kubetest.Shared(t)
//		ns := c.Namespace(t, "x")
//		...
//	}
//
// Everything listens on free loopback ports; authentication is a bearer
// token in the apiserver's token file (admin, group system:masters) or a
// ServiceAccount token from TokenRequest (ServiceAccountConfig); the
// serving certificate is signed by a CA generated per cluster; authorization
// is Node,RBAC. Logs of every process are in Dir/<binary>.log and the last
// lines of each are part of any Start error.
//
// Measured on the 2-core development machine (Go 1.26.8, load from other
// builds at the same time):
//
//   - build of the five binaries from a Go build cache without them
//     (-trimpath and CGO_ENABLED=0 give them cache keys of their own):
//     533 s (8 min 53 s wall); the build cache then holds ≈ 5.5 GB
//   - rebuild after a tools/kube/go.sum change, build cache warm: 33 s
//   - rerun with every binary up to date (stamps match): 0.03 s
//   - Start to ready (etcd → /readyz → KWOK node Ready → default
//     ServiceAccount): 2.6–3.8 s; Stop: 1.1–1.3 s; RSS ≈ 570 MiB
//   - the package's kube tests (two clusters started): 13 s, 18 s wall
//     with compilation
package kubetest
