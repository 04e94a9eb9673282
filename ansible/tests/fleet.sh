#!/bin/bash
# make fleet (issue 21): a real mixed-architecture fleet on this machine, driven by the real
# ansible-playbook over SSH.
#
#   bash ansible/tests/fleet.sh            (root, after make setup and make cross)
#
# Four hosts, each its own Debian root (built by e2e/setup.sh with python3 in it, under
# .cache/fleet/base) in an overlay of its own (.cache/fleet/run/<host>/root, so every run starts
# from the same roots), each served by its own sshd on 127.0.0.1:<port>:
#
#   z1  s390x   Debian 13 (trixie)   openCryptoki 3.23  Soft (slot 3) and ICA (slot 1)
#   x1  amd64   Debian 13 (trixie)   openCryptoki 3.23  Soft (slot 3), PINs of its own
#   z2  s390x   Debian testing       openCryptoki 3.27  Soft (slot 3)
#   p1  ppc64el Debian testing       openCryptoki 3.27  Soft (slot 3), FIPS mode on
#
# The sshd is this machine's own /usr/sbin/sshd (Debian's openssh-server) with a config of
# its own: key authentication only, root with prohibit-password, ChrootDirectory the host's
# root, internal-sftp. Each sshd runs in a PID and mount namespace of its own
# (unshare --pid --fork --mount --kill-child) with a proc mounted at <root>/proc inside it, so
# that a host sees only its own processes: pkcstok-migrate refuses to change a repository
# while any pkcsslotd is visible, and four hosts' daemons must not see each other. Inside the
# chroot everything (bash, python3, pkcsslotd, the tool) is the root's own architecture, run
# by binfmt_misc and qemu-user-static (flag F). A `service` shim (ansible/tests/fleet/service)
# really stops and starts that root's pkcsslotd.
#
# p1's FIPS mode: this machine's kernel has no /proc/sys/crypto, so p1's namespace gets a
# /proc/sys of its own: a tmpfs holding binds of the real /proc/sys directories plus
# crypto/fips_enabled = 1. The release binary and Ansible's own fact gathering read it like
# the real file; nothing in the binary is redirected.
#
# Secrets: the PINs are in an Ansible Vault file (its password in a file this script
# writes); the test tokens are made with the host's own library through Python's ctypes
# with the PINs on stdin (ansible/plugins/module_utils/p11.py), so no PIN is ever in an argv.
# Every output and log is searched for the PINs at the end, and /proc/*/cmdline of every
# process on the machine is sampled during the run.
#
# Exit 0 only when every check passed; prints a summary table. With CI=true a missing
# prerequisite fails; otherwise it skips with exit 0 (and says that it skipped).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
COLL=$(cd "$HERE/.." && pwd)
FLEET=${PKCSTOK_FLEET_DIR:-$REPO/.cache/fleet}
BASE=$FLEET/base
RUN=$FLEET/run
T0=$(date +%s)

# name  root             port  arch-of-go  slots (slot:stdll:label ...)
HOSTS="z1 trixie-s390x 2201 s390x 3:libpkcs11_sw.so:z1-soft,1:libpkcs11_ica.so:z1-ica
x1 trixie-amd64 2202 amd64 3:libpkcs11_sw.so:x1-soft
z2 testing-s390x 2203 s390x 3:libpkcs11_sw.so:z2-soft
p1 testing-ppc64el 2204 ppc64le 3:libpkcs11_sw.so:p1-soft"
NAMES="z1 x1 z2 p1"
FIPS_HOST=p1
CANARY_HOST=p1

# PINs (4-8 bytes for Soft and ICA). x1 has PINs of its own.
SO_PIN=flSO-613 USER_PIN=flUS-284
X1_SO_PIN=x1so-952 X1_USER_PIN=x1us-477 X1_WRONG_PIN=x1us-000

PASS=0 FAILN=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAILN=$((FAILN + 1)); echo "FAIL - $*"; }
say() { echo "fleet: $*" >&2; }
elapsed() { echo "$(($(date +%s) - T0)) s"; }

skip_or_fail() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL - fleet: $* (CI=true: a missing prerequisite fails; run make setup)"
		exit 1
	fi
	echo "SKIP - fleet: $* (run make setup; this is a skip, not a pass)"
	exit 0
}

# --- prerequisites ------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip_or_fail "must run as root (mount, unshare, chroot, sshd)"
for c in ansible ansible-playbook ansible-vault ssh ssh-keygen unshare mount /usr/sbin/sshd qemu-s390x-static qemu-ppc64le-static; do
	command -v "$c" >/dev/null 2>&1 || skip_or_fail "$c is missing"
done
while read -r name root port goarch slots; do
	[ -f "$BASE/$root/.pkcstok-root" ] || skip_or_fail "root $BASE/$root is not built"
	[ -x "$BASE/$root/usr/bin/python3" ] || skip_or_fail "root $BASE/$root has no python3"
	[ -f "$REPO/bin/pkcstok-migrate-linux-$goarch" ] || skip_or_fail "bin/pkcstok-migrate-linux-$goarch is missing (make cross)"
done <<<"$HOSTS"

# binfmt_misc with flag F: the kernel hands s390x and ppc64le executables inside the roots to
# qemu (the Makefile's unit-* targets register the same entries).
BINFMT=/proc/sys/fs/binfmt_misc
[ -e $BINFMT/register ] || mount -t binfmt_misc binfmt_misc $BINFMT || skip_or_fail "cannot mount binfmt_misc"
[ -e $BINFMT/qemu-s390x ] || printf '%s\n' ':qemu-s390x:M::\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff:/usr/bin/qemu-s390x-static:F' >$BINFMT/register
[ -e $BINFMT/qemu-ppc64le ] || printf '%s\n' ':qemu-ppc64le:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00:\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00:/usr/bin/qemu-ppc64le-static:F' >$BINFMT/register
for q in qemu-s390x qemu-ppc64le; do
	grep -q '^flags: .*F' $BINFMT/$q 2>/dev/null || skip_or_fail "binfmt_misc entry $q is not registered with flag F"
done

# --- tear down what an earlier run left ------------------------------------------------------
teardown() {
	local h pid
	for h in $NAMES; do
		pid=$(cat "$RUN/$h/unshare.pid" 2>/dev/null) || continue
		# only the unshare this script started (its command line names this host's config)
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$RUN/$h/sshd_config"; then
			# unshare ignores SIGTERM while it waits; its child is the namespace's init (the
			# sshd): when that ends, the kernel kills every process of the namespace.
			for c in $(pgrep -P "$pid"); do kill "$c" 2>/dev/null; done
			for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
			[ -d "/proc/$pid" ] && { for c in $(pgrep -P "$pid"); do kill -KILL "$c" 2>/dev/null; done; sleep 0.5; }
		fi
		rm -f "$RUN/$h/unshare.pid"
	done
	# ssh control masters of the last run
	for s in "$RUN"/cp/*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit dummy 2>/dev/null; done
	for h in $NAMES; do
		mountpoint -q "$RUN/$h/root" && { umount "$RUN/$h/root" || umount -l "$RUN/$h/root"; }
	done
	return 0
}
teardown
if [ "${KEEP:-}" != 1 ]; then
	trap 'teardown; [ -n "${SAMPLER:-}" ] && kill $SAMPLER 2>/dev/null' EXIT
fi
rm -rf --one-file-system "$RUN"
mkdir -p "$RUN/cp" "$RUN/out" /run/sshd
chmod 700 "$RUN"
OUT=$RUN/out

# --- keys, vault, collection -------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C fleet-client -f "$RUN/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C fleet-host -f "$RUN/ssh_host_ed25519_key"
cp "$RUN/id_ed25519.pub" "$RUN/authorized_keys"
chmod 600 "$RUN/authorized_keys"
: >"$RUN/known_hosts"

# --- the hosts -----------------------------------------------------------------------------------
conf_of() { # slots -> opencryptoki.conf (no tokversion: the library writes the old format)
	printf 'version opencryptoki-3.1\n'
	local IFS=,
	for s in $1; do
		printf '\nslot %s\n{\nstdll = %s\n}\n' "${s%%:*}" "$(echo "$s" | cut -d: -f2)"
	done
}

up_host() { # name root port goarch slots
	local h=$1 root=$2 port=$3 d=$RUN/$1 r=$RUN/$1/root
	mkdir -p "$d/upper" "$d/work" "$r"
	mount -t overlay overlay -o "lowerdir=$BASE/$root,upperdir=$d/upper,workdir=$d/work" "$r" || return 1
	install -m 0755 "$HERE/fleet/service" "$r/usr/sbin/service"
	local gid
	gid=$(stat -c %g "$r/var/lib/opencryptoki")
	conf_of "$5" >"$r/etc/opencryptoki/opencryptoki.conf"
	chown "0:$gid" "$r/etc/opencryptoki/opencryptoki.conf"
	chmod 0640 "$r/etc/opencryptoki/opencryptoki.conf"
	mkdir -p "$r/root/.ansible/tmp"
	cat >"$d/sshd_config" <<-EOF
		# fleet host $h ($root): this machine's sshd, chrooted logins into the host's root
		Port $port
		ListenAddress 127.0.0.1
		HostKey $RUN/ssh_host_ed25519_key
		PidFile none
		AuthorizedKeysFile $RUN/authorized_keys
		PubkeyAuthentication yes
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		PermitRootLogin prohibit-password
		AllowUsers root
		UsePAM no
		ChrootDirectory $r
		Subsystem sftp internal-sftp
		PermitUserEnvironment no
		LogLevel VERBOSE
		MaxStartups 30:30:60
		MaxSessions 30
		PrintMotd no
		PrintLastLog no
	EOF
	if [ "$h" = "$CANARY_HOST" ]; then
		# The canary's test-only hook (pkcstok_migrate: verify_with_library): armed per run by
		# the file it names, see the rollout below. Only this host's sessions get it.
		printf 'SetEnv PKCSTOK_MIGRATE_TEST_CANARY=/run/pkcstok-test-canary\n' >>"$d/sshd_config"
	fi
	local fips=
	[ "$h" = "$FIPS_HOST" ] && fips=1
	# PID + mount namespace: proc of its own at <root>/proc; for the FIPS host a /proc/sys of
	# its own with crypto/fips_enabled = 1 (see the top of this file).
	setsid unshare --pid --fork --mount --kill-child -- sh -c '
		set -e
		r=$1 cfg=$2 log=$3 fips=$4
		mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
		if [ -n "$fips" ]; then
			t=$(mktemp -d)
			mount --bind "$r/proc/sys" "$t"
			mount -t tmpfs -o mode=0555,size=64k tmpfs "$r/proc/sys"
			for s in "$t"/*; do mkdir "$r/proc/sys/${s##*/}"; mount --rbind "$s" "$r/proc/sys/${s##*/}"; done
			mkdir "$r/proc/sys/crypto"
			echo 1 >"$r/proc/sys/crypto/fips_enabled"
			chmod 0444 "$r/proc/sys/crypto/fips_enabled"
			mount -o remount,ro "$r/proc/sys"
			umount -l "$t"
		fi
		exec /usr/sbin/sshd -D -e -f "$cfg" -E "$log"
	' fleet-sshd "$r" "$d/sshd_config" "$d/sshd.log" "$fips" </dev/null >"$d/unshare.out" 2>&1 &
	echo $! >"$d/unshare.pid"
	# cmdline of that unshare names the config (teardown checks it)
	local i
	for i in $(seq 100); do
		ssh-keyscan -p "$port" -t ed25519 127.0.0.1 2>/dev/null | sed "s/^127.0.0.1/[127.0.0.1]:$port/" >"$d/known" && [ -s "$d/known" ] && break
		sleep 0.2
	done
	[ -s "$d/known" ] || { say "$h: sshd did not come up: $(cat "$d/unshare.out" "$d/sshd.log" 2>/dev/null)"; return 1; }
	cat "$d/known" >>"$RUN/known_hosts"
}

SSHOPTS=(-o BatchMode=yes -o IdentitiesOnly=yes -i "$RUN/id_ed25519" -o UserKnownHostsFile="$RUN/known_hosts"
	-o StrictHostKeyChecking=yes -o ControlMaster=auto -o ControlPersist=600 -o ControlPath="$RUN/cp/%h-%p-%r" -l root)
port_of() { awk -v h="$1" '$1 == h { print $3 }' <<<"$HOSTS"; }
on() { # on HOST COMMAND...: over SSH (the same control master as ansible's)
	local h=$1
	shift
	ssh "${SSHOPTS[@]}" -p "$(port_of "$h")" 127.0.0.1 "$@"
}
# p11 HOST < JSON-REQUEST: the collection's ctypes helper run by the host's python3, with the
# request (PINs) on stdin; prints the JSON answer.
p11() {
	local prog
	prog=$(
		cat "$COLL/plugins/module_utils/p11.py"
		cat <<-'EOF'

			import json as _json, sys as _sys
			_req = _json.loads(_sys.stdin.readline())
			_pin = lambda k: _req[k].encode() if k in _req else None
			try:
			    if _req['op'] == 'populate':
			        populate(None, _req['slot'], _req['label'], _pin('so_pin'), _pin('user_pin'))
			        _out = {'ok': True}
			    elif _req['op'] == 'list':
			        _out = {'ok': True, 'objects': listing(None, _req['slot'], _pin('user_pin'))}
			    elif _req['op'] == 'count':
			        _out = {'ok': True, 'count': count_objects(None, _req['slot'], _pin('user_pin'))}
			    else:
			        _out = {'ok': False, 'error': 'unknown op'}
			except Exception as _e:
			    _out = {'ok': False, 'error': str(_e)}
			_sys.stdout.write(_json.dumps(_out, sort_keys=True) + '\n')
		EOF
	)
	# the program goes to the host as a file (sftp-free: through cat), the request on stdin
	printf '%s\n' "$prog" | on "$1" 'cat > /tmp/fleet-p11.py' || return 1
	on "$1" python3 /tmp/fleet-p11.py
}

