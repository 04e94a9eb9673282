#!/bin/sh
# Installs what the end-to-end suite needs: Debian's opencryptoki (3.8.1 on bookworm, the old
# repository format) and opensc (pkcs11-tool). Idempotent; run as root. Exit 0 when everything
# is in place, non-zero (with a message on stderr) when it cannot be installed.
#
# Facts this script works around (checked on Debian 12, opencryptoki 3.8.1+dfsg-3.2+b3):
#  * the package's postinst runs `addgroup --system pkcs11`, which fails when a NON-system
#    group pkcs11 (gid outside 100..999) already exists: create it only as a system group
#    (`groupadd -r pkcs11`) or let the package create it;
#  * pkcsslotd needs /var/lock (-> /run/lock) to exist; it creates /var/lock/opencryptoki
#    itself, otherwise it exits with "Directory /var/lock/opencryptoki missing";
#  * the postinst tries `invoke-rc.d pkcsslotd start`; if that really starts a daemon here, it
#    is stopped again (by the PID in /var/run/pkcsslotd.pid) so that no daemon is left running.
set -eu

say() { echo "e2e/install.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "must run as root"
	exit 1
fi

mkdir -p /run/lock

if g=$(getent group pkcs11); then
	gid=$(printf '%s\n' "$g" | cut -d: -f3)
	if [ "$gid" -lt 100 ] || [ "$gid" -gt 999 ]; then
		if ! dpkg-query -W -f='${Status}' opencryptoki 2>/dev/null | grep -q 'install ok installed'; then
			say "group pkcs11 exists with non-system gid $gid: the opencryptoki package would fail to install (addgroup --system); delete it or recreate it with 'groupadd -r pkcs11'"
			exit 1
		fi
	fi
fi

installed() {
	for p in opencryptoki opensc; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
	done
	return 0
}

slotd_pid() {
	# PID of a running pkcsslotd named by 3.8.1's pid file, or nothing.
	[ -r /var/run/pkcsslotd.pid ] || return 0
	p=$(head -n 1 /var/run/pkcsslotd.pid 2>/dev/null | tr -cd '0-9')
	[ -n "$p" ] || return 0
	[ "$(cat /proc/"$p"/comm 2>/dev/null)" = pkcsslotd ] && echo "$p"
	return 0
}

if ! installed; then
	before=$(slotd_pid)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	# --no-install-recommends: opensc only recommends pcscd, which the suite does not need.
	apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=600 opencryptoki opensc
	after=$(slotd_pid)
	if [ -n "$after" ] && [ "$after" != "$before" ]; then
		say "stopping the pkcsslotd (pid $after) that the package installation started"
		kill "$after"
		i=0
		while [ -d /proc/"$after" ] && [ "$(cut -d' ' -f3 /proc/"$after"/stat 2>/dev/null)" != Z ]; do
			i=$((i + 1))
			[ $i -lt 300 ] || { say "pkcsslotd $after did not stop"; exit 1; }
			sleep 0.1
		done
	fi
fi

for f in /usr/sbin/pkcsslotd /usr/sbin/pkcsconf /usr/bin/pkcs11-tool; do
	[ -e "$f" ] || { say "missing after installation: $f"; exit 1; }
done
ls /usr/lib/*/pkcs11/libopencryptoki.so >/dev/null 2>&1 || { say "missing after installation: /usr/lib/<triplet>/pkcs11/libopencryptoki.so"; exit 1; }
# The package creates the group on its first installation; recreate it (as a system group) if it
# was deleted since.
getent group pkcs11 >/dev/null || groupadd -r pkcs11
say "opencryptoki $(dpkg-query -W -f='${Version}' opencryptoki) and opensc $(dpkg-query -W -f='${Version}' opensc) are installed"
