# syntax=docker/dockerfile:1
#
# The Countersign image: the one binary (every subcommand: node,
# gateway, maintenance, control, ...) on a distroless runtime, run as the
# non-root user 65532. Built with cgo so the PKCS#11 provider is in; the
# runtime image carries glibc and libstdc++, which HSM vendors' modules
# need (add the module itself in a derived image: docs/kubernetes.md).
#
#   docker build -t registry.example.com/countersign:v1 .
#
# Pin both base images by digest in your pipeline, e.g.
#   --build-arg GO_IMAGE=golang:1.26.8-bookworm@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
# The builder and the runtime must share a glibc (both Debian 12 here).
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
# The toolchain is the image's: never download another (go.mod's go line).
ENV GOTOOLCHAIN=local CGO_ENABLED=1 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY client/ client/
COPY internal/ internal/
COPY playbooks/ playbooks/
COPY templates/ templates/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -buildvcs=false -ldflags="-s -w" -o /out/countersign ./cmd/countersign \
    && /out/countersign help >/dev/null # the binary starts (cgo links resolve)

# The control plane's image (docker build --target control): the same
# binary plus pg_dump, which step 4 (snapshot) runs against the PostgreSQL
# store. pg_dump refuses a server of a newer major version, so PG_MAJOR must
# be at least your server's; PGDG's repository carries every supported one.
FROM debian:bookworm-slim AS control
ARG PG_MAJOR=17
RUN set -eux; apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR}; \
    apt-get purge -y curl; apt-get autoremove -y; rm -rf /var/lib/apt/lists/*; \
    pg_dump --version
COPY --from=build /out/countersign /usr/local/bin/countersign
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/countersign"]
CMD ["help"]

# The default image (node, gateway, maintenance): last, so a plain
# docker build makes it.
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/countersign /usr/local/bin/countersign
# Numeric, so the kubelet can check runAsNonRoot without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/countersign"]
CMD ["help"]
