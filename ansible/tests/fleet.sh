#!/usr/bin/env bash
# make fleet: a real mixed-architecture fleet on this machine, driven by the real
# ansible-playbook over SSH.
#
#   bash ansible/tests/fleet.sh            (root, after make setup and make cross)
#
# Four hosts, each its own Debian root (built by e2e/setup.sh with python3 in it, under
# .cache/fleet/base) in an overlay of its own (/run/pkcstok-fleet/<host>/root, so every run starts
# from the same roots), each served by its own sshd on 127.0.0.1:<port>:
#
#   z1  s390x   Debian 13 (trixie)   openCryptoki 3.23  Soft (slot 3), ICA (slot 1), CCA (slot 2),
#                                                       each with PINs of its own
#   x1  amd64   Debian 13 (trixie)   openCryptoki 3.23  Soft (slot 3), PINs of its own
#   z2  s390x   Debian testing       openCryptoki 3.27  Soft (slot 3)
#   p1  ppc64el Debian testing       openCryptoki 3.27  Soft (slot 3), FIPS mode on (Debian's
#                                                       FIPS provider in force, kernel flag 1)
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
# p1's FIPS mode, both halves of it. OpenSSL: p1's root is testing-ppc64el-fips (make setup,
# e2e/mkroot.sh variant fips): Debian's openssl-provider-fips installed, `openssl fipsinstall`
# run, and OpenSSL's standard FIPS configuration as /etc/ssl/openssl.cnf (providers fips and
# base, default_properties = fips=yes): every OpenSSL program of p1 (python3, pkcsslotd, the
# token library, pkcstok_migrate) runs with it, and the run checks it (openssl md5 refused).
# The kernel's flag: this machine's kernel has no /proc/sys/crypto, so p1's namespace gets a
# /proc/sys of its own: a tmpfs holding binds of the real /proc/sys directories plus
# crypto/fips_enabled = 1 (on RHEL that flag is what switches OpenSSL over; Debian's OpenSSL
# does not read it). The release binary and Ansible's own fact gathering read it like the real
# file; nothing in the binary is redirected.
#
# z1's CCA slot: the CCA token library needs IBM's CCA host library (libcsulcca.so) and a
# crypto adapter, which no Debian root has, so the token cannot be made through it (nor opened
# by it). The repository is made by the host's own 3.23 library through the Soft token library
# with the slot's conf block saying stdll = libpkcs11_sw.so and tokname = ccatok (the data store
# format is the same for every token type), then the block says stdll = libpkcs11_cca.so, as on
# a host with the adapter: the tool migrates it as a CCA repository. Its library check is
# switched off in its slot entry (verify_with_library: false: the CCA library cannot open it
# here); at the end the migrated repository is listed through the same Soft view (the conf put
# back byte for byte afterwards). The e2e suites make no CCA or EP11 tokens; the Go tests write
# such repositories with tokens/tokentest (pkcstok-gentoken -type cca|ep11).
#
# z1 is migrated in one task (slots, each with its own PINs from z1's vault vars): in the
# first rollout the canary truncates a private object of its ICA slot between apply and the
# library check, so that slot alone is rolled back and Soft and CCA stay migrated; the next
# rollout migrates it.
#
# The library check as root's target: in the second rollout a member of pkcs11 on z2 puts a hard
# link to a root-only file in place of the migrated MK_USER (the module's test-only canary hook
# does it as that member, with fs.protected_hardlinks 0 for that rollout); the check, which runs
# the host's library as pkcsslotd:pkcs11, must fail and roll back, and the file must keep its
# owner, group, mode and content. The summary counts the attacks run and won.
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
# The hosts' runtime (their overlays, the sshd configs, the keys) lives where sshd accepts it:
# ChrootDirectory and AuthorizedKeysFile need every component of their path root-owned and
# writable by nobody else, which a checkout below /tmp (mode 1777) is not.
RUN=${PKCSTOK_FLEET_RUN:-/run/pkcstok-fleet}
T0=$(date +%s)

# name  root             port  arch-of-go  slots (slot:stdll:label ...)
HOSTS="z1 trixie-s390x 2201 s390x 3:libpkcs11_sw.so:z1-soft,1:libpkcs11_ica.so:z1-ica,2:libpkcs11_cca.so:z1-cca
x1 trixie-amd64 2202 amd64 3:libpkcs11_sw.so:x1-soft
z2 testing-s390x 2203 s390x 3:libpkcs11_sw.so:z2-soft
p1 testing-ppc64el-fips 2204 ppc64le 3:libpkcs11_sw.so:p1-soft"
NAMES="z1 x1 z2 p1"
FIPS_HOST=p1
CANARY_HOST=p1
# The multi-slot host: its ICA slot's library check fails in the first rollout (the canary).
HOST_CANARY=z1 HOST_CANARY_SLOT=1 HOST_CANARY_DS=/var/lib/opencryptoki/lite
# The hard-link attack on the library check (see the rollout below): a member of pkcs11 on
# this host puts a hard link to a root-only file into the migrated repository.
ATTACK_HOST=z2
ATTACK_USER=mallory ATTACK_UID=4242
VICTIM=/var/lib/opencryptoki/fleet-victim

