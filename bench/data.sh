#!/bin/sh
# bench/data.sh [N...]: write old-format repositories with N objects into bench/data/n<N>
# (swtok/ and conf/opencryptoki.conf, slot 3, PINs sopin123 / user1234). An existing one is
# kept. About 40 % public data, 40 % private data, 20 % private RSA-sized objects.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
sizes=${*:-10 1000 10000 100000}
mkdir -p bench/data bench/out
$GO build -o bench/out/pkcstok-gentoken ./cmd/pkcstok-gentoken
for n in $sizes; do
	d=bench/data/n$n
	if [ -f "$d/swtok/NVTOK.DAT" ] && [ ! -e "$d/swtok_BAK" ]; then
		echo "bench/data/n$n exists"
		continue
	fi
	bench/out/pkcstok-gentoken -dir "$d/swtok" -n "$n" -conf-dir "$d/conf" -slot 3 -force
done
sync
