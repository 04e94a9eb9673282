# pkcstok-migrate
#   make demo    build, then plan and apply on a copy of examples/soft-small (root)
#   make test    every test: unit, CLI scripts, fuzz smoke, reliability, Ansible, real openCryptoki
#                (TESTING.md lists the suites)
#   make bench   benchmarks (not run in CI), results in bench/RESULTS.md

GO       ?= go
BIN      := bin/pkcstok-migrate
# A count, not a duration: a duration races the fuzz coordinator's deadline on a loaded
# machine and fails with "context deadline exceeded" (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 50000x
export CGO_ENABLED ?= 0
# The unit and CLI tests build with the test hooks (fault injection, a forced in-place switch,
# fake /proc and FIPS files: internal/testseam); an ordinary build has none of them.
TESTTAGS := -tags faultinject

.PHONY: all build demo test unit unit-s390x unit-arm64 unit-ppc64le cross fuzz crash fs-suites faults adversarial e2e e2e-s390x e2e-matrix setup ansible-test fleet lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/pkcstok-migrate

demo: build
	sh examples/demo.sh $(BIN)

# Users run it on IBM Z (s390x, big-endian), x86_64, ppc64le and aarch64: vet for each, since
# some system-call structures differ (Statfs_t.Bsize is uint32 on s390x).
ARCHES   := amd64 arm64 ppc64le s390x

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@set -e; for a in $(ARCHES); do echo "go vet (linux/$$a)"; GOOS=linux GOARCH=$$a $(GO) vet ./...; done
	@echo "go vet $(TESTTAGS) (linux/amd64)"; GOOS=linux GOARCH=amd64 $(GO) vet $(TESTTAGS) ./...

# The static binary for every architecture of the fleet.
cross:
	@set -e; for a in $(ARCHES); do GOOS=linux GOARCH=$$a $(GO) build -o bin/pkcstok-migrate-linux-$$a ./cmd/pkcstok-migrate; \
		echo "bin/pkcstok-migrate-linux-$$a"; done

# The unit and CLI tests of the byte-order-sensitive packages again, as big-endian s390x
# binaries under qemu-user (Debian's qemu-user-static). The CLI scripts run the test binary
# as a child process, so the kernel must hand s390x executables to qemu: binfmt_misc is
# mounted and qemu-s390x registered (flag F) when missing (root).
BINFMT   := /proc/sys/fs/binfmt_misc
unit-s390x:
	@command -v qemu-s390x-static >/dev/null || { echo "unit-s390x: qemu-s390x-static missing (apt-get install qemu-user-static; make setup)"; exit 1; }
	@[ -e $(BINFMT)/register ] || mount -t binfmt_misc binfmt_misc $(BINFMT)
	@[ -e $(BINFMT)/qemu-s390x ] || printf '%s\n' ':qemu-s390x:M::\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff:/usr/bin/qemu-s390x-static:F' > $(BINFMT)/register
	GOARCH=s390x $(GO) test $(TESTTAGS) -short -count=1 -timeout 30m -exec qemu-s390x-static ./tokens/... ./plan ./apply ./cmd/...

# The CLI test scripts once more as little-endian arm64 and ppc64le binaries under qemu-user
# (the fleet's other two architectures), registered like qemu-s390x above (the
# magic and mask of Debian's /usr/lib/binfmt.d/qemu-*.conf, flag F).
BINFMT_aarch64 := :qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F
BINFMT_ppc64le := :qemu-ppc64le:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00:/usr/bin/qemu-ppc64le-static:F
unit-arm64: QEMU_ARCH = aarch64
unit-ppc64le: QEMU_ARCH = ppc64le
unit-arm64 unit-ppc64le:
	@command -v qemu-$(QEMU_ARCH)-static >/dev/null || { echo "$@: qemu-$(QEMU_ARCH)-static missing (apt-get install qemu-user-static; make setup)"; exit 1; }
	@[ -e $(BINFMT)/register ] || mount -t binfmt_misc binfmt_misc $(BINFMT)
	@[ -e $(BINFMT)/qemu-$(QEMU_ARCH) ] || printf '%s\n' '$(BINFMT_$(QEMU_ARCH))' > $(BINFMT)/register
	GOARCH=$(@:unit-%=%) $(GO) test $(TESTTAGS) -short -count=1 -timeout 20m -run '^(TestScripts|TestSlotdScripts)$$' -exec qemu-$(QEMU_ARCH)-static ./cmd/pkcstok-migrate

