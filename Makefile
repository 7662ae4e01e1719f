# Makefile: build, run, test and benchmark nanogpt-proxy.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run test test-short vet fmt bench load clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o nanogpt-proxy .

run:
	$(GO) run .

# The README's test command: formatting, vet, and every test with the race detector.
test:
	./scripts/test.sh

test-short:
	$(GO) test ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

load:
	./bench/run.sh

clean:
	rm -f nanogpt-proxy
