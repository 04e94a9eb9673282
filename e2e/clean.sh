#!/bin/sh
# make clean, for .cache (the cached roots and the suites' overlay sessions) and for the fleet
# test's hosts, which run below /run/pkcstok-fleet (ansible/tests/fleet.sh: sshd wants a
# root-owned path): first stops what a killed suite left running there and unmounts everything
# mounted below it (deepest first), then removes it without crossing into any mount that would
# remain.
set -eu
cd "$(dirname "$0")/.."

# clean DIR: the processes chrooted below DIR (a pkcsslotd of a suite killed hard) killed, the
# mount points below DIR unmounted deepest first (mountinfo field 5; octal escapes are not
# expected in these paths), DIR removed; fails if something stays mounted.
clean() {
	dir=$1
	[ -e "$dir" ] || return 0
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2>/dev/null) || continue
		case $r in "$dir"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
	done
	awk -v c="$dir" '$5 == c || index($5, c "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || echo "make clean: could not unmount $m" >&2
	done
	if awk -v c="$dir" '$5 == c || index($5, c "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo "make clean: something is still mounted below $dir: not removing it" >&2
		return 1
	fi
	rm -rf --one-file-system "$dir"
}

clean "${PKCSTOK_FLEET_RUN:-/run/pkcstok-fleet}"
clean "$(pwd)/.cache"