# Unit and CLI tests. e2e is left out here: it starts a real pkcsslotd, which every other
# package's apply would then (rightly) refuse to run beside.
unit:
	$(GO) test $(TESTTAGS) -count=1 -timeout 30m $$($(GO) list ./... | grep -v /e2e)

# Each fuzz target for a few seconds: any input parses or errors, never panics.
fuzz:
	@set -e; for t in FuzzParseNVToken FuzzDecryptOldMK FuzzDecodeObject FuzzParseFlattened FuzzParseIndex; do \
		$(GO) test ./tokens -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME); done
	$(GO) test ./internal/conf -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

# Everything `make test` needs (root, idempotent): the apt packages (Debian's opencryptoki
# 3.8.1, opensc, mmdebstrap, qemu-user-static, ansible-core, rpm, man-db, ...), the group
# pkcs11 and the cached Debian roots in .cache/roots (trixie amd64 and s390x with openCryptoki
# 3.23, bookworm amd64 with 3.8.1, testing amd64, s390x, ppc64el and arm64 with 3.27, and
# testing amd64 with Debian's OpenSSL FIPS provider in force: testing-amd64-fips). Fails,
# saying what is missing, without root or archive.
setup:
	sh e2e/setup.sh

# The real-openCryptoki suites (root, after make setup; e2e/README.md): Debian's 3.8.1 on the
# host, the Debian 12 -> 13 upgrade (3.8.1 and 3.23 tokens, ours and upstream's migration,
# loaded by the real 3.23), every Soft fixture loaded by 3.23, and a lab host of four token
# types with their own PINs migrated as one and rolled back slot by slot on the real 3.27; its
# table of steps goes to $(HOSTTABLE). And FIPS for real (TestFIPS): the real 3.27 with
# Debian's OpenSSL FIPS provider in force and not, an old-format token opened by the library,
# migrated by upstream's pkcstok_migrate (which fails under FIPS) and by ours, rolled back; its
# table goes to $(FIPSTABLE).
HOSTTABLE ?= $(CURDIR)/.cache/HOST.md
FIPSTABLE ?= $(CURDIR)/.cache/FIPS.md
e2e:
	@mkdir -p $(dir $(HOSTTABLE)) $(dir $(FIPSTABLE))
	PKCSTOK_E2E=1 PKCSTOK_HOST_OUT=$(HOSTTABLE) PKCSTOK_FIPS_OUT=$(FIPSTABLE) $(GO) test -count=1 -v -timeout 25m -run '^(TestRealOpencryptoki|TestUpgrade|TestFixturesLoadIn323|TestLabHostOfFourTokenTypesMigratesAsOneAndRollsBackPerSlot|TestFIPS)$$' ./e2e

# The matrix: Debian 13's 3.23 (amd64, s390x) and testing's 3.27 (amd64, s390x,
# ppc64el, arm64; the foreign ones under qemu-user): Soft tokens (and ICA on s390x) made by each
# in the old format, migrated by our binary of that architecture, our amd64 binary and that
# release's pkcstok_migrate, loaded by it; then the upgrade paths to 3.27. It prints the matrix
# of objects compared and equal, and writes it to $(MATRIX).
MATRIX ?= $(CURDIR)/.cache/MATRIX.md
e2e-matrix:
	@mkdir -p $(dir $(MATRIX))
	PKCSTOK_E2E=1 PKCSTOK_MATRIX_OUT=$(MATRIX) $(GO) test -count=1 -v -timeout 30m -run '^TestMatrix$$' ./e2e

# The s390x rows of the matrix alone.
e2e-s390x:
	PKCSTOK_E2E=1 $(GO) test -count=1 -v -timeout 20m -run '^TestMatrix$$/s390x' ./e2e

# Power loss at every step (crash/README.md; root, strace, after make setup): apply, rollback
# and the -s -d -c path run under strace; every cut point's crash states are opened by the
# real openCryptoki 3.27 of the testing-amd64 root (it must damage none) and rebooted into with
# the real binary; a build without the journal's syncfs must be caught.
crash:
	PKCSTOK_CRASH=1 $(GO) test -count=1 -v -timeout 15m -run '^TestCrash$$' ./crash

# The suites that write repositories on other file systems (crash/README.md; root,
# after make setup: xfsprogs, btrfs-progs): a loop-mounted XFS and btrfs image each, and on it
# make crash (PKCSTOK_CRASH_DIR there, PKCSTOK_CRASH_BUDGET=30 states per scenario) and the CLI
# scripts and TestReliability -short with TMPDIR there. PKCSTOK_FS="xfs btrfs ext4" adds ext4.
fs-suites:
	GO=$(GO) MAKE=$(MAKE) bash crash/fs-suites.sh

