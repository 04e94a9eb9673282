#!/bin/sh
# Builds (or checks) one cached Debian root for the real-openCryptoki suites:
#
#   sh e2e/mkroot.sh SUITE ARCH PACKAGE[,PACKAGE...] [fips]
#
# The root is <cache>/SUITE-ARCH (<cache> = $PKCSTOK_ROOTS, default <module root>/.cache/roots),
# or <cache>/SUITE-ARCH-fips with the variant fips: the same packages plus openssl and
# openssl-provider-fips, `openssl fipsinstall` run in the root and OpenSSL's standard FIPS
# configuration as its /etc/ssl/openssl.cnf (see fips_config below; Debian's own file is kept
# as /etc/ssl/openssl.cnf.dist, so that a suite can switch FIPS off in its session),
# unpacked with `mmdebstrap --variant=extract` from the Debian archive this machine's own apt
# sources name (never a host written here), then made runnable (see fixup below). Idempotent:
# <root>/.pkcstok-root holds the request (suite, arch, packages, layout, pkcs11 gid,
# pkcsslotd uid) and the unpacked versions; a root whose request matches is left alone, any
# other is rebuilt next to it and swapped in. The suites never write into a cached root: they
# work in an overlay on top of it (e2e/ockroot).
#
# Root only. Exit non-zero with a message on stderr when the root cannot be made.
set -eu

say() { echo "e2e/mkroot.sh: $*" >&2; }
die() { say "$*"; exit 1; }

[ $# -eq 3 ] || [ $# -eq 4 ] || die "usage: mkroot.sh SUITE ARCH PACKAGE[,PACKAGE...] [fips]"
SUITE=$1 ARCH=$2 INCLUDE=$3 VARIANT=${4:-}
case $VARIANT in
"") NAME=$SUITE-$ARCH ;;
fips)
	NAME=$SUITE-$ARCH-fips
	case ",$INCLUDE," in *,openssl,*) ;; *) INCLUDE=$INCLUDE,openssl ;; esac
	case ",$INCLUDE," in *,openssl-provider-fips,*) ;; *) INCLUDE=$INCLUDE,openssl-provider-fips ;; esac
	;;
*) die "unknown variant $VARIANT (known: fips)" ;;
esac
# Bump when fixup changes: every cached root is then rebuilt once.
LAYOUT=1

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap, chown, mknod)"
for c in mmdebstrap flock; do
	command -v $c >/dev/null 2>&1 || die "$c is missing (make setup installs it)"
done

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${PKCSTOK_ROOTS:-$(dirname "$HERE")/.cache/roots}
ROOT=$CACHE/$NAME
STAMP=.pkcstok-root
mkdir -p "$CACHE"

# One builder at a time per cache (engineers share the checkout).
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "another mkroot.sh holds $CACHE/.lock"

# --- What the root must be -------------------------------------------------------------------
gid=$(getent group pkcs11 | cut -d: -f3) || true
[ -n "$gid" ] || die "group pkcs11 is missing on the host (make setup creates it)"
# pkcsslotd user: the host's own if it has one (ids then mean the same inside and out), else
# the highest system uid the host does not use.
uid=$(getent passwd pkcsslotd | cut -d: -f3) || true
if [ -z "$uid" ]; then
	uid=999
	while getent passwd "$uid" >/dev/null; do uid=$((uid - 1)); done
	[ "$uid" -ge 100 ] || die "no free system uid for pkcsslotd"
fi
qemu=
case $ARCH in
amd64) ;;
*)
	qemu=/usr/bin/qemu-$(case $ARCH in s390x) echo s390x ;; arm64) echo aarch64 ;; ppc64el) echo ppc64le ;; *) echo "$ARCH" ;; esac)-static
	[ -x "$qemu" ] || die "$qemu is missing (package qemu-user-static)"
	;;
esac
want="suite=$SUITE
arch=$ARCH
packages=$INCLUDE
layout=$LAYOUT
pkcs11_gid=$gid
pkcsslotd_uid=$uid"
# Only a variant root records its variant: the plain roots' stamps stay as they were.
[ -z "$VARIANT" ] || want="$want
variant=$VARIANT"

if [ -f "$ROOT/$STAMP" ] && [ "$(grep -v -e '^version ' -e '^fallback' "$ROOT/$STAMP")" = "$want" ]; then
	say "$NAME is up to date ($(grep '^version opencryptoki' "$ROOT/$STAMP" | cut -d' ' -f3))"
	exit 0
fi

# --- The archive: URIs of the first main "deb" entry of this machine's apt sources ------------
mirror() {
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822 stanzas: first one with Types: deb and Components: main.
		awk 'BEGIN{RS=""; FS="\n"}
		{ t=""; u=""; c=""
		  for (i = 1; i <= NF; i++) {
		    if ($i ~ /^Types:/) t = $i; else if ($i ~ /^URIs:/) u = $i; else if ($i ~ /^Components:/) c = $i
		  }
		  if (t ~ /[ \t]deb([ \t]|$)/ && c ~ /[ \t]main([ \t]|$)/) { sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); print a[1]; exit }
		}' "$f"
	done | head -n 1
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk '$1 == "deb" && / main( |$)/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; exit } }' "$f"
	done | head -n 1
}
URL=$(mirror | head -n 1)
[ -n "$URL" ] || die "no 'deb ... main' entry in /etc/apt/sources.list.d/*.sources or sources.list"

NEW=$ROOT.new.$$
LOG=$CACHE/$NAME.log
cleanup() { [ -d "$NEW" ] && rm -rf --one-file-system "$NEW"; return 0; }
trap cleanup EXIT INT TERM

extract() { # extract DIR [mmdebstrap option...] -- [mirror line...] (default: the archive)
	d=$1
	shift
	n=0
	for a in "$@"; do
		[ "$a" = -- ] && break
		n=$((n + 1))
	done
	opts=$(i=0; for a in "$@"; do [ $i -lt $n ] && printf '%s\n' "$a"; i=$((i + 1)); done)
	rm -rf --one-file-system "$d"
	if [ $n -lt $# ]; then
		shift $((n + 1))
	else
		set -- "$URL"
	fi
	# shellcheck disable=SC2086 # opts are one per line, without blanks inside
	(IFS='
'; exec mmdebstrap --variant=extract --arch="$ARCH" --include="$INCLUDE" $opts "$SUITE" "$d" "$@") >"$LOG" 2>&1
}

# testing's Release file can be past its Valid-Until on the archive (seen here): that suite
# only is read without the check (its packages are still verified against the signed index).
case $SUITE in
testing) set -- '--aptopt=Acquire::Check-Valid-Until "false"' ;;
*) set -- ;;
esac

say "unpacking $SUITE $ARCH ($INCLUDE) for $NAME from the archive in this machine's apt sources (log: $LOG)"
fallback=
if ! extract "$NEW" "$@"; then
	# The archive may lack some files its index names (seen here: trixie's s390x libc6, zlib1g,
	# libssl3t64, libpcre2-8-0 point-release builds answer 404 while amd64's are there). Take
	# exactly those packages from "testing", pinned, and keep the rest (openCryptoki, opensc:
	# what the suites test) from SUITE.
	fallback=$(sed -n 's|^E: Failed to fetch .*/pool/[^ ]*/\([^/_]*\)_[^/ ]*\.deb  *404.*|\1|p' "$LOG" | sort -u | tr '\n' ' ')
	[ -n "$fallback" ] || { tail -n 20 "$LOG" >&2; die "mmdebstrap $SUITE $ARCH failed (archive $URL unreachable?)"; }
	for p in $(echo "$INCLUDE" | tr ',' ' '); do
		case " $fallback" in *" $p "*)
			case $p in opencryptoki | opensc | libopencryptoki0 | opensc-pkcs11) die "the archive lacks $p for $SUITE $ARCH: cannot build the root" ;; esac ;;
		esac
	done
	say "the archive lacks $SUITE $ARCH files of: $fallback- taking those packages from testing"
	prefs=$CACHE/$NAME.prefs
	printf 'Package: %s\nPin: release a=testing\nPin-Priority: 995\n' "$fallback" >"$prefs"
	extract "$NEW" "--aptopt=APT::Default-Release \"$SUITE\"" '--aptopt=Acquire::Check-Valid-Until "false"' \
		"--setup-hook=mkdir -p \"\$1/etc/apt/preferences.d\" && cp '$prefs' \"\$1/etc/apt/preferences.d/pkcstok-fallback\"" \
		-- "deb $URL $SUITE main" "deb $URL testing main" ||
		{ tail -n 20 "$LOG" >&2; die "mmdebstrap $SUITE $ARCH with testing for $fallback failed"; }
