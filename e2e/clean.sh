#!/bin/sh
# make clean, for .cache (the cached roots and the suites' overlay sessions): first stops what
# a killed suite left running in a session and unmounts everything mounted below .cache
# (deepest first), then removes .cache without crossing into any mount that would remain.
set -eu
cd "$(dirname "$0")/.."
CACHE=$(pwd)/.cache
# The fleet test's hosts run below /run/pkcstok-fleet (ansible/tests/fleet.sh: sshd wants a
# root-owned path): cleaned the same way.
FLEETRUN=${PKCSTOK_FLEET_RUN:-/run/pkcstok-fleet}
if [ -e "$FLEETRUN" ]; then
	for p in /proc/[0-9]*; do
		r=$(readlink "$p/root" 2>/dev/null) || continue
		case $r in "$FLEETRUN"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
	done
	awk -v c="$FLEETRUN" 'index($5, c "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || echo "make clean: could not unmount $m" >&2
	done
	awk -v c="$FLEETRUN" 'index($5, c "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo ||
		rm -rf --one-file-system "$FLEETRUN"
fi
[ -e "$CACHE" ] || exit 0

# Processes chrooted below .cache (a pkcsslotd of a suite killed hard).
for p in /proc/[0-9]*; do
	r=$(readlink "$p/root" 2>/dev/null) || continue
	case $r in "$CACHE"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
done

# Mount points below .cache, deepest first (mountinfo field 5; octal escapes are not expected
# in these paths).
awk -v c="$CACHE" '$5 == c || index($5, c "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
	sort -rn | cut -d' ' -f2- | while read -r m; do
	umount "$m" 2>/dev/null || umount -l "$m" || echo "make clean: could not unmount $m" >&2
done

if awk -v c="$CACHE" '$5 == c || index($5, c "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
	echo "make clean: something is still mounted below $CACHE: not removing it" >&2
	exit 1
fi
rm -rf --one-file-system "$CACHE"
