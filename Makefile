# Countersign — build and test entry points. `make test` is the one command
# that installs what the tests need and runs all of them (CI runs exactly it).

GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?=
export GOTOOLCHAIN := local

.PHONY: all build test test-deps vet fmt-check unit nocgo fuzz bench clean kube-bin test-kube

all: build

build:
	$(GO) build -o bin/countersign ./cmd/countersign

test-deps:
	@bash scripts/test-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Builds without cgo must work (PKCS#11 reports "not built in").
nocgo:
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/countersign

unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

# Short fuzz runs of every fuzz target: each its exec budget in
# scripts/fuzz.sh, about 10 s (longer: make fuzz FUZZTIME=10m).
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

# The Kubernetes tier: a real control plane (etcd, kube-apiserver,
# controller-manager, scheduler, KWOK) built from the Go module proxy into
# $$HOME/.cache/countersign (first build ~9-17 min, then seconds) and
# started per test binary. Tests carry the build tag kube.
KUBE_PKGS ?= ./internal/kubetest/... ./internal/fleet/kube/... ./internal/traffic/... ./deploy/... ./internal/control/...

kube-bin:
	@bash scripts/kube-testbed.sh build

test-kube: kube-bin
	$(GO) test -tags kube -count=1 -timeout 20m $(KUBE_PKGS)

test: test-deps fmt-check vet nocgo unit test-kube fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin
