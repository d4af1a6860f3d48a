# docxy — see README.md. `make test` is what CI runs.
GO        ?= go
TOOLS_BIN ?= $(HOME)/.cache/docxy-tools/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
UNIT_PKGS := $(shell $(GO) list ./... | grep -v -e /e2e -e /bench)
FUZZTIME  ?= 15s
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: build run tools test test-unit test-e2e test-race fuzz bench loadtest vet fmt check clean

build: ## static binary ./docxy
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o docxy .

run: build ## run with the built-in default configuration (HTTP :5000, Docker Hub)
	./docxy

tools: ## install test dependencies once (apt clients, registry, crane, pebble) into $(TOOLS_BIN)
	TOOLS_BIN=$(TOOLS_BIN) ./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

test: tools vet test-unit test-e2e ## everything CI runs

test-unit: ## unit, handler and fuzz-seed tests, with the race detector
	$(GO) test -race -count=1 -timeout 10m $(UNIT_PKGS)
	$(GO) test -count=1 -run=Test ./bench/ # the net/http baseline answers like docxy

test-e2e: ## real registry, token server, CDN and clients (crane, skopeo, docker, ctr) on loopback
	$(GO) test -count=1 -timeout 20m ./e2e/

test-race: test-unit

fuzz: ## run every fuzz target for FUZZTIME each, and keep what it found in testdata/fuzz
	@cache=$$($(GO) env GOCACHE)/fuzz; \
	for pkg in $(UNIT_PKGS); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep ^Fuzz); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run=NONE -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	    if [ -d "$$cache/$$pkg/$$f" ]; then mkdir -p "$$dir/testdata/fuzz/$$f" && cp -n "$$cache/$$pkg/$$f"/* "$$dir/testdata/fuzz/$$f/"; fi; \
	  done; \
	done

bench: ## Go benchmarks: docxy (fasthttp) vs a net/http baseline; compare runs with benchstat
	$(GO) test -run=NONE -bench=. -benchmem -count=6 -timeout 30m ./bench/ | tee bench/bench.txt
	bench/ratios.sh bench/bench.txt

loadtest: ## out-of-process load test: docxy vs nginx proxy_pass vs net/http vs nginx static, plus docxy cache hits (~14 min, 127.0.0.1 only)
	TOOLS_BIN=$(TOOLS_BIN) GO=$(GO) bench/loadtest.sh | tee bench/loadtest.txt

check: build ## validate config.toml.example
	./docxy -check -config config.toml.example

clean:
	rm -f docxy