pins_of() { # host -> so user (the right ones)
	if [ "$1" = x1 ]; then echo "$X1_SO_PIN $X1_USER_PIN"; else echo "$SO_PIN $USER_PIN"; fi
}
req() { # op slot user_pin [so_pin label]: a JSON request line (PINs only ever on stdin)
	python3 -c 'import json,sys; a=sys.stdin.read().split("\n"); d={"op":a[0],"slot":int(a[1]),"user_pin":a[2]}
if len(a)>4 and a[3]: d["so_pin"]=a[3]; d["label"]=a[4]
print(json.dumps(d))' <<<"$1
$2
$3
${4:-}
${5:-}"
}

# --- PIN sampler: every process's argv on this machine, all through the run -----------------
PINS_FILE=$RUN/pins
printf '%s\n' "$SO_PIN" "$USER_PIN" "$X1_SO_PIN" "$X1_USER_PIN" "$X1_WRONG_PIN" >"$PINS_FILE"
chmod 600 "$PINS_FILE"
SAMPLES=$RUN/argv-samples
(
	n=0
	while :; do
		for c in /proc/[0-9]*/cmdline; do
			{ tr '\0' ' ' <"$c"; } 2>/dev/null && echo
		done 2>/dev/null | grep -F -f "$PINS_FILE" >>"$RUN/argv-hits" 2>/dev/null
		n=$((n + 1))
		echo $n >"$SAMPLES"
		sleep 0.5
	done
) &
SAMPLER=$!

# --- bring the fleet up ---------------------------------------------------------------------------
say "bringing up $NAMES ($(elapsed))"
while read -r name root port goarch slots; do
	up_host "$name" "$root" "$port" "$goarch" "$slots" || { bad "$name: host did not come up"; exit 1; }
done <<<"$HOSTS"
ok "four sshd on 127.0.0.1:2201-2204, each in its own PID namespace, chrooted into its root ($(elapsed))"

# the daemons, over SSH, with the shim
for h in $NAMES; do
	on "$h" service pkcsslotd start >"$OUT/start-$h.txt" 2>&1 || { bad "$h: service pkcsslotd start: $(cat "$OUT/start-$h.txt")"; exit 1; }
done
for h in $NAMES; do
	on "$h" 'for d in /proc/[0-9]*; do read -r c < $d/comm; [ "$c" = pkcsslotd ] && stat -c "%U" $d; done' >"$OUT/slotd-user-$h.txt" 2>&1
	if [ "$(sort -u "$OUT/slotd-user-$h.txt")" = pkcsslotd ]; then ok "$h: the real pkcsslotd runs as user pkcsslotd, alone in the host's /proc"; else bad "$h: pkcsslotd processes: $(cat "$OUT/slotd-user-$h.txt")"; fi
done

# --- the tokens, made by each host's own library in the old format -------------------------
say "making the tokens ($(elapsed))"
while read -r name root port goarch slots; do
	read -r so user <<<"$(pins_of "$name")"
	IFS=, read -ra ss <<<"$slots"
	for s in "${ss[@]}"; do
		IFS=: read -r slot stdll label <<<"$s"
		a=$(req populate "$slot" "$user" "$so" "$label" | p11 "$name")
		if [ "$(jq -r .ok <<<"$a" 2>/dev/null)" = true ]; then :; else bad "$name slot $slot: could not make the token: $a"; exit 1; fi
		req list "$slot" "$user" | p11 "$name" >"$OUT/before-$name-$slot.json"
		n=$(jq '.objects | length' "$OUT/before-$name-$slot.json" 2>/dev/null)
		if [ "${n:-0}" -gt 0 ]; then ok "$name slot $slot ($label): $n objects made by its own library"; else bad "$name slot $slot: listing: $(cat "$OUT/before-$name-$slot.json")"; fi
	done
done <<<"$HOSTS"
say "tokens made ($(elapsed))"
[ "${PHASE:-}" = 1 ] && { echo "PHASE=1: stopping here"; exit 0; }