fi

# --- Make it runnable -------------------------------------------------------------------------
# Every path below is relative to the new root and made from the host: the root's own symlinks
# are relative (var/run -> ../run) so that nothing here can follow one out of it.
R=$NEW
# The extract variant leaves out the merged-/usr links (bookworm unpacks real /bin, /lib).
for d in bin sbin lib lib64; do
	[ -e "$R/$d" ] || [ -L "$R/$d" ] || [ ! -d "$R/usr/$d" ] || ln -s "usr/$d" "$R/$d"
done
mkdir -p "$R/proc" "$R/run/lock" "$R/root" "$R/usr/local/bin" "$R/var/lib/opencryptoki" "$R/var/log/opencryptoki" "$R/tmp" "$R/dev/shm"
[ -e "$R/var/run" ] || [ -L "$R/var/run" ] || ln -s ../run "$R/var/run"
[ -e "$R/var/lock" ] || [ -L "$R/var/lock" ] || ln -s ../run/lock "$R/var/lock"
chmod 1777 "$R/tmp" "$R/dev/shm"
for n in null:1:3 zero:1:5 random:1:8 urandom:1:9; do
	name=${n%%:*} mm=${n#*:}
	[ -c "$R/dev/$name" ] || { rm -f "$R/dev/$name"; mknod -m 0666 "$R/dev/$name" c "${mm%:*}" "${mm#*:}"; }
done
if [ -n "$qemu" ]; then
	cp "$qemu" "$R/usr/bin/"
fi
printf 'root:x:0:0:root:/root:/bin/sh\npkcsslotd:x:%s:%s:openCryptoki slot daemon:/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' "$uid" "$gid" >"$R/etc/passwd"
printf 'root:x:0:\npkcs11:x:%s:pkcsslotd,root\nnogroup:x:65534:\n' "$gid" >"$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
# openCryptoki: what the package's postinst and tmpfiles.d would have made.
for f in "$R"/etc/opencryptoki/*.conf; do
	[ -f "$f" ] && chgrp "$gid" "$f"
done
[ -f "$R/etc/opencryptoki/strength.conf" ] && chmod 0640 "$R/etc/opencryptoki/strength.conf"
mkdir -p "$R/run/opencryptoki" "$R/run/lock/opencryptoki"
chgrp -R "$gid" "$R/var/lib/opencryptoki" "$R/run/opencryptoki" "$R/run/lock/opencryptoki" "$R/var/log/opencryptoki"
find "$R/var/lib/opencryptoki" "$R/run/opencryptoki" "$R/run/lock/opencryptoki" -type d -exec chmod 0770 {} +
# The loader cache (libc-bin's ldconfig), through qemu for a foreign root.
chroot "$R" $qemu /sbin/ldconfig 2>/dev/null || say "ldconfig in the root failed (libraries are still found in the default paths)"

# --- The variant fips: Debian's FIPS provider, installed and made the default ------------------
# What OpenSSL's fips_module(7) and fips_config(5) describe: `openssl fipsinstall` writes the
# provider's self-test record (fipsmodule.cnf), and openssl.cnf includes it, activates the
# providers fips and base only (no default provider: nothing outside the module) and asks for
# fips=yes by default. Debian's OPENSSLDIR is /usr/lib/ssl, whose openssl.cnf links to
# /etc/ssl/openssl.cnf. The result is checked: MD5 refused, SHA-256 computed, fips listed.
fips_config() {
	cat <<-'EOF'
		# OpenSSL's standard FIPS configuration (fips_config(5)), written by e2e/mkroot.sh.
		# Debian's own openssl.cnf is /etc/ssl/openssl.cnf.dist.
		config_diagnostics = 1
		openssl_conf = openssl_init

		.include /etc/ssl/fipsmodule.cnf

		[openssl_init]
		providers = provider_sect
		alg_section = algorithm_sect

		[provider_sect]
		fips = fips_sect
		base = base_sect

		[base_sect]
		activate = 1

		[algorithm_sect]
		default_properties = fips=yes
	EOF
}
if [ "$VARIANT" = fips ]; then
	module=$(cd "$R" && ls usr/lib/*/ossl-modules/fips.so 2>/dev/null | head -n 1)
	[ -n "$module" ] || die "$NAME: no usr/lib/*/ossl-modules/fips.so after unpacking openssl-provider-fips"
	[ -f "$R/etc/ssl/openssl.cnf" ] || die "$NAME: no /etc/ssl/openssl.cnf after unpacking openssl"
	cp -p "$R/etc/ssl/openssl.cnf" "$R/etc/ssl/openssl.cnf.dist"
	chroot "$R" $qemu /usr/bin/openssl fipsinstall -out /etc/ssl/fipsmodule.cnf -module "/$module" >>"$LOG" 2>&1 ||
		{ tail -n 20 "$LOG" >&2; die "$NAME: openssl fipsinstall failed"; }
	fips_config >"$R/etc/ssl/openssl.cnf"
	chmod 0644 "$R/etc/ssl/openssl.cnf" "$R/etc/ssl/fipsmodule.cnf"
	if chroot "$R" $qemu /usr/bin/openssl md5 </dev/null >>"$LOG" 2>&1; then
		die "$NAME: openssl md5 works: the FIPS configuration is not in force"
	fi
	chroot "$R" $qemu /usr/bin/openssl sha256 </dev/null >>"$LOG" 2>&1 || die "$NAME: openssl sha256 fails under the FIPS configuration (log: $LOG)"
	chroot "$R" $qemu /usr/bin/openssl list -providers 2>>"$LOG" | grep -qi '^ *fips' || die "$NAME: openssl list -providers does not list fips (log: $LOG)"
	say "$NAME: FIPS provider installed (/$module), openssl md5 refused, sha256 computed"
