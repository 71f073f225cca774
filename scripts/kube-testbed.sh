#!/usr/bin/env bash
# kube-testbed.sh — the Kubernetes test bed of the `kube` test tier (issue 8).
#
#   scripts/kube-testbed.sh build     build etcd, kube-apiserver, kube-controller-manager,
#                                     kube-scheduler and kwok from tools/kube (pinned in its
#                                     go.mod/go.sum) into $COUNTERSIGN_KUBE_BIN
#   scripts/kube-testbed.sh up DIR    start a control plane + one KWOK node in the background;
#                                     writes DIR/kubeconfig, DIR/env and logs in DIR/*.log
#   scripts/kube-testbed.sh down DIR  stop what `up DIR` started (etcd last)
#
# Tests do not use `up`: internal/kubetest starts its own cluster from Go with the same
# binaries. `up` is for humans poking at manifests with kubectl.
#
# Environment:
#   COUNTERSIGN_KUBE_BIN         binary dir (default $HOME/.cache/countersign/kube-v1.37.2/bin)
#   COUNTERSIGN_KUBE_BUILD_JOBS  go build -p (default: number of CPUs)
#   COUNTERSIGN_KUBE_NODES       KWOK nodes for `up` (default 1)
#
# A build is skipped per binary when the binary exists and its stamp matches the hash of
# tools/kube/go.mod + go.sum, the Go version and the build flags: a warm run costs seconds.
set -euo pipefail

KUBE_VERSION=v1.37.2
KUBE_MAJOR=1
KUBE_MINOR=37

repo_root() {
  if [ -n "${COUNTERSIGN_ROOT:-}" ]; then echo "$COUNTERSIGN_ROOT"; return; fi
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

bin_dir() { echo "${COUNTERSIGN_KUBE_BIN:-$HOME/.cache/countersign/kube-$KUBE_VERSION/bin}"; }

# Binary name → package, in tools/kube's module graph.
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
pkg_of() {
  case "$1" in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kube-apiserver | kube-controller-manager | kube-scheduler) echo "k8s.io/kubernetes/cmd/$1" ;;
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    *) echo "unknown binary $1" >&2; return 1 ;;
  esac
}
# go build -o DIR/ names a binary after the last path element that is not a major-version suffix.
built_name() { case "$1" in etcd) echo server ;; *) echo "$1" ;; esac; }

ldflags() {
  local f="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$KUBE_MAJOR -X $p.gitMinor=$KUBE_MINOR"
    f+=" -X $p.gitTreeState=clean"
  done
  echo "$f"
}

cmd_build() {
  local root mod bin key jobs need=() pkgs=() b start tmp
  root=$(repo_root)
  mod="$root/tools/kube"
  bin=$(bin_dir)
  # -mod=readonly: a build never rewrites go.mod/go.sum behind the stamp.
  export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
  mkdir -p "$bin"
  key=$( { cat "$mod/go.mod" "$mod/go.sum"; go version; ldflags; echo "CGO_ENABLED=0 -trimpath"; } \
    | sha256sum | cut -d' ' -f1)
  for b in "${binaries[@]}"; do
    if [ -x "$bin/$b" ] && [ "$(cat "$bin/.$b.stamp" 2>/dev/null)" = "$key" ]; then
      echo "kube-testbed: $b is up to date"
    else
      need+=("$b")
      pkgs+=("$(pkg_of "$b")")
    fi
  done
  if [ "${#need[@]}" -eq 0 ]; then
    echo "kube-testbed: all binaries up to date in $bin"
    return 0
  fi
  jobs=${COUNTERSIGN_KUBE_BUILD_JOBS:-$(nproc)}
  echo "kube-testbed: building ${need[*]} into $bin (go build -p $jobs; cold Go cache 10–20 min, warm well under a minute)"
  start=$(date +%s)
  tmp=$(mktemp -d "$bin/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$mod" && go build -p "$jobs" -trimpath -ldflags "$(ldflags)" -o "$tmp/" "${pkgs[@]}")
  for b in "${need[@]}"; do
    mv -f "$tmp/$(built_name "$b")" "$bin/$b"
    echo "$key" >"$bin/.$b.stamp"
  done
  rm -rf "$tmp"
  trap - EXIT
  echo "kube-testbed: built ${need[*]} in $(($(date +%s) - start)) s"
}

# pid_alive PID: PID runs our kubetestbed (a stale pid file must never make
# `down` signal an unrelated process that got the same pid).
pid_alive() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q kubetestbed
}

# up runs internal/kubetest/cmd/kubetestbed — the same Go code as the test tier
# (kubetest.Start) — detached in its own session; it writes DIR/env once the
# control plane and the KWOK node are ready, and stops everything on SIGTERM.
cmd_up() {
  local dir=$1 root pid i
  root=$(repo_root)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  pid=$(cat "$dir/kubetestbed.pid" 2>/dev/null || true)
  if pid_alive "$pid"; then
    echo "kube-testbed: already up in $dir (pid $pid); source $dir/env, or: $0 down $dir" >&2
    return 1
  fi
  rm -f "$dir/env" "$dir/kubetestbed.pid"
  (cd "$root" && GOTOOLCHAIN=local go build -o "$dir/kubetestbed" ./internal/kubetest/cmd/kubetestbed)
  # setsid: the test bed outlives this shell and its terminal. It runs from the
  # repository root, where kubetest finds tools/kube (KWOK stages).
  (
    cd "$root" || exit 1
    exec setsid "$dir/kubetestbed" -dir "$dir" -nodes "${COUNTERSIGN_KUBE_NODES:-1}" \
      </dev/null >>"$dir/kubetestbed.log" 2>&1
  ) &
  for i in $(seq 1 600); do
    [ -f "$dir/env" ] && break
    pid=$(cat "$dir/kubetestbed.pid" 2>/dev/null || true)
    if [ "$i" -gt 4 ] && ! pid_alive "$pid"; then
      echo "kube-testbed: failed to start; last lines of $dir/kubetestbed.log:" >&2
      tail -n 40 "$dir/kubetestbed.log" >&2
      return 1
    fi
    sleep 0.25
  done
  if [ ! -f "$dir/env" ]; then
    echo "kube-testbed: not up after 150 s; see $dir/*.log; stopping" >&2
    cmd_down "$dir"
    return 1
  fi
  cat <<EOT
kube-testbed: up (pid $(cat "$dir/kubetestbed.pid")), logs in $dir/*.log
  source $dir/env          # sets KUBECONFIG (admin, group system:masters)
  kubectl get nodes        # one KWOK node; pods become Running without containers
  $0 down $dir
EOT
}

cmd_down() {
  local dir=$1 pid i
  pid=$(cat "$dir/kubetestbed.pid" 2>/dev/null || true)
  if ! pid_alive "$pid"; then
    echo "kube-testbed: nothing running in $dir"
    rm -f "$dir/env" "$dir/kubetestbed.pid"
    return 0
  fi
  kill -TERM "$pid"
  for i in $(seq 1 120); do
    pid_alive "$pid" || break
    sleep 0.25
  done
  if pid_alive "$pid"; then
    echo "kube-testbed: pid $pid still running after 30 s; see $dir/kubetestbed.log" >&2
    return 1
  fi
  rm -f "$dir/env"
  echo "kube-testbed: down ($dir kept: logs, certificates)"
}

main() {
  case "${1:-}" in
    build) cmd_build ;;
    up) [ $# -eq 2 ] || { echo "usage: $0 up DIR" >&2; return 2; }; cmd_up "$2" ;;
    down) [ $# -eq 2 ] || { echo "usage: $0 down DIR" >&2; return 2; }; cmd_down "$2" ;;
    *) echo "usage: $0 build | up DIR | down DIR" >&2; return 2 ;;
  esac
}

main "$@"; exit $?