# PINs (4-8 bytes for Soft and ICA). x1 has PINs of its own, and so has each slot of z1.
SO_PIN=flSO-613 USER_PIN=flUS-284
X1_SO_PIN=x1so-952 X1_USER_PIN=x1us-477 X1_WRONG_PIN=x1us-000
Z1_SO_PIN_3=z1s3S-41 Z1_USER_PIN_3=z1s3U-72
Z1_SO_PIN_1=z1s1S-53 Z1_USER_PIN_1=z1s1U-86
Z1_SO_PIN_2=z1s2S-19 Z1_USER_PIN_2=z1s2U-64

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
		if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$RUN/$h/sshd_config"; then
			# unshare ignores SIGTERM while it waits; its child is the namespace's init (the
			# sshd): when that ends, the kernel kills every process of the namespace.
			for c in $(pgrep -P "$pid"); do kill "$c" 2>/dev/null; done
			for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
			[ -d "/proc/$pid" ] && { for c in $(pgrep -P "$pid"); do kill -KILL "$c" 2>/dev/null; done; sleep 0.5; }
		fi
		rm -f "$RUN/$h/unshare.pid"
		# a listener whose pid file is gone (make clean, a killed run): found by its own config
		for p in $(pgrep -f -- "-f $RUN/$h/sshd_config -E"); do kill "$p" 2>/dev/null; done
	done
	# ssh control masters of the last run
	for s in "$RUN"/cp/*; do [ -S "$s" ] && ssh -o ControlPath="$s" -O exit dummy 2>/dev/null; done
	for h in $NAMES; do
		for m in "$RUN/$h/root/var/lib/opencryptoki" "$RUN/$h/root"; do
			mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
		done
	done
	return 0
}
teardown
# KEEP=1 leaves the hosts running (for a look with ssh -F ... ; the next run tears them down)
trap '[ -n "${SAMPLER:-}" ] && kill $SAMPLER 2>/dev/null; [ "${KEEP:-}" = 1 ] || teardown' EXIT
rm -rf --one-file-system "$RUN"
mkdir -p "$RUN/cp" "$RUN/out" /run/sshd
chmod 700 "$RUN"
# sshd's rule for ChrootDirectory and AuthorizedKeysFile: every component root's, and
# writable by root alone (else it refuses the login: "bad ownership or modes").
p=$RUN
while :; do
	if [ "$(stat -c %u "$p")" != 0 ] || [ $(( 0$(stat -c %a "$p") & 022 )) != 0 ]; then
		echo "FAIL - $p (on the path of $RUN) is not root's or is writable by others: sshd would refuse the fleet's logins; set PKCSTOK_FLEET_RUN" >&2
		exit 1
	fi
	[ "$p" = / ] && break
	p=$(dirname "$p")
done
OUT=$RUN/out

# --- keys, vault, collection -------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C fleet-client -f "$RUN/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -C fleet-host -f "$RUN/ssh_host_ed25519_key"
cp "$RUN/id_ed25519.pub" "$RUN/authorized_keys"
chmod 600 "$RUN/authorized_keys"
: >"$RUN/known_hosts"

# --- the hosts -----------------------------------------------------------------------------------
conf_of() { # slots [make] -> opencryptoki.conf (no tokversion: the library writes the old format)
	# With make: a CCA slot is the Soft token library with tokname = ccatok (how its repository
	# is made here, without the CCA host library; see the top of this file).
	printf 'version opencryptoki-3.1\n'
	local IFS=,
	for s in $1; do
		local sd
		sd=$(echo "$s" | cut -d: -f2)
		if [ "${2:-}" = make ] && [ "$sd" = libpkcs11_cca.so ]; then
			printf '\nslot %s\n{\nstdll = libpkcs11_sw.so\ntokname = ccatok\n}\n' "${s%%:*}"
		else
			printf '\nslot %s\n{\nstdll = %s\n}\n' "${s%%:*}" "$sd"
		fi
	done
}

up_host() { # name root port goarch slots
	local h=$1 root=$2 port=$3 d=$RUN/$1 r=$RUN/$1/root
	mkdir -p "$d/upper" "$d/work" "$r"
	mount -t overlay overlay -o "lowerdir=$BASE/$root,upperdir=$d/upper,workdir=$d/work" "$r" || return 1
	# The repositories on a file system of their own, as on a real host: overlayfs refuses the
	# atomic exchange (renameat2 RENAME_EXCHANGE) of a directory that comes from the lower layer
	# (EXDEV), and the package ships /var/lib/opencryptoki/swtok.
	cp -a "$r/var/lib/opencryptoki" "$d/state"
	mount --bind "$d/state" "$r/var/lib/opencryptoki" || return 1
	install -m 0755 "$HERE/fleet/service" "$r/usr/sbin/service"
	mkdir -p "$r/usr/local/sbin"
	local gid
	gid=$(stat -c %g "$r/var/lib/opencryptoki")
	conf_of "$5" make >"$r/etc/opencryptoki/opencryptoki.conf"
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
	if [ "$h" = "$CANARY_HOST" ] || [ "$h" = "$ATTACK_HOST" ] || [ "$h" = "$HOST_CANARY" ]; then
		# The canary's test-only hook (pkcstok_migrate: verify_with_library): armed per run by
		# the file it names, see the rollout below. Only these hosts' sessions get it.
		printf 'SetEnv PKCSTOK_MIGRATE_TEST_CANARY=/run/pkcstok-test-canary\n' >>"$d/sshd_config"
	fi
	if [ "$h" = "$ATTACK_HOST" ]; then
		# A member of the token group (and of nothing else) on this host, and a root-only file
		# on the file system of the repositories (a hard link cannot cross file systems; on a
		# real host /etc/shadow or a key of root's under /var would do).
		local pg
		pg=$(stat -c %g "$r/var/lib/opencryptoki")
		echo "$ATTACK_USER:x:$ATTACK_UID:$ATTACK_UID:fleet test, member of pkcs11:/nonexistent:/usr/sbin/nologin" >>"$r/etc/passwd"
		echo "$ATTACK_USER:x:$ATTACK_UID:" >>"$r/etc/group"
		awk -F: -v OFS=: -v g="$pg" -v u="$ATTACK_USER" '$3 == g { $4 = ($4 == "" ? u : $4 "," u) } { print }' \
			"$r/etc/group" >"$d/group" && cat "$d/group" >"$r/etc/group"
		head -c 48 /dev/urandom | base64 >"$r$VICTIM"
		chown 0:0 "$r$VICTIM"
		chmod 0600 "$r$VICTIM"
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
on() { # on HOST COMMAND...: over SSH (the same control master as ansible's); ssh reads its
	# standard input, so inside a loop that reads $HOSTS give it </dev/null (or a pipe)
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

pins_of() { # host slot -> so user (the right ones)
	case $1 in
	x1) echo "$X1_SO_PIN $X1_USER_PIN" ;;
	z1) eval "echo \"\$Z1_SO_PIN_$2 \$Z1_USER_PIN_$2\"" ;;
	*) echo "$SO_PIN $USER_PIN" ;;
	esac
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
printf '%s\n' "$SO_PIN" "$USER_PIN" "$X1_SO_PIN" "$X1_USER_PIN" "$X1_WRONG_PIN" "$Z1_SO_PIN_3" "$Z1_USER_PIN_3" \
	"$Z1_SO_PIN_1" "$Z1_USER_PIN_1" "$Z1_SO_PIN_2" "$Z1_USER_PIN_2" >"$PINS_FILE"
chmod 600 "$PINS_FILE"
SAMPLES=$RUN/argv-samples
(
	n=0
	while kill -0 $$ 2>/dev/null; do
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

# p1's OpenSSL: the FIPS provider in force (its root's standard openssl.cnf): MD5 refused.
p1md5=$(on p1 'openssl md5 </dev/null >/dev/null 2>&1; echo $?' </dev/null)
p1msg=$(on p1 'openssl md5 </dev/null 2>&1 | head -n 1' </dev/null)
p1prov=$(on p1 'openssl list -providers' </dev/null 2>&1 | sed -n 's/^  \([a-z]*\)$/\1/p' | tr '\n' ' ')
p1flag=$(on p1 cat /proc/sys/crypto/fips_enabled </dev/null)
if [ -n "$p1md5" ] && [ "$p1md5" != 0 ] && [ "${p1prov% }" = "base fips" ] && [ "$p1flag" = 1 ]; then
	ok "p1: Debian's FIPS provider in force (openssl list -providers: ${p1prov% }; openssl md5: exit $p1md5, $p1msg), kernel flag fips_enabled = $p1flag"
else
	bad "p1's FIPS configuration: openssl md5 exit '$p1md5' ($p1msg), providers '$p1prov', fips_enabled '$p1flag'"
fi

# --- the tokens, made by each host's own library in the old format -------------------------
say "making the tokens ($(elapsed))"
while read -r name root port goarch slots; do
	IFS=, read -ra ss <<<"$slots"
	for s in "${ss[@]}"; do
		IFS=: read -r slot stdll label <<<"$s"
		read -r so user <<<"$(pins_of "$name" "$slot")"
		a=$(req populate "$slot" "$user" "$so" "$label" | p11 "$name")
		if [ "$(jq -r .ok <<<"$a" 2>/dev/null)" = true ]; then :; else bad "$name slot $slot: could not make the token: $a"; exit 1; fi
		req list "$slot" "$user" | p11 "$name" >"$OUT/before-$name-$slot.json"
		n=$(jq '.objects | length' "$OUT/before-$name-$slot.json" 2>/dev/null)
		if [ "${n:-0}" -gt 0 ]; then ok "$name slot $slot ($label): $n objects made by its own library$([ "$stdll" = libpkcs11_cca.so ] && echo " (Soft token library, tokname = ccatok)")"; else bad "$name slot $slot: listing: $(cat "$OUT/before-$name-$slot.json")"; fi
	done
	# The conf as on a host with its adapters: a CCA slot says libpkcs11_cca.so.
	case $slots in *libpkcs11_cca.so*)
		c=$RUN/$name/root/etc/opencryptoki/opencryptoki.conf
		on "$name" service pkcsslotd stop </dev/null && conf_of "$slots" >"$c" && on "$name" service pkcsslotd start </dev/null ||
			{ bad "$name: could not switch its CCA slot to libpkcs11_cca.so"; exit 1; }
		;;
	esac
done <<<"$HOSTS"
say "tokens made ($(elapsed))"
T_TOKENS=$(elapsed)

# --- the controller: collection with the four binaries, vault, inventory, ansible.cfg --------------
CROOT=$RUN/coll/ansible_collections/ocktools/pkcstok
mkdir -p "$CROOT"
cp -a "$COLL/." "$CROOT/"
rm -rf "$CROOT/tests"
mkdir -p "$CROOT/roles/install/files"
for a in amd64 arm64 ppc64le s390x; do cp "$REPO/bin/pkcstok-migrate-linux-$a" "$CROOT/roles/install/files/"; done
(cd "$CROOT/roles/install/files" && sha256sum pkcstok-migrate-linux-* >SHA256SUMS)
PB=$CROOT/playbooks
INV=$RUN/inventory
mkdir -p "$INV/group_vars/opencryptoki_hosts" "$INV/host_vars/x1" "$INV/host_vars/z1"
cat >"$INV/hosts" <<-EOF2
	# inventory order = rollout order: z1, x1, then the rest
	[opencryptoki_hosts]
	z1 ansible_port=2201
	x1 ansible_port=2202
	z2 ansible_port=2203
	p1 ansible_port=2204

	[opencryptoki_hosts:vars]
	ansible_host=127.0.0.1
	ansible_user=root
	ansible_python_interpreter=/usr/bin/python3
	pkcstok_become=false

	[migrate_expected:children]
	opencryptoki_hosts
EOF2
VAULT_PASS=$RUN/vault-pass
printf '[defaults]\n' >"$RUN/vault.cfg" # ansible-vault alone: the password file on its command line only
head -c 24 /dev/urandom | base64 >"$VAULT_PASS"
chmod 600 "$VAULT_PASS"
vault() { # vault FILE < plaintext yaml: encrypted in place (the plaintext never touches disk)
	rm -f "$1"
	ANSIBLE_CONFIG=$RUN/vault.cfg ansible-vault encrypt --vault-password-file "$VAULT_PASS" --output "$1" - >/dev/null 2>>"$OUT/vault.err" ||
		{ bad "ansible-vault encrypt $1: $(cat "$OUT/vault.err")"; exit 1; }
}
printf 'vault_pkcstok_so_pin: "%s"\nvault_pkcstok_user_pin: "%s"\n' "$SO_PIN" "$USER_PIN" | vault "$INV/group_vars/opencryptoki_hosts/vault.yml" || exit 1
x1_vault() { printf 'vault_pkcstok_so_pin: "%s"\nvault_pkcstok_user_pin: "%s"\n' "$X1_SO_PIN" "$1" | vault "$INV/host_vars/x1/vault.yml" || exit 1; }
x1_vault "$X1_USER_PIN"
# z1: its slots, each with its own PINs, in one list (the rollout migrates them in one task). Its
# CCA slot is not checked with the library: the CCA token library cannot open it here.
{
	echo "vault_pkcstok_slots:"
	echo "  - {slot: 3, so_pin: \"$Z1_SO_PIN_3\", user_pin: \"$Z1_USER_PIN_3\"}"
	echo "  - {slot: 1, so_pin: \"$Z1_SO_PIN_1\", user_pin: \"$Z1_USER_PIN_1\"}"
	echo "  - {slot: 2, so_pin: \"$Z1_SO_PIN_2\", user_pin: \"$Z1_USER_PIN_2\", verify_with_library: false}"
} | vault "$INV/host_vars/z1/vault.yml" || exit 1
if grep -q '^\$ANSIBLE_VAULT' "$INV/group_vars/opencryptoki_hosts/vault.yml" "$INV/host_vars/x1/vault.yml" "$INV/host_vars/z1/vault.yml" && ! grep -rqF -f "$PINS_FILE" "$INV"; then
	ok "PINs in Ansible Vault files (password in a file written by the test), x1's of its own, z1's one list of its three slots each with its own"
else
	bad "vault files: $(cat "$OUT/vault.err")"
fi

export ANSIBLE_CONFIG=$RUN/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$RUN/coll
cat >"$ANSIBLE_CONFIG" <<-EOF2
	[defaults]
	inventory = $INV
	vault_password_file = $VAULT_PASS
	private_key_file = $RUN/id_ed25519
	remote_tmp = /root/.ansible/tmp
	local_tmp = $RUN/ansible-local
	retry_files_enabled = False
	forks = 4
	timeout = 120
	nocolor = 1
	log_path = $OUT/ansible.log
	interpreter_python = /usr/bin/python3
	localhost_warning = False

	[ssh_connection]
	pipelining = True
	ssh_args = -o ControlMaster=auto -o ControlPersist=600 -o UserKnownHostsFile=$RUN/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes
	control_path = $RUN/cp/%%h-%%p-%%r
EOF2
play() { # play OUTNAME playbook [args...]: rc in RC
	local o=$1 p=$2
	shift 2
	local t=$(date +%s)
	ansible-playbook "$PB/$p" "$@" >"$OUT/$o.out" 2>&1
	RC=$?
	echo "$o: $p rc $RC in $(($(date +%s) - t)) s" >>"$OUT/timings"
	say "$o: $p rc $RC in $(($(date +%s) - t)) s"
}
recap() { # recap OUTNAME HOST FIELD -> number from PLAY RECAP
	sed -n "s/^$2 *: .*$3=\([0-9]*\).*/\1/p" "$OUT/$1.out" | tail -n 1
}
info_of() { # info_of HOST: pkcstok-migrate info on the host (JSON), through ansible's module
	ansible "$1" -m ocktools.pkcstok.pkcstok_info -o 2>/dev/null | sed -n 's/^[^|]*| SUCCESS => //p'
}
fmt_of() { # fmt_of HOST SLOT -> format/tokversion/byte_order
	info_of "$1" | jq -r --argjson s "$2" '.info.slots[] | select(.slot == $s) | "\(.format) \(.tokversion) \(.byte_order)"'
}
root_hash() { # the whole root's tree (names, modes, owners, sizes, mtimes, contents), minus proc
	local r=$RUN/$1/root
	(cd "$r" && find . \( -path ./proc -o -path ./root/.ansible -o -path ./tmp \) -prune -o -printf '%p %m %U %G %s %T@\n' | sort &&
		find . \( -path ./proc -o -path ./root/.ansible -o -path ./tmp \) -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
slotd_running() { on "$1" service pkcsslotd status >/dev/null 2>&1; }

# --- SSH transport: the gathered architecture of each host ------------------------------------------
ansible opencryptoki_hosts -m ansible.builtin.setup -a 'gather_subset=!all,!min,platform,fips filter=ansible_architecture,ansible_fips' -o >"$OUT/setup.out" 2>&1
declare -A ARCH
for h in $NAMES; do
	ARCH[$h]=$(sed -n "s/^$h | SUCCESS => //p" "$OUT/setup.out" | jq -r .ansible_facts.ansible_architecture 2>/dev/null)
done
for h in $NAMES; do
	printf '  ansible -m setup over ssh %s@127.0.0.1:%s: ansible_architecture=%s ansible_fips=%s\n' root "$(port_of "$h")" "${ARCH[$h]}" \
		"$(sed -n "s/^$h | SUCCESS => //p" "$OUT/setup.out" | jq -r .ansible_facts.ansible_fips 2>/dev/null)"
done
if [ "${ARCH[z1]}" = s390x ] && [ "${ARCH[z2]}" = s390x ] && [ "${ARCH[p1]}" = ppc64le ] && [ "${ARCH[x1]}" = x86_64 ]; then
	ok "ansible -m setup over SSH: ansible_architecture z1=${ARCH[z1]} x1=${ARCH[x1]} z2=${ARCH[z2]} p1=${ARCH[p1]}"
else
	bad "ansible -m setup: $(cat "$OUT/setup.out")"
fi
if [ "$(sed -n 's/^p1 | SUCCESS => //p' "$OUT/setup.out" | jq -r .ansible_facts.ansible_fips)" = true ] &&
	[ "$(sed -n 's/^z2 | SUCCESS => //p' "$OUT/setup.out" | jq -r .ansible_facts.ansible_fips)" = false ]; then
	ok "Ansible's own fact: p1 is in FIPS mode (ansible_fips), the others are not"
else
	bad "ansible_fips facts: $(grep -o '"ansible_fips": [a-z]*' "$OUT/setup.out" | tr '\n' ' ')"
fi
grep -q 'ESTABLISH SSH CONNECTION\|ssh' "$OUT/setup.out" >/dev/null 2>&1 || true

# --- fleet-audit.yml with the install role --------------------------------------------------------
declare -A H0
for h in $NAMES; do H0[$h]=$(root_hash "$h"); done
play audit1 fleet-audit.yml -e pkcstok_audit_install=true
A1=$RC
play audit2 fleet-audit.yml -e pkcstok_audit_install=true
installed_ok=1
while read -r name root port goarch slots; do
	want=$(sha256sum <"$REPO/bin/pkcstok-migrate-linux-$goarch" | cut -d' ' -f1)
	got=$(on "$name" sha256sum /usr/local/sbin/pkcstok-migrate </dev/null 2>/dev/null | cut -d' ' -f1)
	[ "$want" = "$got" ] || { installed_ok=0; say "$name: installed $got, want linux-$goarch $want"; }
done <<<"$HOSTS"
changed2=0
for h in $NAMES; do changed2=$((changed2 + $(recap audit2 "$h" changed))); done
if [ "$A1" = 0 ] && [ "$RC" = 0 ] && [ $installed_ok = 1 ] && [ "$changed2" = 0 ] && [ "$(recap audit1 z1 changed)" = 1 ]; then
	sed -n '/^TASK \[BROKEN NOW/,/^}/p' "$OUT/audit1.out" | sed 's/^/  /'
	ok "fleet-audit.yml: each host got the binary of its gathered architecture (checksum verified), rerun changed=0"
else
	bad "fleet-audit.yml (rc $A1/$RC, binaries ok $installed_ok, changed on rerun $changed2)"
fi
audit_ok=1
for h in $NAMES; do
	info_of "$h" >"$OUT/info-before-$h.json"
done
for spec in "z1 3 big-endian" "z1 1 big-endian" "z1 2 big-endian" "z2 3 big-endian" "x1 3 little-endian" "p1 3 little-endian"; do
	read -r h s bo <<<"$spec"
	got=$(jq -r --argjson s "$s" '.info.slots[] | select(.slot == $s) | "\(.format) \(.byte_order) \(.objects)"' "$OUT/info-before-$h.json")
	[ "$got" = "old $bo 5" ] || { audit_ok=0; say "$h slot $s: $got, want old $bo 5"; }
done
broken=$(sed -n '/BROKEN NOW/,/^$/p' "$OUT/audit1.out" | tr -d ' \n' | grep -o '"broken_now":\[[^]]*\]')
first=$(grep -m1 -E 'TASK \[(BROKEN NOW|List the hosts that still need)' "$OUT/audit1.out" | grep -c BROKEN)
if [ $audit_ok = 1 ] && [ "$broken" = '"broken_now":["p1"]' ] && [ "$first" = 1 ] &&
	[ "$(jq -r .broken_now "$OUT/info-before-p1.json")" = true ] && [ "$(jq -r .info.fips.enabled "$OUT/info-before-z1.json")" = false ]; then
	ok "pkcstok_info: every slot old-format (z1, z2 big-endian), 5 objects each; fleet-audit.yml lists p1 (FIPS mode, old tokens) first as broken now"
else
	bad "audit contents (slots ok $audit_ok, broken '$broken', listed first $first)"
fi

# --- fleet-dry-run.yml: check + diff, nothing written ---------------------------------------------
for h in $NAMES; do H0[$h]=$(root_hash "$h"); done
play dry fleet-dry-run.yml --diff
same=1
for h in $NAMES; do [ "$(root_hash "$h")" = "${H0[$h]}" ] || { same=0; say "$h: root changed by the dry run"; }; done
ndiff=$(grep -cE '^\+ *tokversion = 3\.12' "$OUT/dry.out")
# one conf diff per host: z1's with its three slots
nconf=$(grep -c '^--- before: /etc/opencryptoki/opencryptoki.conf$' "$OUT/dry.out")
want_diffs=6
if [ "$RC" = 0 ] && [ $same = 1 ] && [ "$ndiff" -ge "$want_diffs" ] && [ "$nconf" = 4 ]; then
	ok "fleet-dry-run.yml --diff: one conf diff per host ($nconf) with every slot's line ($ndiff x +tokversion = 3.12, z1's three in one), tree hashes of all four roots unchanged"
else
	bad "fleet-dry-run.yml (rc $RC, roots unchanged $same, $ndiff lines in $nconf conf diffs)"
fi

# --- fleet-rollout.yml, 1: z1 and x1 in the first batch: z1's ICA slot fails its check, x1 a wrong PIN
# slot_rows ROLL HOST: "slot N: outcome, library check ..." lines the rollout printed for HOST
slot_rows() {
	awk -v h="$2" '$0 ~ "^(ok|changed): \\[" h "\\] => \\(item=slot " { want = 1; next }
		want && /"msg": "slot [0-9]+: / { sub(/^[^"]*"msg": "/, ""); sub(/"$/, ""); print; want = 0 }' "$OUT/$1.out"
}
SERIAL='{"pkcstok_serial": [1, 1, "100%"]}'
x1_vault "$X1_WRONG_PIN"
# z1 in the same batch as x1: its three slots in one apply; the canary truncates a private object
# of its ICA slot between apply and the check.
echo "$HOST_CANARY_DS" >"$RUN/$HOST_CANARY/root/run/pkcstok-test-canary"
play roll1 fleet-rollout.yml -e '{"pkcstok_serial": [2, "100%"]}'
R1=$RC
grep -a '^fatal: .*migration failed' "$OUT/roll1.out" | sed 's/^/  /'
slot_rows roll1 z1 >"$OUT/roll1-z1-slots.txt"
sed 's/^/  z1 /' "$OUT/roll1-z1-slots.txt"
z1a=$(fmt_of z1 3) z1b=$(fmt_of z1 1) z1c=$(fmt_of z1 2) x1f=$(fmt_of x1 3)
read -r _ z1u1 <<<"$(pins_of z1 1)"
req list 1 "$z1u1" | p11 z1 >"$OUT/after-rollback-z1-1.json"
z1same=$(jq -S .objects "$OUT/before-z1-1.json" | cmp -s - <(jq -S .objects "$OUT/after-rollback-z1-1.json") && echo yes || echo no)
untouched=1
for h in z2 p1; do [ "$(root_hash "$h")" = "${H0[$h]}" ] || untouched=0; done
if [ "$R1" != 0 ] && grep -q 'migration failed on x1 (slot 3): \[wrong_pin\]' "$OUT/roll1.out" &&
	grep -q "migration failed on z1 (slot 1): \[library_verify_failed\] slot 1 failed the check with the host's own openCryptoki (run as user pkcsslotd (uid [1-9][0-9]*), group pkcs11 (gid [1-9][0-9]*)).*it was rolled back alone and opens again in the old format.*slots 3 and 2 stay migrated" "$OUT/roll1.out" &&
	[ "$(cat "$OUT/roll1-z1-slots.txt" | tr '\n' ';')" = "slot 3: migrated, library check passed;slot 1: rolled_back, library check failed, rolled back;slot 2: migrated, library check not run;" ] &&
	[ "${z1a%% *}" = 3.12 ] && [ "${z1b%% *}" = old ] && [ "${z1c%% *}" = 3.12 ] && [ "$z1same" = yes ] &&
	[ ! -e "$RUN/$HOST_CANARY/root/run/pkcstok-test-canary" ] &&
	[ "${x1f%% *}" = old ] && [ $untouched = 1 ] && slotd_running x1 && slotd_running z1 &&
	! grep -qE '^(ok|changed|fatal|skipping): \[(z2|p1)\]' "$OUT/roll1.out"; then
	ok "fleet-rollout.yml, batch z1+x1: z1's three slots in one task, its ICA slot 1 damaged before the check: only slot 1 rolled back (opens again in the old format, same objects), Soft 3 and CCA 2 stay migrated; x1 stopped with [wrong_pin], still old, daemons running; z2/p1 untouched"
