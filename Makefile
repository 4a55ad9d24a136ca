# Thin aliases over the go command; `go build ./...` and `go test ./...` work without make.
GO ?= go

.PHONY: test test-short build run fuzz bench vet

## test: everything CI runs — vet, then every test with the race detector.
test: vet
	$(GO) test -race -count=1 ./...
	# Wall-time bounds are meaningless under the race detector: run those tests without it too.
	$(GO) test -count=1 -run 'TestCustomAllocationConcurrency' ./cmd/dpsd

## test-short: the tests without the race detector (faster while editing).
test-short:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

build:
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

run:
	$(GO) run ./cmd/dpsd

## fuzz: run each fuzzer for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run=^$$ -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./internal/sas
	$(GO) test -run=^$$ -fuzz=FuzzDeviceRequest -fuzztime=$(FUZZTIME) ./internal/httpapi

## bench: the Go benchmarks of the hot paths.
bench:
	$(GO) test -run=^$$ -bench=. -benchmem ./internal/sas ./internal/allocation ./internal/registration ./internal/httpapi
