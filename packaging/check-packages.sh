#!/bin/sh
# make package-test: checks what `make dist` made, as a sysadmin would meet it.
#
#   packaging/check-packages.sh [DIST]      (root; default DIST: dist)
#
#  1. SHA256SUMS verifies; every file that must be there is, and nothing else.
#  2. The binaries are static ELF files for their architecture; the amd64 one runs.
#  3. Each .deb: its control fields and exactly its files, with modes and owners, and the
#     binary in it is the dist binary (dpkg-deb).
#  4. Each .rpm: name, version, architecture, exactly its files with modes and owners
#     (rpm -qpl, -qplv, --dump), and the binary in it (its SHA-256 in the rpm header).
#  5. The collection tarball carries the four binaries and a SHA256SUMS that matches them,
#     and installs with ansible-galaxy.
#  6. The amd64 .deb installs with dpkg -i on this host; pkcstok-migrate version and
#     man pkcstok-migrate work; dpkg --purge removes it again.
#  7. The same inside a Debian 13 (trixie) amd64 root: a copy of the cached root of the
#     real-openCryptoki suites (.cache/roots/trixie-amd64, or under $PKCSTOK_ROOTS) when it exists, else a throwaway
#     one made with mmdebstrap --variant=extract from this host's own apt sources.
#
# A missing tool (rpm, mmdebstrap, ansible-galaxy) skips its part with a note, or fails it
# when CI=true. Last line: "N passed, M failed".
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
DIST=$(cd "${1:-$SRC/dist}" && pwd) || exit 1
CI=${CI:-}
ARCHES="amd64 arm64 ppc64le s390x"

PASS=0
FAILN=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAILN=$((FAILN + 1)); echo "FAIL - $*"; }
skip() {
    if [ "$CI" = true ]; then bad "$* (CI=true: install it)"; else echo "skip - $*"; fi
}

W=$(mktemp -d /tmp/pkcstok-pkgcheck.XXXXXX)
HOST_INSTALLED=
cleanup() {
    if [ -n "$HOST_INSTALLED" ]; then dpkg --purge pkcstok-migrate > /dev/null 2>&1; fi
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

debarch() { case $1 in ppc64le) echo ppc64el ;; *) echo "$1" ;; esac; }
rpmarch() { case $1 in amd64) echo x86_64 ;; arm64) echo aarch64 ;; *) echo "$1" ;; esac; }
# ELF e_machine of each architecture, as od prints the two bytes at offset 18.
elfmachine() { case $1 in amd64) echo "3e 00" ;; arm64) echo "b7 00" ;; ppc64le) echo "15 00" ;; s390x) echo "00 16" ;; esac; }

cd "$DIST" || exit 1
VERSION_LINE=$(./pkcstok-migrate-linux-amd64 version 2>/dev/null)
DEB_VERSION=$(ls pkcstok-migrate_*_amd64.deb 2>/dev/null | sed -n 's/^pkcstok-migrate_\(.*\)_amd64\.deb$/\1/p')
echo "dist $DIST: $VERSION_LINE, package version $DEB_VERSION"

# 1. checksums and the file set
if sha256sum -c --quiet SHA256SUMS > "$W/sums.out" 2>&1; then
    ok "1a SHA256SUMS verifies ($(wc -l < SHA256SUMS) files)"
else
    bad "1a SHA256SUMS"
    cat "$W/sums.out"
fi
{
    echo SHA256SUMS
    ls ocktools-pkcstok-*.tar.gz 2>/dev/null | head -1
    for a in $ARCHES; do
        echo "pkcstok-migrate-linux-$a"
        echo "pkcstok-migrate_${DEB_VERSION}_$(debarch "$a").deb"
        echo "pkcstok-migrate-${DEB_VERSION%-1}-1.$(rpmarch "$a").rpm"
    done
} | LC_ALL=C sort > "$W/want-files"
LC_ALL=C ls > "$W/got-files"
if [ -n "$DEB_VERSION" ] && cmp -s "$W/want-files" "$W/got-files" && [ "$(wc -l < "$W/got-files")" = 14 ]; then
    ok "1b dist holds exactly the 4 binaries, 4 .deb, 4 .rpm, the collection and SHA256SUMS"
else
    bad "1b dist file set"
    diff "$W/want-files" "$W/got-files"
fi