fi

# --- Check it and stamp it ---------------------------------------------------------------------
ver() { # version of package $1 from its changelog (the extract variant keeps no dpkg status)
	zcat "$R/usr/share/doc/$1/changelog.Debian.gz" 2>/dev/null | head -n 1 | sed -n 's/^[^ ]* (\([^)]*\)).*/\1/p'
}
for f in usr/sbin/pkcsslotd usr/sbin/pkcsconf usr/bin/pkcs11-tool; do
	[ -e "$R/$f" ] || die "$NAME: $f missing after unpacking"
done
chroot "$R" $qemu /usr/bin/pkcs11-tool 2>&1 | grep -q '^Usage: pkcs11-tool' || die "$NAME: pkcs11-tool does not run in the root"
{
	printf '%s\n' "$want"
	for p in opencryptoki opensc libc6; do printf 'version %s %s\n' "$p" "$(ver $p)"; done
	[ "$VARIANT" != fips ] || for p in openssl openssl-provider-fips; do printf 'version %s %s\n' "$p" "$(ver $p)"; done
	[ -z "$fallback" ] || printf 'fallback from testing: %s\n' "$fallback"
} >"$R/$STAMP"

# Swap it in. An old root still mounted by someone (proc) is left for `make clean`.
if [ -e "$ROOT" ]; then
	mv "$ROOT" "$ROOT.old.$$"
	mv "$NEW" "$ROOT"
	rm -rf --one-file-system "$ROOT.old.$$" 2>/dev/null || say "could not remove all of $ROOT.old.$$ (still mounted?): make clean removes it"
else
	mv "$NEW" "$ROOT"
fi
trap - EXIT INT TERM
say "$NAME ready: $(grep '^version' "$ROOT/$STAMP" | cut -d' ' -f2- | tr '\n' ' ')"
