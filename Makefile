# Thin aliases over the go command; `go build ./...` and `go test ./...` work without make.
GO ?= go

.PHONY: test test-short test-compat deps build run fuzz bench vet

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
## endpoint's tests start their own brokers) and Node.js for the compatibility suite.
deps:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends postgresql; }
	@test -x /usr/sbin/mosquitto || command -v mosquitto >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends mosquitto; }
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends nodejs npm; }

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

build:
	mkdir -p bin
	$(GO) build -buildvcs=true -o bin/ ./cmd/...

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
