# sluice: see README.md. Every binary is static: CGO_ENABLED=0, pure-Go DNS.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE ?= $(shell date -u -d @$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)} +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X sluice/version.Version=$(VERSION) -X sluice/version.Commit=$(COMMIT) -X sluice/version.Date=$(DATE)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -tags netgo,osusergo -ldflags "$(LDFLAGS)"

.PHONY: all build binaries run test test-deps check-static vet unit fuzz e2e bench-tcp bench-http bench-pool packages image clean

all: build

build:
	$(GOBUILD) -o bin/sluice ./cmd/sluice

# Build and run sluice on the quickstart in the foreground (Ctrl-C stops
# it): an HTTP balancer on 127.0.0.1:8080 whose two demo servers are
# listen sections of the same file. Then: curl localhost:8080, twice.
run: build
	bin/sluice run --no-master -f examples/quickstart.hcl

# Every test: tools, static build check, vet, unit and end-to-end tests.
test: test-deps build binaries check-static vet
	$(GO) test -count=1 -timeout 20m ./...
	bin/sluice check -f examples/quickstart.hcl
	$(MAKE) fuzz

test-deps:
	@tests/deps.sh

check-static: build
	@file bin/sluice | tee /dev/stderr | grep -q 'statically linked' || { echo "bin/sluice is not statically linked" >&2; exit 1; }
	@bin/sluice version -v | grep -q 'Linking: static' || { echo "bin/sluice was not built with CGO disabled" >&2; exit 1; }

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /tests/)

# Each parser of outside input is fuzzed for a number of runs (about 8 s
# each here; their seeds also run in every go test): HTTP heads and chunked
# bodies against net/http's framing, PROXY headers, configuration files.
# Counts, not -fuzztime durations: Go 1.26's fuzzer can fail a duration
# run with "context deadline exceeded" as it ends (go.dev/issue/75804).
# FUZZ_SCALE multiplies them, for longer runs.
FUZZ_SCALE ?= 1
FUZZ_TARGETS := ./daemon/h1:FuzzParseRequest:400000 ./daemon/h1:FuzzParseResponse:400000 \
	./daemon/h1:FuzzChunked:300000 ./daemon/proxyproto:FuzzParse:600000 ./hcl:FuzzLoad:8000
fuzz:
	@set -eo pipefail; for t in $(FUZZ_TARGETS); do \
		IFS=: read -r pkg name runs <<< "$$t"; runs=$$((runs * $(FUZZ_SCALE))); \
		echo "fuzz $$name ($$pkg, $$runs runs)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime "$${runs}x" "$$pkg" | grep -v '^fuzz: elapsed'; \
	done

e2e: build
	$(GO) test -count=1 -timeout 20m ./tests/...

# Throughput and connection rate through sluice, HAProxy and direct (not in make test).
bench-tcp: build
	$(GO) run ./tests/bench/tcp -sluice bin/sluice

# Requests per second and p99 with wrk through sluice, HAProxy and direct
# to nginx (not in make test; needs haproxy, nginx and wrk).
bench-http: build
	$(GO) run ./tests/bench/http -sluice bin/sluice

# Memory per held connection through a source pool, sluice and HAProxy,
# in three network namespaces (not in make test; needs root and haproxy).
bench-pool: build
	$(GO) run ./tests/bench/pool -sluice bin/sluice

# .deb and .rpm for amd64 and arm64 (nfpm, pinned as a Go tool in go.mod).
# Reproducible: the same commit and SOURCE_DATE_EPOCH give the same bytes.
PKG_VERSION ?= 0.1.$(shell git rev-list --count HEAD 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
packages:
	packaging/build.sh $(PKG_VERSION) "$(LDFLAGS)"

# Binaries for the images, per architecture, and the image builder.
binaries:
	@for arch in amd64 arm64; do \
		GOARCH=$$arch $(GOBUILD) -o bin/linux-$$arch/sluice ./cmd/sluice && \
		GOARCH=$$arch $(GOBUILD) -o bin/linux-$$arch/sluice-init ./image/init || exit 1; \
	done
	$(GOBUILD) -o bin/sluice-image ./cmd/sluice-image
	@# The image builder runs on macOS build hosts too.
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/sluice-image

# The appliance (examples/appliance/image.hcl: the quickstart on port 8080)
# into dist/appliance/: vmlinuz, initramfs.cpio.gz, disk.img (UEFI), oci/
# and sluice-oci.tar. The kernel comes from Debian's linux-image-amd64
# (downloaded, not installed); the EFI stub from systemd-boot-efi.
image: binaries
	bin/sluice-image build -f examples/appliance/image.hcl -o dist/appliance \
		--kernel-deb "$$(packaging/kernel-deb.sh dist/kernel)"

clean:
	rm -rf bin dist
