#!/bin/sh
# make demo: plan and apply on a copy of the bundled example repository.
#   examples/demo.sh BINARY
set -eu
bin=$(readlink -f "$1")
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "demo: run as root (apply sets the token group on every file)" >&2; exit 1; }
getent group pkcs11 >/dev/null || groupadd -r pkcs11
work=$(mktemp -d /tmp/pkcstok-demo.XXXXXX)
cp -r "$here/soft-small/swtok" "$here/soft-small/conf" "$work/"
mkdir -p "$work/swtok/TOK_OBJ"
find "$work/swtok" -type d -exec chmod 0770 {} + -o -type f -exec chmod 0660 {} +
chgrp -R pkcs11 "$work/swtok"
umask 077
printf '{"slot": 3, "datastore": "%s/swtok", "confdir": "%s/conf", "so_pin": "sopin123", "user_pin": "user1234"}\n' "$work" "$work" > "$work/request.json"

echo "== pkcstok-migrate plan (exit 2: changes to make)"
rc=0; "$bin" plan --request - < "$work/request.json" || rc=$?
[ "$rc" = 2 ] || { echo "demo: plan exited $rc" >&2; exit 1; }
echo "== pkcstok-migrate apply"
"$bin" apply --request - < "$work/request.json"
echo "== pkcstok-migrate apply again (changed: false)"
"$bin" apply --request - < "$work/request.json" | grep '"changed": false'
echo "== pkcstok-migrate plan --json=false"
"$bin" plan --json=false --request - < "$work/request.json"
echo "demo: migrated copy left in $work (swtok, swtok_BAK, conf/opencryptoki.conf_BAK)"
