//go:build tools

// Package kube exists only for its go.mod: it pins the Kubernetes test bed
// (issue 8) — etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and kwok, built by scripts/kube-testbed.sh build — and the modules whose
// files internal/kubetest reads at run time from the module cache (KWOK
// stages, Gateway API CRDs). This file keeps gateway-api, which no tool
// imports, in go.mod through `go mod tidy`. It never builds: the `tools`
// build tag is never set.
package kube

import _ "sigs.k8s.io/gateway-api/apis/v1"