else
	bad "rollout 1 (rc $R1, z1 '$z1a'/'$z1b'/'$z1c' slot 1 same objects $z1same, slots: $(tr '\n' ';' <"$OUT/roll1-z1-slots.txt"), x1 '$x1f', z2/p1 untouched $untouched)"
fi

# --- fleet-rollout.yml, 2: x1 fixed; the canary p1 is damaged between apply and the check ---------
x1_vault "$X1_USER_PIN"
echo /var/lib/opencryptoki/swtok >"$RUN/p1/root/run/pkcstok-test-canary"
# z2 in the same batch: once apply is done, a member of pkcs11 (the hook becomes $ATTACK_USER:
# its uid, its group, pkcs11) puts a hard link to the root-only $VICTIM in place of the
# migrated MK_USER, which the library opens at C_Login. Run as root, openCryptoki would make
# it 0660 group pkcs11. fs.protected_hardlinks is 0 for this rollout only (a member cannot
# link a file of root's otherwise), and restored.
victim_state() { on "$ATTACK_HOST" stat -c "'%u:%g %a %h'" "$VICTIM" 2>/dev/null; }
victim_sum() { on "$ATTACK_HOST" sha256sum "$VICTIM" 2>/dev/null | cut -c1-64; }
V0=$(victim_state) VS0=$(victim_sum)
printf '/var/lib/opencryptoki/swtok\nhardlink MK_USER %s %s\n' "$VICTIM" "$ATTACK_USER" >"$RUN/$ATTACK_HOST/root/run/pkcstok-test-canary"
PHL=$(cat /proc/sys/fs/protected_hardlinks)
restore_phl() { [ -n "${PHL:-}" ] && echo "$PHL" >/proc/sys/fs/protected_hardlinks; }
trap 'restore_phl; [ -n "${SAMPLER:-}" ] && kill $SAMPLER 2>/dev/null; [ "${KEEP:-}" = 1 ] || teardown' EXIT
echo 0 >/proc/sys/fs/protected_hardlinks
play roll2 fleet-rollout.yml -e "$SERIAL"
R2=$RC
restore_phl
V1=$(victim_state) VS1=$(victim_sum)
FIRED=$(cat "$RUN/$ATTACK_HOST/root/run/pkcstok-test-canary.fired" 2>/dev/null)
grep -a '^fatal: .*migration failed' "$OUT/roll2.out" | sed 's/^/  /'
p1f=$(fmt_of p1 3) z2f=$(fmt_of z2 3) x1f=$(fmt_of x1 3)
req list 3 "$USER_PIN" | p11 p1 >"$OUT/after-rollback-p1-3.json"
p1same=$(jq -S .objects "$OUT/before-p1-3.json" | cmp -s - <(jq -S .objects "$OUT/after-rollback-p1-3.json") && echo yes || echo no)
req list 3 "$USER_PIN" | p11 z2 >"$OUT/after-rollback-z2-3.json"
z2same=$(jq -S .objects "$OUT/before-z2-3.json" | cmp -s - <(jq -S .objects "$OUT/after-rollback-z2-3.json") && echo yes || echo no)
slot_rows roll2 z1 >"$OUT/roll2-z1-slots.txt"
z1b=$(fmt_of z1 1)
if [ "$R2" != 0 ] && grep -q 'migration failed on p1 (slot 3): \[library_verify_failed\].*rolled back and opens again in the old format' "$OUT/roll2.out" &&
	[ "${p1f%% *}" = old ] && [ "$p1same" = yes ] && slotd_running p1 &&
	[ "${x1f%% *}" = 3.12 ] && [ "$(recap roll2 z1 changed)" = 1 ] && [ "${z1b%% *}" = 3.12 ] &&
	[ "$(cat "$OUT/roll2-z1-slots.txt" | tr '\n' ';')" = "slot 3: unchanged, library check not run;slot 1: migrated, library check passed;slot 2: unchanged, library check not run;" ] &&
	[ ! -e "$RUN/p1/root/run/pkcstok-test-canary" ]; then
	ok "canary: p1's migrated repository damaged before the check: its own library saw it, it was rolled back, opens again in the old format with the same objects; x1 migrated; z1's slot 1 migrated and checked, its slots 3 and 2 unchanged"
