# Countersign — build and test entry points. `make test` is the one command
# that installs what the tests need and runs all of them (CI runs exactly it).

GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 10s
export GOTOOLCHAIN := local

.PHONY: all build test test-deps vet fmt-check unit nocgo fuzz bench clean

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

# Short fuzz runs of every fuzz target (longer: make fuzz FUZZTIME=10m).
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

test: test-deps fmt-check vet nocgo unit fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin
