#!/usr/bin/env bash
# s3-testserver.sh — the S3 servers the tests of internal/snapshot/s3lock start on loopback.
#
#   scripts/s3-testserver.sh            build what is missing or stale, print the binary dir
#   scripts/s3-testserver.sh path NAME  print the path of NAME (versitygw or gofakes3), building it if needed
#
# Servers (pinned; the module proxy and the checksum database verify the sources):
#   versitygw  github.com/versity/versitygw/cmd/versitygw@v1.8.0     enforces Object Lock (posix backend)
#   gofakes3   github.com/johannesboyne/gofakes3/cmd/gofakes3@v1.2.0 implements no Object Lock: the
#                                                                     "accepts lock headers, enforces nothing" case
#
# Binaries go to $COUNTERSIGN_S3_BIN (default $HOME/.cache/countersign/bin), where the tests look
# first. Idempotent: a binary is rebuilt only when its stamp (module@version and Go version) differs,
# so a warm run costs milliseconds; a cold one about 75 s (versitygw) and 5 s (gofakes3) on 2 cores.
#
# versitygw's posix backend keeps object metadata (Object Lock configuration, retention, legal
# holds) in user extended attributes of the files under its root; ext4, xfs, btrfs and tmpfs
# (Linux >= 6.6) have them. The tests probe the temporary directory and start versitygw with
# --sidecar DIR (metadata in plain files) where user xattrs are missing, so nothing is needed here.
set -euo pipefail

export GOTOOLCHAIN=local

bin_dir() { echo "${COUNTERSIGN_S3_BIN:-$HOME/.cache/countersign/bin}"; }

pkg_of() {
  case "$1" in
    versitygw) echo github.com/versity/versitygw/cmd/versitygw@v1.8.0 ;;
    gofakes3) echo github.com/johannesboyne/gofakes3/cmd/gofakes3@v1.2.0 ;;
    *) echo "s3-testserver: unknown server $1 (want versitygw or gofakes3)" >&2; return 1 ;;
  esac
}

build() {
  local name=$1 dir pkg stamp want
  dir=$(bin_dir)
  pkg=$(pkg_of "$name")
  stamp="$dir/.$name.stamp"
  want="$pkg $(go env GOVERSION)"
  if [ -x "$dir/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  mkdir -p "$dir"
  echo "s3-testserver: building $pkg into $dir" >&2
  local start=$SECONDS
  # pkg@version builds with the server's own go.mod, never the repository's.
  (cd / && GOWORK=off GOBIN="$dir" GOFLAGS=-buildvcs=false go install "$pkg")
  echo "$want" >"$stamp"
  echo "s3-testserver: built $name in $((SECONDS - start)) s" >&2
}

case "${1:-build}" in
  build)
    build versitygw
    build gofakes3
    bin_dir
    ;;
  path)
    [ $# -eq 2 ] || { echo "usage: $0 path versitygw|gofakes3" >&2; exit 2; }
    build "$2"
    echo "$(bin_dir)/$2"
    ;;
  *)
    echo "usage: $0 [build | path versitygw|gofakes3]" >&2
    exit 2
    ;;
esac
