#!/usr/bin/env bash
# make fs-suites (root): the suites that write repositories, again on other file
# systems. For each of $PKCSTOK_FS (default "xfs btrfs"; "ext4" works too) a sparse image in
# .cache/fs.* is made (mkfs.xfs, mkfs.btrfs from xfsprogs, btrfs-progs: make setup),
# loop-mounted, and on it run
#   * make crash with PKCSTOK_CRASH_DIR there (the traced runs and every crash state on that
#     file system, no tmpfs) and PKCSTOK_CRASH_BUDGET=$PKCSTOK_CRASH_BUDGET (default 30):
#     every strict state of each scenario and at most that many in all; without the token
#     library's check (PKCSTOK_CRASH_LIBRARY=0: it does not depend on the file system);
#   * the CLI testscripts (plan, apply, rerun, rollback, legacy -s -d -c, ...) and
#     TestReliability -short of ./cmd/pkcstok-migrate with TMPDIR there (its fault matrix and
#     disk-full runs mount their own tmpfs: kill semantics do not depend on the file system).
# The image is unmounted and its loop device detached on every exit (trap). One summary line
# per file system at the end; a missing tool or a test that skips fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
MAKE=${MAKE:-make}
FSES=${PKCSTOK_FS:-xfs btrfs}
BUDGET=${PKCSTOK_CRASH_BUDGET:-30}
SIZE=${PKCSTOK_FS_SIZE:-1G} # sparse; XFS needs at least 300 MiB

say() { echo "fs-suites: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root (mkfs, mount -o loop)"; exit 1; }
for fs in $FSES; do
	case $fs in xfs | btrfs | ext4) ;; *) say "unknown file system $fs (xfs, btrfs, ext4)"; exit 1 ;; esac
	command -v "mkfs.$fs" >/dev/null || { say "mkfs.$fs missing (make setup installs xfsprogs and btrfs-progs)"; exit 1; }
	grep -qw "$fs" /proc/filesystems || modprobe "$fs" 2>/dev/null || grep -qw "$fs" /proc/filesystems ||
		{ say "the kernel has no $fs"; exit 1; }
done

mkdir -p .cache
work=$(mktemp -d "$(pwd)/.cache/fs.XXXXXX")
mounted=()
cleanup() {
	local rc=$? m img dev i
	for m in "${mounted[@]}"; do
		for i in 1 2 3; do
			mountpoint -q "$m" || break
			umount "$m" 2>/dev/null || sleep 1
		done
		mountpoint -q "$m" && { umount -l "$m" || say "could not unmount $m"; }
		img=${m%.mnt}.img
		for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do
			losetup -d "$dev" || say "could not detach $dev ($img)"
		done
	done
	rm -rf --one-file-system "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary=()
failed=0
for fs in $FSES; do
	start=$(date +%s)
	img=$work/$fs.img mnt=$work/$fs.mnt log=$work/$fs
	truncate -s "$SIZE" "$img"
	case $fs in
	xfs) mkfs.xfs -q -f "$img" ;;
	btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
	ext4) mkfs.ext4 -q -F "$img" ;;
	esac
	mkdir "$mnt"
	mount -o loop "$img" "$mnt"
	mounted+=("$mnt")
	chmod 0755 "$mnt"
	got=$(stat -f -c %T "$mnt")
	[ "$got" = "$fs" ] || [ "$fs" = ext4 -a "$got" = ext2/ext3 ] || { say "$mnt is $got, not $fs"; exit 1; }
	say "$fs: $(findmnt -n -o SOURCE "$mnt") on $mnt ($SIZE sparse)"

	crash=FAIL
	# Without the token library's check: the crash states are the model's, the same on every
	# file system, and the library reads its copy in its own root (make crash has it).
	if PKCSTOK_CRASH_DIR=$mnt PKCSTOK_CRASH_BUDGET=$BUDGET PKCSTOK_CRASH_LIBRARY=0 "$MAKE" --no-print-directory crash >"$log.crash" 2>&1; then
		crash=ok
	fi
	fig=$(grep -o 'FIGURES: .*' "$log.crash" | tail -1 || true)
	if [ "$crash" = ok ] && ! grep -q "on $fs;" <<<"$fig"; then
		crash="FAIL (the figures are not from $fs: $fig)"
	fi
	cuts=$(sed -n 's/.*FIGURES: \([0-9]*\) cut points.*/\1/p' <<<"$fig")
	ran=$(sed -n 's/.* \([0-9]*\) rebooted into.*/\1/p' <<<"$fig")
	lost=$(sed -n 's/.*objects checked [0-9]*, lost \([0-9]*\).*/\1/p' <<<"$fig")

	mkdir "$mnt/tmp"
	cli=FAIL
	if TMPDIR=$mnt/tmp "$GO" test -tags faultinject -count=1 -short -v -timeout 15m \
		-run '^(TestScripts|TestSlotdScripts|TestReliability)$' ./cmd/pkcstok-migrate >"$log.cli" 2>&1; then
		cli=ok
	fi
	pass=$(grep -c -- '--- PASS: Test\(Slotd\)\?Scripts/' "$log.cli" || true)
	fail=$(grep -c -- '--- FAIL: Test\(Slotd\)\?Scripts/' "$log.cli" || true)
	if grep -q -- '--- SKIP' "$log.cli"; then
		cli="FAIL (skipped: $(grep -o -- '--- SKIP: [^ ]*' "$log.cli" | cut -d' ' -f3 | tr '\n' ' '))"
	fi
	rel=$(sed -n 's/^--- \([A-Z]*\): TestReliability (.*/\1/p' "$log.cli")
	[ "$rel" = PASS ] || cli="FAIL (TestReliability: ${rel:-not run})"
	rlost=$(sed -n 's/.*FIGURES: steps interrupted.*objects lost \([0-9]*\),.*/\1/p' "$log.cli")

	line="$fs: crash $crash: ${cuts:-?} cut points, ${ran:-?} states rebooted into (budget $BUDGET), ${lost:-?} objects lost; CLI $cli: scripts $pass passed, $fail failed (plan, apply, rerun, rollback, legacy, ...), TestReliability -short ${rel:-not run}, ${rlost:-?} objects lost; $(($(date +%s) - start))s"
	summary+=("$line")
	say "$line"
	case "$crash $cli" in "ok ok") ;; *)
		failed=1
		mkdir -p .cache/fs-suites-logs
		cp "$log.crash" "$log.cli" .cache/fs-suites-logs/
		grep -E -- 'crash_test.go:132|--- FAIL|^FAIL' "$log.crash" | head -20 >&2 || true
		grep -E -- '--- FAIL|\.txtar:[0-9]+:|^FAIL|panic' "$log.cli" | head -30 >&2 || true
		say "$fs: the whole logs: .cache/fs-suites-logs/$fs.crash, $fs.cli" ;;
	esac

	umount "$mnt"
	for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
	rm -f "$img"
done

echo "fs-suites summary:"
printf '  %s\n' "${summary[@]}"
exit $failed
