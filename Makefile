# pkcstok-migrate
#   make demo    build, then plan and apply on a copy of examples/soft-small (root)
#   make test    every test: unit, CLI scripts, fuzz smoke, reliability, Ansible, real openCryptoki
#   make bench   benchmarks (not run in CI), results in bench/RESULTS.md

GO       ?= go
BIN      := bin/pkcstok-migrate
# A count, not a duration: a duration races the fuzz coordinator's deadline on a loaded
# machine and fails with "context deadline exceeded" (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 50000x
export CGO_ENABLED ?= 0

.PHONY: all build demo test unit fuzz e2e ansible-test lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pkcstok-migrate

demo: build
	sh examples/demo.sh $(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...

# Unit and CLI tests. e2e is left out here: it starts a real pkcsslotd, which every other
# package's apply would then (rightly) refuse to run beside.
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

# Each fuzz target for a few seconds: any input parses or errors, never panics.
fuzz:
	@set -e; for t in FuzzParseNVToken FuzzDecryptOldMK FuzzDecodeObject FuzzParseFlattened FuzzParseIndex; do \
		$(GO) test ./tokens -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME); done
	$(GO) test ./internal/conf -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

# The suite against Debian's real opencryptoki 3.8.1 (root; installs with e2e/install.sh).
e2e:
	PKCSTOK_E2E=1 $(GO) test -count=1 -v ./e2e

ansible-test: build
	PKCSTOK_MIGRATE_BIN=$(CURDIR)/$(BIN) bash ansible/tests/run.sh

test: lint unit fuzz ansible-test e2e

clean:
	rm -rf bin

# Release artifacts in $(DIST) (packaging/dist.sh): static binaries for linux/amd64, arm64,
# ppc64le and s390x, a .deb and an .rpm of each (nfpm, pinned in packaging/go.mod), the Ansible
# collection carrying the binaries, SHA256SUMS. dist-check builds twice (the second time from
# a copy elsewhere) and wants identical bytes; package-test checks the packages with dpkg-deb,
# rpm, dpkg -i here and in a Debian 13 root; man regenerates the man page and bash completion
# from the command table (a test fails when they differ).
DIST ?= dist
.PHONY: dist dist-check package-test man
dist:
	GO=$(GO) sh packaging/dist.sh $(DIST)

dist-check:
	GO=$(GO) sh packaging/dist-check.sh

package-test: dist
	sh packaging/check-packages.sh $(DIST)

man:
	$(GO) test ./cmd/pkcstok-migrate -count=1 -run 'UpToDate' -update

# Benchmarks (not run in CI; root, group pkcs11, /usr/bin/time). bench-data writes
# old-format repositories with 10, 1000, 10000 and 100000 objects into bench/data.
.PHONY: bench bench-data
bench-data:
	GO=$(GO) sh bench/data.sh

bench: bench-data
	GO=$(GO) sh bench/bench.sh
