#!/bin/sh
# make dist: everything a fleet needs, reproducibly, into OUT (default dist/):
#   pkcstok-migrate-linux-{amd64,arm64,ppc64le,s390x}   static binaries
#   pkcstok-migrate_<version>_<arch>.deb, pkcstok-migrate-<version>-1.<arch>.rpm   (nfpm)
#   ocktools-pkcstok-<collection version>.tar.gz          Ansible collection with the binaries
#   SHA256SUMS                                            over all of the above
#
#   packaging/dist.sh [OUT]
#
# Inputs that reach the bytes are fixed: VERSION (default: git describe --tags --always
# --dirty) and SOURCE_DATE_EPOCH (default: the last commit's time) can be given in the
# environment; the Go toolchain comes from go.mod, nfpm from packaging/go.mod. Runs from any
# copy of the source tree (dist-check builds a copy elsewhere to prove -trimpath).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
OUT=${1:-$SRC/dist}
GO=${GO:-go}
ARCHES="amd64 arm64 ppc64le s390x"

cd "$SRC"
if [ -z "${VERSION:-}" ]; then
    VERSION=$(git describe --tags --always --dirty 2>/dev/null) || {
        echo "dist.sh: not a git checkout: set VERSION" >&2
        exit 1
    }
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) || {
        echo "dist.sh: not a git checkout: set SOURCE_DATE_EPOCH" >&2
        exit 1
    }
fi
export SOURCE_DATE_EPOCH

# Package version for dpkg and rpm: starts with a digit, no '-'. A tag v1.2.3 gives 1.2.3;
# commits after it give 1.2.3+4.gabcdef0; no tag at all gives 0.0.0+gabcdef0; -dirty
# becomes .dirty.
case $VERSION in
v[0-9]*.[0-9]* | [0-9]*.[0-9]*) PKG_VERSION=$(echo "${VERSION#v}" | sed 's/-/+/; s/-/./g') ;;
*) PKG_VERSION=$(echo "0.0.0+g$VERSION" | sed 's/-/./g') ;;
esac
export PKG_VERSION

OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
# Only what an earlier run made is removed: OUT may be any directory.
rm -f "$OUT"/SHA256SUMS "$OUT"/pkcstok-migrate-linux-* "$OUT"/pkcstok-migrate_*.deb "$OUT"/pkcstok-migrate-*.rpm \
    "$OUT"/ocktools-pkcstok-*.tar.gz
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pkcstok-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

echo "version $VERSION (packages $PKG_VERSION), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

# 1. Static binaries. CGO off, no paths, no build id, no VCS stamp; the architecture
#    levels are Go's defaults, pinned so a GOAMD64=v3 in someone's environment cannot leak in.
for arch in $ARCHES; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOAMD64=v1 GOARM64=v8.0 GOPPC64=power8 GOFLAGS= \
        "$GO" build -trimpath -buildvcs=false \
        -ldflags "-s -w -buildid= -X github.com/ocktools/pkcstok-migrate/plan.ToolVersion=$VERSION" \
        -o "$OUT/pkcstok-migrate-linux-$arch" ./cmd/pkcstok-migrate
done

# 2. .deb and .rpm per architecture with nfpm (pinned in packaging/go.mod, run as a Go tool).
gzip -9n < packaging/pkcstok-migrate.1 > "$WORK/pkcstok-migrate.1.gz"
for arch in $ARCHES; do
    STAGE=$WORK/stage-$arch
    mkdir -p "$STAGE"
    cp "$OUT/pkcstok-migrate-linux-$arch" "$STAGE/pkcstok-migrate"
    cp "$WORK/pkcstok-migrate.1.gz" packaging/pkcstok-migrate.bash-completion packaging/copyright LICENSE "$STAGE/"
    for packager in deb rpm; do
        (cd packaging && PKG_ARCH=$arch STAGE=$STAGE GOFLAGS= "$GO" tool nfpm package \
            --config nfpm.yaml --packager $packager --target "$OUT/") > "$WORK/nfpm.log" 2>&1 || {
            cat "$WORK/nfpm.log" >&2
            exit 1
        }
    done
done

# 3. The Ansible collection, carrying the four binaries and their checksums for the install
#    role, built by ansible-galaxy with the time and the directory order pinned.
COLL=$WORK/ansible_collections/ocktools/pkcstok
mkdir -p "$(dirname "$COLL")"
cp -R ansible "$COLL"
rm -rf "$COLL/tests/output"
FILES=$COLL/roles/install/files
mkdir -p "$FILES"
for arch in $ARCHES; do
    cp "$OUT/pkcstok-migrate-linux-$arch" "$FILES/"
done
(cd "$FILES" && sha256sum pkcstok-migrate-linux-* > SHA256SUMS)
find "$WORK/ansible_collections" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# The Python that runs ansible-galaxy (has the ansible package), as tests/run.sh finds it.
GALAXY=$(command -v ansible-galaxy) || {
    echo "dist.sh: ansible-galaxy not found: install ansible-core" >&2
    exit 1
}
APY=$(sed -n '1s/^#! *\([^ ]*\).*/\1/p' "$GALAXY")
case $APY in */env | "") APY=python3 ;; esac
"$APY" "$HERE/galaxy_build.py" collection build --force --output-path "$OUT" "$COLL" > "$WORK/galaxy.log" 2>&1 || {
    cat "$WORK/galaxy.log" >&2
    exit 1
}

# 4. Checksums over everything.
(cd "$OUT" && LC_ALL=C ls pkcstok-migrate-linux-* pkcstok-migrate_*.deb pkcstok-migrate-*.rpm ocktools-pkcstok-*.tar.gz |
    LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

echo "dist: $OUT"
(cd "$OUT" && LC_ALL=C ls -l SHA256SUMS pkcstok-migrate-linux-* pkcstok-migrate_*.deb pkcstok-migrate-*.rpm \
    ocktools-pkcstok-*.tar.gz | awk '{printf "  %10d  %s\n", $5, $9}')
