# Thin aliases over the go command; `go build ./...` and `go test ./...` work without make.
GO ?= go

.PHONY: test test-short test-compat deps build install static release image image-deps run fuzz bench vet

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## test: everything CI runs on a fresh machine — vet, every Go test with the
## race detector (including the TPM tests on the software TPM, tag
## tpmsimulator, which needs cgo), the wall-time tests without it, and the
## compatibility suite with the real Azure IoT Node SDKs (needs ports 443 and 8883).
test: deps vet
	$(GO) test -race -count=1 -tags tpmsimulator ./...
	# Wall-time bounds are meaningless under the race detector: run those tests without it too.
	$(GO) test -count=1 -run 'TestCustomAllocationConcurrency|TestLoad' ./cmd/dpsd
	$(MAKE) test-compat

## deps: what the tests need beyond Go — PostgreSQL's server binaries (the
## tests start their own throwaway clusters), Mosquitto (the MQTT routing
## endpoint's tests start their own brokers), Node.js for the compatibility
## suite, buildah for the image test (test/packaging), iproute2 for the
## README walkthrough test (test/walkthrough, in a network namespace) and
## Chromium for the web console's browser tests.
deps: image-deps
	@command -v ip >/dev/null 2>&1 || test -x /usr/sbin/ip || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends iproute2; }
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends postgresql; }
	@test -x /usr/sbin/mosquitto || command -v mosquitto >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends mosquitto; }
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nodejs npm; }
	@test -x /usr/bin/chromium || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium; }

## test-compat: the Azure IoT Node SDK compatibility suite alone.
test-compat:
	cd test/compat && npm ci --no-audit --no-fund
	$(GO) test -tags compat -count=1 -v ./test/compat

## test-short: the tests without the race detector (faster while editing).
test-short:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...
	$(GO) vet -tags tpmsimulator ./...

## build: bin/dpsd and bin/dpsctl for this machine.
build:
	mkdir -p bin
	$(GO) build -buildvcs=true -o bin/ ./cmd/...

## install: bin/dpsd and bin/dpsctl into PREFIX/bin (default /usr/local/bin).
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bin/dpsd bin/dpsctl $(DESTDIR)$(PREFIX)/bin/

# Release binaries and the container image: static (no cgo), without local
# paths, stamped by the go command with the module version (the VCS tag, or a
# pseudo-version), the commit and its time (dpsd --version, dpsctl version).
DIST ?= dist
ARCH ?= $(shell $(GO) env GOARCH)
RELEASE_ARCHES := amd64 arm64
STATIC_BUILD = CGO_ENABLED=0 GOOS=linux GOARCH=$(1) $(GO) build -trimpath -buildvcs=true -ldflags='-s -w'

## static: DIST/dpsd-linux-ARCH and DIST/dpsctl-linux-ARCH (ARCH: this machine's unless given).
static:
	mkdir -p $(DIST)
	$(call STATIC_BUILD,$(ARCH)) -o $(DIST)/dpsd-linux-$(ARCH) ./cmd/dpsd
	$(call STATIC_BUILD,$(ARCH)) -o $(DIST)/dpsctl-linux-$(ARCH) ./cmd/dpsctl

## release: static dpsd and dpsctl for linux/amd64 and linux/arm64 in DIST, with DIST/SHA256SUMS.
release:
	rm -f $(DIST)/SHA256SUMS
	for a in $(RELEASE_ARCHES); do $(MAKE) --no-print-directory static ARCH=$$a || exit 1; done
	cd $(DIST) && sha256sum $(foreach a,$(RELEASE_ARCHES),dpsd-linux-$(a) dpsctl-linux-$(a)) > SHA256SUMS
	cat $(DIST)/SHA256SUMS