# Real disk faults (faults/README.md; root, e2fsprogs, xfsprogs, btrfs-progs: make setup): the
# real binary on loop-mounted ext4, XFS and btrfs images made to fail under it (no space, no
# inodes, read-only, a shutdown at a named moment, EIO past a cut of the device); after each
# fault nothing may be lost, every error must be a JSON error with a code, and no slot may
# have a 3.12 repository while its conf lacks tokversion = 3.12. The images live on a private
# tmpfs below $$TMPDIR; the file systems run side by side (-parallel 3); the table goes to
# $(FAULTS_OUT)/faults-table.md.
# PKCSTOK_FAULTS_FS=xfs picks file systems; FAULTS_RUN='TestFaults/xfs/shutdown/' some trials.
FAULTS_OUT ?= $(CURDIR)/.cache/faults-out
FAULTS_RUN ?= ^TestFaults$$
faults:
	@mkdir -p $(FAULTS_OUT)
	PKCSTOK_FAULTS=1 $(GO) test -count=1 -v -timeout 20m -parallel 3 -artifacts -outputdir $(FAULTS_OUT) -run '$(FAULTS_RUN)' ./faults

# An unprivileged member of the token group races the real binary run as root
# (adversarial/README.md; root, after make setup): every attack's table row must show 0 wins.
adversarial:
	PKCSTOK_ADVERSARIAL=1 $(GO) test -count=1 -v -timeout 8m -run '^TestAdversarial$$' ./adversarial

ansible-test: build
	PKCSTOK_MIGRATE_BIN=$(CURDIR)/$(BIN) bash ansible/tests/run.sh

# The fleet (ansible/tests/fleet.sh; root, after make setup): four hosts z1, z2
# (s390x), p1 (ppc64el) and x1 (amd64) on 127.0.0.1:2201-2204, each a Debian root with its own
# openCryptoki (3.23, 3.27), python3 and real pkcsslotd in a PID namespace of its own, served by
# an sshd of its own; the real ansible-playbook runs fleet-audit, fleet-dry-run and
# fleet-rollout over SSH, each host's own library checks the result. Prints the host table.
fleet: cross
	bash ansible/tests/fleet.sh

# CI=true for every prerequisite: a suite whose package or root is missing fails, never skips.
test: export CI = true
test: setup lint unit unit-s390x unit-arm64 unit-ppc64le cross fuzz crash fs-suites faults adversarial ansible-test fleet dist-check package-test e2e e2e-matrix

# .cache (roots, overlay sessions) is unmounted first: e2e/clean.sh.
clean:
	rm -rf bin
	sh e2e/clean.sh

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

# Benchmarks (not run in CI, not part of make test; root, after make setup): our apply raced
# side by side with the real upstream pkcstok_migrate of Debian testing's opencryptoki 3.27
# (chrooted in the cached testing root) and with cp -a of the same repository (the floor), on
# the host file system and on a new loop-mounted XFS (BENCH_FS="host xfs"), at 1,000 and 10,000
# objects (BENCH_SIZES), BENCH_ROUNDS rounds alternating, every copy made before the first
# timed run; with system calls, the time of each kind of call, and bytes read and written per
# object from strace; it writes bench/RESULTS.md. Inside a fresh PID namespace: apply refuses
# while any pkcsslotd is visible, and other suites of this machine start real ones. Then the
# in-process Go benchmarks, in a PID namespace too (BenchmarkApply applies).
# The host part (bench/host_test.go): the downtime of a host of four slots (ICA, CCA, Soft, EP11;
# BENCH_HOST_OBJECTS objects each) migrated by one `apply --slots 1,2,3,4` against upstream
# run once per slot, BENCH_HOST_ROUNDS rounds alternating, with calls, bytes and peak RSS.
# BENCH_PARTS="single host" picks the parts; a part left out keeps its text in BENCH_RESULTS.
BENCHTIME ?= 3x
BENCH_RESULTS ?= $(CURDIR)/bench/RESULTS.md
.PHONY: bench
bench: setup
	unshare --pid --fork --mount-proc env BENCH_RESULTS=$(BENCH_RESULTS) $(GO) test -count=1 -run '^$$' -bench SideBySide -benchtime 1x -timeout 3h ./bench
	unshare --pid --fork --mount-proc $(GO) test -count=1 -run '^$$' -bench 'BenchmarkPlan|BenchmarkApply|BenchmarkReencrypt' -benchtime $(BENCHTIME) ./plan ./apply ./tokens