else
	bad "rollout 2 (rc $R2, p1 '$p1f' same objects $p1same, x1 '$x1f', z1 changed $(recap roll2 z1 changed) slot 1 '$z1b', slots: $(tr '\n' ';' <"$OUT/roll2-z1-slots.txt"))"
fi
# The attack counts as run when the member's link was planted; as won when the victim changed
# (owner, group, mode, content) or the check passed with it or ran as root.
ATTACKS=0 WINS=0
case $FIRED in planted*) ATTACKS=1 ;; esac
grep -a "migration failed on $ATTACK_HOST" "$OUT/roll2.out" | sed 's/^/  /'
if [ "${V1% *}" != "${V0% *}" ] || [ "$VS1" != "$VS0" ] || [ "${z2f%% *}" = 3.12 ] ||
	grep -q 'run as user root\|(uid 0)' "$OUT/roll2.out"; then
	WINS=1
fi
if [ "$ATTACKS" = 1 ] && [ "$WINS" = 0 ] && [ "${V0% *}" = "0:0 600" ] && [ "${V1% *}" = "0:0 600" ] && [ "$VS1" = "$VS0" ] && [ -n "$VS0" ] &&
	grep -q "migration failed on $ATTACK_HOST (slot 3): \[library_verify_failed\].*(run as user pkcsslotd (uid [1-9][0-9]*), group pkcs11 (gid [1-9][0-9]*)).*rolled back and opens again in the old format" "$OUT/roll2.out" &&
	[ "${z2f%% *}" = old ] && [ "$z2same" = yes ] && slotd_running "$ATTACK_HOST"; then
	ok "hard-link attack on $ATTACK_HOST (openCryptoki 3.27, real library): $FIRED; the check ran as pkcsslotd:pkcs11, could not open it and failed, $ATTACK_HOST rolled back (same objects); $VICTIM still root:root 0600 with the same content (links ${V0##* } -> ${V1##* })"