# 2. binaries
for a in $ARCHES; do
    b=pkcstok-migrate-linux-$a
    m=$(od -An -tx1 -j18 -N2 "$b" | tr -s ' ' | sed 's/^ //; s/ $//')
    interp=$(readelf -l "$b" 2>/dev/null | grep -c 'INTERP' || true)
    if [ "$m" = "$(elfmachine "$a")" ] && [ "$interp" = 0 ] && ! readelf -d "$b" 2>/dev/null | grep -q NEEDED; then
        ok "2 $b: ELF for $a, static (no interpreter, no shared libraries)"
    else
        bad "2 $b: e_machine '$m', INTERP $interp"
    fi
done
case $VERSION_LINE in
"pkcstok-migrate "?*) ok "2 the amd64 binary runs: $VERSION_LINE" ;;
*) bad "2 the amd64 binary does not run: '$VERSION_LINE'" ;;
esac

# 3. .deb files: control fields, file list with modes, the binary inside.
for a in $ARCHES; do
    d=pkcstok-migrate_${DEB_VERSION}_$(debarch "$a").deb
    fields=$(dpkg-deb -f "$d" Package Version Architecture Section License 2>&1 | tr '\n' ' ')
    dpkg-deb -c "$d" | awk '{print $1, $2, $6}' | LC_ALL=C sort > "$W/deb-list"
    cat > "$W/deb-want" <<EOF
-rw-r--r-- root/root ./usr/share/bash-completion/completions/pkcstok-migrate
-rw-r--r-- root/root ./usr/share/doc/pkcstok-migrate/copyright
-rw-r--r-- root/root ./usr/share/man/man1/pkcstok-migrate.1.gz
-rwxr-xr-x root/root ./usr/sbin/pkcstok-migrate
EOF
    grep -v '^d' "$W/deb-list" > "$W/deb-files"
    dpkg-deb --fsys-tarfile "$d" | tar -xOf - ./usr/sbin/pkcstok-migrate > "$W/deb-bin"
    if echo "$fields" | grep -q "^Package: pkcstok-migrate Version: $DEB_VERSION Architecture: $(debarch "$a") Section: admin" \
        && cmp -s "$W/deb-want" "$W/deb-files" && cmp -s "$W/deb-bin" "pkcstok-migrate-linux-$a"; then
        ok "3 $d: control fields, 4 files with modes 0755/0644 root:root, the dist binary"
    else
        bad "3 $d ($fields)"
        diff "$W/deb-want" "$W/deb-files"
        cmp "$W/deb-bin" "pkcstok-migrate-linux-$a"
    fi
done

