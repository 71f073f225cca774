#!/usr/bin/env bash
# Installs and starts what the test suite needs on a fresh machine of this
# kind (Debian, root): SoftHSM2, GnuTLS certtool, OpenSSL; and makes sure the
# PostgreSQL and NATS JetStream servers the integration tests use are up.
# Idempotent: does nothing that is already done.
set -euo pipefail

need_pkgs=()
command -v softhsm2-util >/dev/null 2>&1 || need_pkgs+=(softhsm2)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_pkgs+=(softhsm2)
command -v certtool >/dev/null 2>&1 || need_pkgs+=(gnutls-bin)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v jq >/dev/null 2>&1 || need_pkgs+=(jq)
command -v xxd >/dev/null 2>&1 || need_pkgs+=(xxd)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "test-deps: installing ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "test-deps: PostgreSQL not listening on 127.0.0.1:5432, starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! port_open 4222; then
  echo "test-deps: NATS not listening on 127.0.0.1:4222, starting it"
  if command -v nats-server >/dev/null 2>&1; then
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  fi
fi
for i in $(seq 1 50); do
  port_open 5432 && port_open 4222 && break
  sleep 0.2
done
port_open 5432 || echo "test-deps: WARNING PostgreSQL still not reachable (tests needing it fail under CI=true)"
port_open 4222 || echo "test-deps: WARNING NATS still not reachable (tests needing it fail under CI=true)"
# An S3 server that enforces Object Lock (versitygw) and one that does not
# (gofakes3), built from the Go module proxy into $HOME/.cache (idempotent).
bash "$(dirname "$0")/s3-testserver.sh" >/dev/null || echo "test-deps: WARNING S3 test servers not built (s3lock tests fail under CI=true)"
exit 0