else
	bad "hard-link attack on $ATTACK_HOST (fired '$FIRED', victim '$V0' -> '$V1', content $([ "$VS1" = "$VS0" ] && echo same || echo CHANGED), z2 '$z2f' same objects $z2same, wins $WINS)"
fi

# --- fleet-rollout.yml, 3: the rest --------------------------------------------------------------
# -vvv: every module argument and result Ansible would show (no_log must mask the PINs there too)
play roll3 fleet-rollout.yml -e "$SERIAL" -vvv
R3=$RC
all=1
for spec in "z1 3" "z1 1" "z1 2" "x1 3" "z2 3" "p1 3"; do
	read -r h s <<<"$spec"
	f=$(fmt_of "$h" "$s")
	[ "${f% *}" = "3.12 3.12" ] || { all=0; say "$h slot $s after the rollout: $f"; }
done
declare -A CH
for h in $NAMES; do CH[$h]=$(recap roll3 "$h" changed); done
if [ "$R3" = 0 ] && [ $all = 1 ] && [ "${CH[z1]}" = 0 ] && [ "${CH[x1]}" = 0 ] && [ "${CH[z2]}" = 1 ] && [ "${CH[p1]}" = 1 ]; then
	ok "fleet-rollout.yml rerun: every host migrated (format 3.12, tokversion = 3.12), only p1 and z2 changed, z1 changed=0"