# 4. .rpm files
if command -v rpm > /dev/null 2>&1; then
    for a in $ARCHES; do
        r=pkcstok-migrate-${DEB_VERSION%-1}-1.$(rpmarch "$a").rpm
        head=$(rpm -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n' "$r" 2>&1)
        rpm -qpl "$r" 2>/dev/null | LC_ALL=C sort > "$W/rpm-l"
        # --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
        rpm -qp --dump "$r" 2>/dev/null | awk '{print $1, $5, $6, $7}' | LC_ALL=C sort > "$W/rpm-dump"
        rpm -qplv "$r" > "$W/rpm-lv" 2>&1
        cat > "$W/rpm-want" <<EOF
/usr/sbin/pkcstok-migrate 0100755 root root
/usr/share/bash-completion/completions/pkcstok-migrate 0100644 root root
/usr/share/licenses/pkcstok-migrate/LICENSE 0100644 root root
/usr/share/man/man1/pkcstok-migrate.1.gz 0100644 root root
EOF
        digest=$(rpm -qp --dump "$r" 2>/dev/null | awk '$1 == "/usr/sbin/pkcstok-migrate" {print $4}')
        if [ "$head" = "pkcstok-migrate ${DEB_VERSION%-1} 1 $(rpmarch "$a") Apache-2.0" ] \
            && cmp -s "$W/rpm-want" "$W/rpm-dump" && [ "$(cut -d' ' -f1 "$W/rpm-want")" = "$(cat "$W/rpm-l")" ] \
            && grep -q '^-rwxr-xr-x .* root  *root .* /usr/sbin/pkcstok-migrate$' "$W/rpm-lv" \
            && [ "$digest" = "$(sha256sum < "pkcstok-migrate-linux-$a" | cut -d' ' -f1)" ]; then
            ok "4 $r: $head; rpm -qpl/-qplv: 4 files, 0755/0644 root:root; the dist binary"
        else
            bad "4 $r ($head)"
            diff "$W/rpm-want" "$W/rpm-dump"
            cat "$W/rpm-lv"
        fi
    done
    echo "     rpm -qplv $(ls pkcstok-migrate-*.x86_64.rpm):"
    rpm -qplv pkcstok-migrate-*.x86_64.rpm | sed 's/^/       /'
else
    skip "4 rpm checks: rpm not installed (apt-get install rpm)"
fi

# 5. the collection
COLL=$(ls ocktools-pkcstok-*.tar.gz 2>/dev/null | head -1)
mkdir -p "$W/coll"
tar -xzf "$COLL" -C "$W/coll" 2> /dev/null
cfail=
for a in $ARCHES; do
    cmp -s "$W/coll/roles/install/files/pkcstok-migrate-linux-$a" "pkcstok-migrate-linux-$a" || cfail="$cfail $a"
done
(cd "$W/coll/roles/install/files" 2> /dev/null && sha256sum -c --quiet SHA256SUMS > /dev/null 2>&1) || cfail="$cfail SHA256SUMS"
[ "$(grep -c 'pkcstok-migrate-linux-' "$W/coll/roles/install/files/SHA256SUMS" 2> /dev/null)" = 4 ] || cfail="$cfail SHA256SUMS-lines"
for f in plugins/modules/pkcstok_migrate.py plugins/modules/pkcstok_info.py roles/install/tasks/main.yml playbooks/fleet-audit.yml MANIFEST.json FILES.json; do
    [ -f "$W/coll/$f" ] || cfail="$cfail $f"
done
if [ -n "$COLL" ] && [ -z "$cfail" ]; then
    ok "5a $COLL: the 4 binaries (= dist's), their SHA256SUMS, both modules, the install role, fleet-audit.yml"
else
    bad "5a $COLL:$cfail"
fi
if command -v ansible-galaxy > /dev/null 2>&1; then
    if ansible-galaxy collection install -p "$W/installed" "$COLL" > "$W/galaxy.out" 2>&1 \
        && [ -x "$W/installed/ansible_collections/ocktools/pkcstok/roles/install/files/pkcstok-migrate-linux-amd64" ]; then
        ok "5b ansible-galaxy collection install $COLL"
    else
        bad "5b ansible-galaxy collection install"
        cat "$W/galaxy.out"
    fi
else
    skip "5b ansible-galaxy not installed (apt-get install ansible-core)"
fi

# 6. dpkg -i on this host, then removed again.
DEB=$DIST/pkcstok-migrate_${DEB_VERSION}_amd64.deb
if [ "$(id -u)" != 0 ] || [ "$(dpkg --print-architecture 2>/dev/null)" != amd64 ]; then
    skip "6 dpkg -i on this host: needs root on amd64"
elif dpkg -s pkcstok-migrate > /dev/null 2>&1 || [ -e /usr/sbin/pkcstok-migrate ]; then
    bad "6 pkcstok-migrate is already installed on this host: not touching it (dpkg --purge pkcstok-migrate first)"
else
    HOST_INSTALLED=1
    dpkg -i "$DEB" > "$W/dpkg.out" 2>&1
    RC=$?
    v=$(/usr/sbin/pkcstok-migrate version 2>&1)
    manpath=$(man -w pkcstok-migrate 2>&1)
    MANWIDTH=80 MAN_KEEP_FORMATTING= man pkcstok-migrate 2> "$W/man.err" | col -b > "$W/man.out"
    st=$(dpkg-query -W -f '${Status} ${Version}' pkcstok-migrate 2>&1)
    if [ "$RC" = 0 ] && [ "$v" = "$VERSION_LINE" ] && [ "$manpath" = /usr/share/man/man1/pkcstok-migrate.1.gz ] \
        && grep -q '^ERROR CODES' "$W/man.out" && grep -q 'pkcstok-migrate info' "$W/man.out" \
        && [ -f /usr/share/bash-completion/completions/pkcstok-migrate ] \
        && [ "$st" = "install ok installed $DEB_VERSION" ]; then
        ok "6a dpkg -i on $(. /etc/os-release && echo "$PRETTY_NAME"): $st; '$v'; man page at $manpath renders"
    else
        bad "6a dpkg -i on this host (rc=$RC, version '$v', man -w '$manpath', status '$st')"
        cat "$W/dpkg.out" "$W/man.err"
    fi
    dpkg --purge pkcstok-migrate > "$W/purge.out" 2>&1
    RC=$?
    if [ "$RC" = 0 ] && [ ! -e /usr/sbin/pkcstok-migrate ] && [ ! -e /usr/share/man/man1/pkcstok-migrate.1.gz ] \
        && ! dpkg -s pkcstok-migrate > /dev/null 2>&1; then
        HOST_INSTALLED=
        ok "6b dpkg --purge removes it again, nothing left"
    else
        bad "6b dpkg --purge (rc=$RC)"
        cat "$W/purge.out"
    fi
fi

# 7. dpkg -i in a Debian 13 (trixie) amd64 root.
ROOT=$W/trixie
CACHED=${PKCSTOK_ROOTS:-$SRC/.cache/roots}/trixie-amd64
if [ "$(id -u)" != 0 ]; then
    skip "7 Debian 13 root: needs root"
else
    how=
    if [ -f "$CACHED/.pkcstok-root" ] && [ -x "$CACHED/usr/bin/dpkg" ] && [ -x "$CACHED/usr/bin/man" ]; then
        # A copy: the suites never write into the cached root.
        cp -a "$CACHED" "$ROOT" && how="a copy of $CACHED"
    elif command -v mmdebstrap > /dev/null 2>&1; then
        URI=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        [ -n "$URI" ] || URI=$(sed -n 's/^deb  *\(\[[^]]*\]  *\)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
        if [ -n "$URI" ] && mmdebstrap --quiet --variant=extract --include=dpkg,man-db,libc-bin,dash,coreutils,diffutils \
            trixie "$ROOT" "$URI" > "$W/mmdebstrap.out" 2>&1; then
            # The extract variant leaves out the merged-/usr links and dpkg's status file.
            for l in bin sbin lib lib64; do
                [ -e "$ROOT/$l" ] || [ ! -d "$ROOT/usr/$l" ] || ln -s "usr/$l" "$ROOT/$l"
            done
            mkdir -p "$ROOT/var/lib/dpkg/info" "$ROOT/var/lib/dpkg/updates" "$ROOT/tmp"
            [ -f "$ROOT/var/lib/dpkg/status" ] || : > "$ROOT/var/lib/dpkg/status"
            how="a throwaway root from mmdebstrap --variant=extract"
        else
            cat "$W/mmdebstrap.out"
        fi
    fi
    if [ -z "$how" ]; then
        if command -v mmdebstrap > /dev/null 2>&1; then
            bad "7 could not make a Debian 13 root"
        else
            skip "7 Debian 13 root: neither $CACHED nor mmdebstrap (apt-get install mmdebstrap)"
        fi
    else
        cp "$DEB" "$ROOT/tmp/pkg.deb"
        chroot "$ROOT" /usr/bin/dpkg -i /tmp/pkg.deb > "$W/trixie-dpkg.out" 2>&1
        RC=$?
        osname="Debian 13 (trixie, $(chroot "$ROOT" /usr/lib/x86_64-linux-gnu/libc.so.6 2>/dev/null | head -1 | sed 's/ stable release.*//'))"
        v=$(chroot "$ROOT" /usr/sbin/pkcstok-migrate version 2>&1)
        manpath=$(chroot "$ROOT" /usr/bin/man -w pkcstok-migrate 2>&1)
        chroot "$ROOT" /usr/bin/env MANWIDTH=80 PAGER=cat /usr/bin/man pkcstok-migrate 2> "$W/trixie-man.err" | col -b > "$W/trixie-man.out"
        st=$(chroot "$ROOT" /usr/bin/dpkg-query -W -f '${Status} ${Version}' pkcstok-migrate 2>&1)
        if [ "$RC" = 0 ] && [ "$v" = "$VERSION_LINE" ] && [ "$manpath" = /usr/share/man/man1/pkcstok-migrate.1.gz ] \
            && grep -q '^EXIT STATUS' "$W/trixie-man.out" && grep -q 'opencryptoki.conf_BAK' "$W/trixie-man.out" \
            && [ "$st" = "install ok installed $DEB_VERSION" ]; then
            ok "7 dpkg -i in $osname amd64 ($how): $st; '$v'; man pkcstok-migrate renders"
        else
            bad "7 Debian 13 root ($how; rc=$RC, version '$v', man -w '$manpath', status '$st')"
            cat "$W/trixie-dpkg.out" "$W/trixie-man.err"
            head -5 "$W/trixie-man.out"
        fi
    fi
fi

echo "$PASS passed, $FAILN failed"
[ "$FAILN" = 0 ]
