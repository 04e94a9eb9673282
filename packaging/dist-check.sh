#!/bin/sh
# make dist-check: build dist twice and require identical bytes. The second build runs from a
# copy of the source tree at another path (so -trimpath is tested), with another umask and
# another TMPDIR; both get the same VERSION and SOURCE_DATE_EPOCH, as two checkouts of one
# commit would.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
cd "$SRC"
VERSION=${VERSION:-$(git describe --tags --always --dirty)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export VERSION SOURCE_DATE_EPOCH

W=$(mktemp -d /tmp/pkcstok-dist-check.XXXXXX)
trap 'rm -rf "$W"' EXIT INT TERM
mkdir -p "$W/copy/src-elsewhere" "$W/tmp-b"

sh packaging/dist.sh "$W/a" > "$W/a.log" 2>&1 || { cat "$W/a.log"; exit 1; }
# The copy: the tree as it is (uncommitted changes too), without git and build outputs.
tar -C "$SRC" --exclude=./.git --exclude=./dist --exclude=./bin --exclude=./.cache -cf - . |
    tar -C "$W/copy/src-elsewhere" -xf -
(umask 077 && TMPDIR=$W/tmp-b sh "$W/copy/src-elsewhere/packaging/dist.sh" "$W/b") > "$W/b.log" 2>&1 ||
    { cat "$W/b.log"; exit 1; }

fail=0
for f in "$W"/a/*; do
    n=$(basename "$f")
    if cmp -s "$f" "$W/b/$n"; then
        echo "same  $(sha256sum < "$f" | cut -c1-16)  $n"
    else
        echo "DIFFERENT  $n"
        fail=1
    fi
done
if [ "$(ls "$W/a")" != "$(ls "$W/b")" ]; then
    echo "the two builds made different files:"
    diff "$W/a.log" "$W/b.log" || true
    fail=1
fi
if [ $fail = 0 ]; then
    echo "dist-check: two builds, $(ls "$W/a" | wc -l) files, identical bytes"
else
    echo "dist-check: FAILED: the builds differ"
fi
exit $fail
