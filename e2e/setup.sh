#!/bin/sh
# make setup: installs everything `make test` needs on a fresh Debian 12 machine with Go, as
# root, and does nothing that is already done (idempotent):
#
#   * Debian 12's opencryptoki 3.8.1 and opensc on the host (e2e/install.sh: group pkcs11 as a
#     system group, a pkcsslotd the package starts is stopped, /run/lock);
#   * mmdebstrap arch-test qemu-user-static strace ansible-core python3-voluptuous rpm man-db
#     time acl xfsprogs btrfs-progs, and for make fleet openssh-server openssh-client jq
#     (apt-get install --no-install-recommends; a policy-rc.d keeps openssh-server's sshd from
#     being started: the fleet runs sshds of its own);
#   * the group pkcs11;
#   * the cached Debian roots under .cache/roots (e2e/mkroot.sh): trixie amd64 (opencryptoki
#     3.23, opensc, dpkg, man-db), trixie s390x (opencryptoki 3.23 under qemu), bookworm amd64
#     (opencryptoki 3.8.1), and testing amd64, s390x, ppc64el and arm64 (opencryptoki 3.27, the
#     newest release; the three foreign ones under qemu), and testing amd64 once more with
#     Debian's OpenSSL FIPS provider in force (testing-amd64-fips: openssl,
#     openssl-provider-fips, `openssl fipsinstall`, OpenSSL's standard FIPS openssl.cnf);
#   * the fleet's roots under .cache/fleet/base (make fleet, ansible/tests/fleet.sh; $PKCSTOK_FLEET_DIR/base):
#     trixie amd64 and s390x, testing s390x and ppc64el, each with opencryptoki, opensc,
#     python3 (Ansible's module runtime), bash and coreutils; the ppc64el one (the FIPS host
#     p1) with the FIPS provider in force like testing-amd64-fips (testing-ppc64el-fips).
#
# Without root, or when the package archive cannot be reached, it says what is missing and
# exits 1.
set -eu

say() { echo "make setup: $*" >&2; }
cd "$(dirname "$0")/.."
start=$(date +%s)

PACKAGES="mmdebstrap arch-test qemu-user-static strace ansible-core python3-voluptuous opencryptoki opensc rpm man-db time acl xfsprogs btrfs-progs openssh-server openssh-client jq"
# suite arch packages [variant] (variant fips: mkroot.sh adds openssl and openssl-provider-fips
# and puts OpenSSL's FIPS configuration in force; the root is <suite>-<arch>-fips)
ROOTS="trixie amd64 opencryptoki,opensc,libc-bin,dpkg,man-db,dash,coreutils,diffutils
trixie s390x opencryptoki,opensc,libc-bin
bookworm amd64 opencryptoki,opensc,libc-bin
testing amd64 opencryptoki,opensc,libc-bin
testing s390x opencryptoki,opensc,libc-bin
testing ppc64el opencryptoki,opensc,libc-bin
testing arm64 opencryptoki,opensc,libc-bin
testing amd64 opencryptoki,opensc,libc-bin fips"
# dash, coreutils and diffutils in trixie-amd64: man runs nroff (a shell script) and dpkg -i
# needs sh, rm and diff; the extract variant brings only what is named and its dependencies.

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing_packages() {
	for p in $PACKAGES; do
		installed "$p" || printf '%s ' "$p"
	done
}

missing_roots() {
	cache=${PKCSTOK_ROOTS:-$(pwd)/.cache/roots}
	printf '%s\n' "$ROOTS" | while read -r suite arch _ variant; do
		d=$cache/$suite-$arch${variant:+-$variant}
		[ -f "$d/.pkcstok-root" ] || printf '%s ' "$d"
	done
}

if [ "$(id -u)" != 0 ]; then
	say "must run as root (apt-get install, groupadd, mmdebstrap, mount); missing now:"
	mp=$(missing_packages)
	[ -z "$mp" ] || say "  packages: $mp"
	getent group pkcs11 >/dev/null || say "  group: pkcs11"
	mr=$(missing_roots)
	[ -z "$mr" ] || say "  roots: $mr"
	[ -n "$mp$mr" ] || ! getent group pkcs11 >/dev/null || say "  nothing, as far as a non-root user can tell"
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
mkdir -p /run/lock

# 1. The host's 3.8.1 (with its precautions) first: it also creates the group pkcs11.
sh e2e/install.sh || { say "could not install opencryptoki and opensc: is the package archive reachable?"; exit 1; }

# 2. The rest.
mp=$(missing_packages)
if [ -n "$mp" ]; then
	say "installing: $mp"
	# openssh-server's postinst would start a system sshd on port 22: not wanted here.
	prc=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		prc=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\n# make setup (e2e/setup.sh): no service starts while it installs\nexit 101\n' >"$prc"
		chmod 0755 "$prc"
	fi
	if ! apt-get update -q || ! apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $mp; then
		[ -z "$prc" ] || rm -f "$prc"
		say "could not install: $mp (is the package archive in /etc/apt/sources.list.d reachable?)"
		exit 1
	fi
	[ -z "$prc" ] || rm -f "$prc"
	mp=$(missing_packages)
	[ -z "$mp" ] || { say "still missing after apt-get install: $mp"; exit 1; }
fi

# 3. The group (install.sh recreates it too; here for a machine where opencryptoki was already
#    installed and the group deleted since).
getent group pkcs11 >/dev/null || groupadd -r pkcs11

# 4. The roots.
printf '%s\n' "$ROOTS" | while read -r suite arch pkgs variant; do
	t0=$(date +%s)
	name=$suite-$arch${variant:+-$variant}
	# shellcheck disable=SC2086 # variant: no argument when empty
	sh e2e/mkroot.sh "$suite" "$arch" "$pkgs" $variant || { say "could not build the $name root (archive reachable?)"; exit 1; }
	say "root $name: $(($(date +%s) - t0)) s"
done

# 5. The fleet's roots (make fleet): python3 in them for Ansible's modules. The ppc64el one is
#    the FIPS host p1's: Debian's FIPS provider in force (variant fips).
FLEET_ROOTS="trixie amd64
trixie s390x
testing s390x
testing ppc64el fips"
printf '%s\n' "$FLEET_ROOTS" | while read -r suite arch variant; do
	t0=$(date +%s)
	name=$suite-$arch${variant:+-$variant}
	# shellcheck disable=SC2086 # variant: no argument when empty
	PKCSTOK_ROOTS=${PKCSTOK_FLEET_DIR:-$(pwd)/.cache/fleet}/base sh e2e/mkroot.sh "$suite" "$arch" opencryptoki,opensc,libc-bin,python3,bash,dash,coreutils $variant ||
		{ say "could not build the fleet's $name root (archive reachable?)"; exit 1; }
	say "fleet root $name: $(($(date +%s) - t0)) s"
done

say "ready in $(($(date +%s) - start)) s: host opencryptoki $(dpkg-query -W -f='${Version}' opencryptoki), roots in ${PKCSTOK_ROOTS:-.cache/roots}"