else
	bad "rollout 3 (rc $R3, all 3.12 $all, changed z1=${CH[z1]} x1=${CH[x1]} z2=${CH[z2]} p1=${CH[p1]})"
fi
# Every library check of the rollouts ran as the pkcsslotd user with group pkcs11, never as root.
nlib=$(cat "$OUT"/roll[123].out | grep -ac "the host's library (run as user pkcsslotd (uid [1-9][0-9]*), group pkcs11 (gid [1-9][0-9]*)) sees every object of")
libhosts=$(cat "$OUT"/roll[123].out | awk '/^ok: \[[a-z0-9]*\] => \{/ { h = $2; gsub(/[][]/, "", h) }
	/the host.s library \(run as user pkcsslotd .* sees every object of/ { print h }' | sort -u | tr '\n' ' ')
if [ "$nlib" -ge 4 ] && ! cat "$OUT"/roll[123].out | grep -aq 'run as user root\|(uid 0)'; then
	ok "library checks: $nlib passed, every one run as the user pkcsslotd with group pkcs11 only (hosts: ${libhosts% }); none as root"
else
	bad "library checks: $nlib passed as pkcsslotd (hosts: $libhosts)"
fi
play roll4 fleet-rollout.yml -e "$SERIAL"
c4=0
for h in $NAMES; do c4=$((c4 + $(recap roll4 "$h" changed))); done
[ "$RC" = 0 ] && [ "$c4" = 0 ] && ok "fleet-rollout.yml once more: changed=0 on every host" || bad "rollout 4 (rc $RC, changed $c4)"

# --- each host's own library lists every object with the same values -----------------------------
# soft_view HOST on|off: a CCA slot's repository seen through the Soft token library (stdll =
# libpkcs11_sw.so, tokname = ccatok, its tokversion line kept), as it was made; off puts the
# conf back byte for byte. pkcsslotd is restarted around each change (it reads the conf at start).
soft_view() {
	local c=$RUN/$1/root/etc/opencryptoki/opencryptoki.conf
	on "$1" service pkcsslotd stop </dev/null || return 1
	if [ "$2" = on ]; then
		cat "$c" >"$RUN/$1/conf.saved"
		sed -i 's/^\([ \t]*\)stdll[ \t]*=[ \t]*libpkcs11_cca\.so[ \t]*$/\1stdll = libpkcs11_sw.so\n\1tokname = ccatok/' "$c"
	else
		cat "$RUN/$1/conf.saved" >"$c"
	fi
	on "$1" service pkcsslotd start </dev/null
}
declare -A CMP
while read -r name root port goarch slots; do
	IFS=, read -ra ss <<<"$slots"
	CMP[$name]=
	for s in "${ss[@]}"; do
		IFS=: read -r slot stdll label <<<"$s"
		read -r so user <<<"$(pins_of "$name" "$slot")"
		if [ "$stdll" = libpkcs11_cca.so ]; then
			soft_view "$name" on || bad "$name: could not show slot $slot through the Soft token library"
			grep -A4 "slot $slot" "$RUN/$name/root/etc/opencryptoki/opencryptoki.conf" | tr -s ' \n\t' ' ' >"$OUT/soft-view-$name-$slot.txt"
		fi
		req list "$slot" "$user" | p11 "$name" >"$OUT/after-$name-$slot.json"
		if [ "$stdll" = libpkcs11_cca.so ]; then
			soft_view "$name" off || bad "$name: could not put its conf back"
			say "$name slot $slot listed through: $(cat "$OUT/soft-view-$name-$slot.txt")"
		fi
		n=$(jq '.objects | length' "$OUT/before-$name-$slot.json")
		eq=$(jq -n --slurpfile a "$OUT/before-$name-$slot.json" --slurpfile b "$OUT/after-$name-$slot.json" \
			'[$a[0].objects, $b[0].objects] as [$x, $y] | [range(0; $x | length) | select($x[.] == $y[.])] | length')
		if [ "$(jq -S .objects "$OUT/before-$name-$slot.json")" = "$(jq -S .objects "$OUT/after-$name-$slot.json")" ]; then
			ok "$name slot $slot: its own openCryptoki lists all $n objects with the same values, AES check value and RSA signature as before"
		else
			bad "$name slot $slot: $eq of $n objects equal after the rollout: $(cat "$OUT/after-$name-$slot.json")"
		fi
		CMP[$name]="${CMP[$name]}${CMP[$name]:+, }slot $slot: $eq/$n"
	done
done <<<"$HOSTS"

# The victim once more, after z2 was migrated for real (its rolled-back copy still holds the link).
V2=$(victim_state) VS2=$(victim_sum)
if [ "${V2% *}" = "0:0 600" ] && [ "$VS2" = "$VS0" ]; then
	ok "$VICTIM after every rollout: still root:root 0600, same content (links ${V2##* })"
else
	WINS=1
	bad "$VICTIM after the rollouts: '$V2', content $([ "$VS2" = "$VS0" ] && echo same || echo CHANGED)"
fi

# --- no PIN anywhere ----------------------------------------------------------------------------
kill $SAMPLER 2>/dev/null
wait $SAMPLER 2>/dev/null
SAMPLER=
nsamples=$(cat "$SAMPLES")
hits=$(
	grep -rlaF -f "$PINS_FILE" "$OUT" "$RUN"/*/sshd.log "$RUN"/*/unshare.out "$RUN/ansible-local" "$RUN/cp" 2>/dev/null
	for h in $NAMES; do
		# everything the run wrote on the host: the overlay's upper layer and the repositories
		grep -rlaF -f "$PINS_FILE" "$RUN/$h/upper" "$RUN/$h/state" 2>/dev/null
	done
)
if [ -z "$hits" ] && [ ! -s "$RUN/argv-hits" ] && [ "${nsamples:-0}" -gt 10 ]; then
	ok "no PIN in any ansible output (one rollout at -vvv) or log, sshd log, file written on a host, or in argv ($nsamples samples of every /proc/*/cmdline)"
else
	bad "PIN found: files: $hits; argv: $(head -c 300 "$RUN/argv-hits" 2>/dev/null)"
fi

# --- the table -----------------------------------------------------------------------------------
echo
echo "| host | ansible_architecture | release | openCryptoki | tokens | objects compared by its own library after the rollout | changed on rerun |"
echo "|---|---|---|---|---|---|---|"
while read -r name root port goarch slots; do
	ver=$(sed -n 's/^version opencryptoki //p' "$BASE/$root/.pkcstok-root")
	toks=$(IFS=,; for s in $slots; do IFS=: read -r sl sd lb <<<"$s"; printf '%s, ' "$(case $sd in *ica*) echo ICA ;; *cca*) echo CCA ;; *ep11*) echo EP11 ;; *) echo Soft ;; esac) $sl"; done)
	rel="Debian ${root%%-*} ${root#*-}"
	echo "| $name | ${ARCH[$name]} | ${rel%-fips}$(case $root in *-fips) echo ", FIPS provider in force" ;; esac) | $ver | ${toks%, } | ${CMP[$name]} | $(recap roll4 "$name" changed) |"
done <<<"$HOSTS"
echo
echo "| rollout | host | slot | token | outcome | library check (as pkcsslotd:pkcs11) |"
echo "|---|---|---|---|---|---|"
for r in roll1 roll2; do
	while read -r line; do
		# "slot N: OUTCOME, library check X[, rolled back]"
		sl=${line#slot } sl=${sl%%:*}
		rest=${line#*: }
		tok=$(awk -v h=z1 '$1 == h { print $5 }' <<<"$HOSTS" | tr ',' '\n' | awk -F: -v s="$sl" '$1 == s { print $2 }')
		tok=$(case $tok in *ica*) echo ICA ;; *cca*) echo CCA ;; *ep11*) echo EP11 ;; *) echo Soft ;; esac)
		echo "| ${r#roll} | z1 | $sl | $tok | ${rest%%,*} | ${rest#*library check } |"
	done <"$OUT/$r-z1-slots.txt"
done
echo
echo "| attack on the library check | host | library | runs | wins |"
echo "|---|---|---|---|---|"
echo "| hard link to a root-only file as the migrated MK_USER, by a member of pkcs11 (fs.protected_hardlinks=0) | $ATTACK_HOST | openCryptoki $(sed -n 's/^version opencryptoki //p' "$BASE/$(awk -v h="$ATTACK_HOST" '$1 == h { print $2 }' <<<"$HOSTS")/.pkcstok-root") | $ATTACKS | $WINS |"
echo
cat "$OUT/timings"
echo "tokens made by $T_TOKENS; total $(elapsed)"
echo "$PASS passed, $FAILN failed"
[ "$FAILN" = 0 ]