## image: the container image (Containerfile: FROM scratch, the static binaries
## of `make static`), tagged IMAGE and saved as DIST/dpsd-image.oci.tar (OCI
## archive) and DIST/dpsd-image.docker.tar (Docker archive: it keeps the
## HEALTHCHECK, which the OCI image format has no field for). Built with
## Debian's buildah; no registry is contacted. BUILDAH_STORAGE takes buildah's
## storage options (e.g. --storage-driver vfs where overlay is unavailable).
IMAGE ?= localhost/dpsd:latest
BUILDAH ?= buildah
BUILDAH_STORAGE ?=
SOURCE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null)
IMAGE_VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
image: image-deps
	$(MAKE) --no-print-directory static ARCH=$(ARCH)
	rm -rf $(DIST)/image && mkdir -p $(DIST)/image/rootfs/data && chmod 0700 $(DIST)/image/rootfs/data
	cp $(DIST)/dpsd-linux-$(ARCH) $(DIST)/image/dpsd
	cp $(DIST)/dpsctl-linux-$(ARCH) $(DIST)/image/dpsctl
	$(BUILDAH) $(BUILDAH_STORAGE) bud --format docker --isolation chroot --arch $(ARCH) \
		$(if $(SOURCE_EPOCH),--timestamp $(SOURCE_EPOCH)) \
		--label org.opencontainers.image.version=$(IMAGE_VERSION) \
		-f Containerfile -t $(IMAGE) $(DIST)/image
	rm -f $(DIST)/dpsd-image.oci.tar $(DIST)/dpsd-image.docker.tar
	$(BUILDAH) $(BUILDAH_STORAGE) push $(IMAGE) oci-archive:$(DIST)/dpsd-image.oci.tar:$(IMAGE)
	$(BUILDAH) $(BUILDAH_STORAGE) push $(IMAGE) docker-archive:$(DIST)/dpsd-image.docker.tar:$(IMAGE)

## image-deps: Debian's buildah, for make image.
image-deps:
	@command -v $(BUILDAH) >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends buildah; }

run:
	$(GO) run ./cmd/dpsd

## fuzz: run each fuzzer for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run=^$$ -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./internal/sas
	$(GO) test -run=^$$ -fuzz=FuzzDeviceRequest -fuzztime=$(FUZZTIME) ./internal/httpapi
	$(GO) test -run=^$$ -fuzz=FuzzParseTopic -fuzztime=$(FUZZTIME) ./internal/mqttapi
	$(GO) test -run=^$$ -fuzz=FuzzParseUsername -fuzztime=$(FUZZTIME) ./internal/mqttapi
	$(GO) test -run=^$$ -fuzz=FuzzHandle -fuzztime=$(FUZZTIME) ./internal/mqttapi
	$(GO) test -run=^$$ -fuzz=FuzzASCII -fuzztime=$(FUZZTIME) ./internal/wire
	$(GO) test -run=^$$ -fuzz=FuzzMaskURL -fuzztime=$(FUZZTIME) ./internal/wire
	$(GO) test -run=^$$ -fuzz=FuzzVerify -fuzztime=$(FUZZTIME) ./webhook
	$(GO) test -run=^$$ -fuzz=FuzzValidateRegistrationID -fuzztime=$(FUZZTIME) .
	$(GO) test -run=^$$ -fuzz=FuzzParseCertificate -fuzztime=$(FUZZTIME) .
	$(GO) test -run=^$$ -fuzz=FuzzParseTPMPublicRSA -fuzztime=$(FUZZTIME) .
	$(GO) test -run=^$$ -fuzz=FuzzCSR -fuzztime=$(FUZZTIME) .
	$(GO) test -run=^$$ -fuzz=FuzzParts -fuzztime=$(FUZZTIME) ./internal/tpmattest
	$(GO) test -run=^$$ -fuzz=FuzzHubRequest -fuzztime=$(FUZZTIME) ./internal/httpapi
	$(GO) test -run=^$$ -fuzz=FuzzPropertyBag -fuzztime=$(FUZZTIME) ./internal/hubproto
	$(GO) test -run=^$$ -fuzz=FuzzC2DBag -fuzztime=$(FUZZTIME) ./internal/hubproto
	$(GO) test -run=^$$ -fuzz=FuzzTopic -fuzztime=$(FUZZTIME) ./internal/hubproto
	$(GO) test -run=^$$ -fuzz=FuzzUsername -fuzztime=$(FUZZTIME) ./internal/hubproto
	$(GO) test -run=^$$ -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./internal/hubquery
	$(GO) test -run=^$$ -fuzz=FuzzAppendString -fuzztime=$(FUZZTIME) ./internal/twin
	$(GO) test -run=^$$ -fuzz=FuzzPatch -fuzztime=$(FUZZTIME) ./internal/twin
	$(GO) test -run=^$$ -fuzz=FuzzParsePublic -fuzztime=$(FUZZTIME) ./internal/tpmattest
	$(GO) test -run=^$$ -fuzz=FuzzShape -fuzztime=$(FUZZTIME) ./internal/allocation/webhookalloc
	$(GO) test -run=^$$ -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./internal/store/docs

## bench: the Go benchmarks of the hot paths.
bench:
	$(GO) test -run=^$$ -bench=. -benchmem ./internal/sas ./internal/allocation ./internal/registration ./internal/httpapi ./internal/allocation/webhookalloc ./internal/wire ./internal/store/sqlite ./internal/store/postgres
