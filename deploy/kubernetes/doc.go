// Package manifests holds the tests of Countersign's Kubernetes manifests
// (the Kustomize base, components and overlays beside this file) and of the
// repository's Dockerfile. It has no code of its own.
//
// The untagged tests render every overlay with `kubectl kustomize`, decode
// each object strictly into its Kubernetes API type (an unknown or
// misspelt field fails), and check the invariants the deployment promises:
// hardened containers with probes and resource bounds, images pinned by
// digest, a PodDisruptionBudget and a NetworkPolicy over every Deployment,
// the flows of the NetworkPolicy matrix and nothing else, no Secret values
// outside the dev overlay, the control plane's Role equal to the contract's
// verbs, and the contract's names, labels and annotations. The tests
// tagged `kube` apply the testbed overlay to a real API server
// (internal/kubetest) and prove the Role's boundary from the
// ServiceAccount's side.
package manifests
