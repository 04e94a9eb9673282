#!/bin/sh
# bench/bench.sh: `make bench`. Needs root (apply chowns to the token group), the group
# pkcs11, /usr/bin/time (apt-get install -y time) and bench/data (`make bench-data`).
#
# 1. Whole-process runs: `pkcstok-migrate apply` under /usr/bin/time -v on bench/data/n<N>
#    for N = 10, 1,000, 10,000, 100,000 (wall time, max RSS). Each run is undone with
#    `rollback` and the migrated tree moved aside, so the same original is migrated every
#    time and nothing is deleted before a timed run: this machine's root file system is ext4
#    without a journal, where inode allocation skips inodes freed in the last minutes (a
#    recent mass delete makes every file creation scan them, several times slower).
# 2. Go benchmarks: BenchmarkPlan, BenchmarkApply (N = 10 .. 10,000; 100,000 with
#    BENCH_LARGE=1), BenchmarkReencryptObject.
# Results go to bench/RESULTS.md.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
RUNS=${RUNS:-3}          # whole-process runs per N (the median is reported)
SETTLE=${SETTLE:-5}      # seconds of quiet after sync before the timed runs
SIZES=${SIZES:-10 1000 10000 100000}
out=bench/out
mkdir -p $out
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }
for n in $SIZES; do
	[ -f bench/data/n$n/swtok/NVTOK.DAT ] || { echo "bench: bench/data/n$n missing: run make bench-data" >&2; exit 1; }
done
CGO_ENABLED=0 $GO build -o $out/pkcstok-migrate ./cmd/pkcstok-migrate
bin=$out/pkcstok-migrate

req() { printf '{"slot":3,"datastore":"%s/swtok","confdir":"%s/conf","so_pin":"sopin123","user_pin":"user1234"}' "$1" "$1"; }
trash=bench/data/trash
mkdir -p $trash

sync
sleep "$SETTLE"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
: >$out/whole.txt
for n in $SIZES; do
	d=$(cd bench/data/n$n && pwd)
	r=1
	while [ $r -le "$RUNS" ]; do
		log=$out/apply-n$n-r$r.log
		if ! req "$d" | /usr/bin/time -v $bin apply --request - >$out/apply-n$n-r$r.json 2>$log; then
			echo "bench: apply n=$n failed, see $log" >&2; exit 1
		fi
		wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' $log | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
		rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' $log)
		usr=$(sed -n 's/.*User time (seconds): //p' $log)
		sys=$(sed -n 's/.*System time (seconds): //p' $log)
		echo "$n $r $wall $rss $usr $sys" >>$out/whole.txt
		echo "apply n=$n run $r: ${wall} s, max RSS ${rss} KiB (user ${usr} s, system ${sys} s)"
		# Undo: rollback, then move the migrated tree and conf aside (deleted at the end).
		req "$d" | $bin rollback --request - >/dev/null
		t=$trash/n$n-r$r-$$
		mkdir -p $t
		mv "$d/swtok_ROLLED_BACK" $t/swtok
		mv "$d/conf/opencryptoki.conf_ROLLED_BACK" $t/conf
		r=$((r + 1))
	done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "Go benchmarks..."
PKCSTOK_BENCH_DATA=$(pwd)/bench/data $GO test -run '^$' -bench 'BenchmarkPlan|BenchmarkApply|BenchmarkReencryptObject' \
	-benchtime "${BENCHTIME:-3x}" -count 1 ./plan ./apply | tee $out/gobench.txt

# RESULTS.md
{
	echo "# pkcstok-migrate benchmark results"
	echo
	echo "Written by \`make bench\` (bench/bench.sh) on $(date -u +%Y-%m-%d) UTC. Not run in CI; no test asserts a time."
	echo
	echo "## Machine"
	echo
	echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), nproc $(nproc)"
	echo "- memory: $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "- kernel: $(uname -r)"
	echo "- go: $($GO env GOVERSION), CGO_ENABLED=0"
	echo "- file system of bench/data: $(df -T bench/data | awk 'NR == 2 { print $2 }') ($(grep -q . /proc/fs/jbd2/* 2>/dev/null && echo journal || echo 'no journal'))"
	echo "- load average before / after the whole-process runs: $load_before / $load_after (other work was running on the machine)"
	echo
	echo "## Whole process: \`pkcstok-migrate apply\` under /usr/bin/time -v"
	echo
	echo "Median of $RUNS runs per N (all runs listed below). Warm page cache; PBKDF2-SHA512 (4 derivations,"
	echo "100,000 iterations, 2 at a time on 2 cores) is part of every run. Upstream reference: the C tool on the"
	echo "same kind of machine, 1,000 objects ≈ 1.1 s, 10,000 ≈ 9 s (3.4–10.6 s); target: half of it, and"
	echo "100,000 objects in under 30 s with peak RSS under 64 MiB."
	echo
	echo "| N | wall s | per object ms | max RSS MiB | user s | system s | upstream s | target s | met |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
	for n in $SIZES; do
		sort -k3,3n $out/whole.txt | awk -v n=$n -v runs="$RUNS" '
			$1 == n { c++; w[c] = $3; m[c] = $4; u[c] = $5; s[c] = $6 }
			END {
				k = int((c + 1) / 2)
				up = "–"; tg = "–"; met = "–"
				if (n == 1000) { up = "1.1"; tg = "0.55" }
				if (n == 10000) { up = "9"; tg = "4.5" }
				if (n == 100000) { tg = "30" }
				if (tg != "–") met = (w[k] <= tg + 0 ? "yes" : "no")
				if (n == 100000 && m[k] / 1024 >= 64) met = "no (RSS)"
				printf "| %d | %.2f | %.3f | %.1f | %.2f | %.2f | %s | %s | %s |\n", n, w[k], w[k] * 1000 / n, m[k] / 1024, u[k], s[k], up, tg, met
			}'
	done
	echo
	echo "All runs (N, run, wall s, max RSS KiB, user s, system s):"
	echo
	echo '```'
	cat $out/whole.txt
	echo '```'
	echo
	echo "## Go benchmarks"
	echo
	echo "\`go test -bench 'BenchmarkPlan|BenchmarkApply|BenchmarkReencryptObject' -benchtime ${BENCHTIME:-3x} ./plan ./apply\`"
	echo "(in process; ns/object = ns/op ÷ N; BenchmarkApply undoes each run with Rollback outside the timer):"
	echo
	echo '```'
	grep -E '^(Benchmark|goos|goarch|cpu|pkg)' $out/gobench.txt
	echo '```'
	if [ -f bench/NOTES.md ]; then
		echo
		cat bench/NOTES.md
	fi
} >bench/RESULTS.md
rm -rf $trash
echo "wrote bench/RESULTS.md"
