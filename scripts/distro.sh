#!/usr/bin/env bash
# Run the README's commands in a Debian root of another release, built with
# debootstrap: a clean clone of this repository (its HEAD commit) and a copy
# of ../shared beside it are put in the root, and the command runs there
# under chroot.
#
#   scripts/distro.sh SUITE [test|example|shell|build] [ARGS...]
#
#   SUITE    trixie (Debian 13), sid, or any suite debootstrap knows
#   test     scripts/test.sh ARGS (the default)
#   example  scripts/example.sh ARGS
#   shell    an interactive shell in the clone (for debugging)
#   build    only make sure the root exists
#
# Roots are cached outside the clone, in $CCD_ROOTS (default
# /var/cache/criu-coredump/roots/SUITE), and rebuilt from scratch when missing,
# broken (no working apt or python3 inside) or older than $CCD_ROOT_MAX_DAYS
# days (default 7).  CCD_FRESH_ROOT=1 builds a new root (rather: a throwaway
# one beside the cache, removed afterwards): what a new user on a fresh
# machine sees.  What scripts/setup.sh installs stays in the cached root, so
# later runs skip the downloads.
#
# Needs root.  Mounts (/proc, /sys, /dev, /dev/pts, and the root bound onto
# itself, which CRIU wants) are made in a private mount namespace and undone
# on every exit path; descriptors above 2 are closed before the chroot (CRIU
# refuses to dump a process tree that inherited them).
set -euo pipefail

die() { echo "distro: $*" >&2; exit 2; }

# All in a function: bash reads a script as it runs, a function whole, so
# editing this file while it runs cannot derail a run.
main() {

if [ "${1:-}" = --inner ]; then
  # Second stage, in the private mount namespace: mount, chroot, unmount.
  shift
  root=$1; shift
  umount_all() {
    for m in dev/pts dev sys proc; do
      mountpoint -q "$root/$m" && umount -l "$root/$m" || true
    done
    mountpoint -q "$root" && umount -l "$root" || true
  }
  trap umount_all EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  mount --make-rprivate / 2>/dev/null || true
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --bind /sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  # no descriptors above 2 into the chroot
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" || true
  done
  env_keep=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
            LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}")
  for v in $(compgen -e); do
    case $v in PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|PIP_TRUSTED_HOST|PIP_CERT|PIP_DEFAULT_TIMEOUT|\
               http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|CCD_*|PYTEST_*)
      env_keep+=("$v=${!v}");;
    esac
  done
  set +e
  env -i "${env_keep[@]}" chroot "$root" "$@"
  rc=$?
  exit $rc
fi

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mount, chroot)"
[ $# -ge 1 ] || die "usage: scripts/distro.sh SUITE [test|example|shell|build] [ARGS...]"
suite=$1; shift
what=test
case "${1:-}" in test|example|shell|build) what=$1; shift;; esac

here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(readlink -f "$here/../shared" 2>/dev/null || true)
ROOTS=${CCD_ROOTS:-/var/cache/criu-coredump/roots}
MIRROR=${CCD_MIRROR:-http://deb.debian.org/debian}
MAX_DAYS=${CCD_ROOT_MAX_DAYS:-7}
mkdir -p "$ROOTS"

# One user of a root at a time.
exec 9>"$ROOTS/$suite.lock"
flock 9

root_ok() {
  local r=$1
  [ -e "$r/.ccd-root-ok" ] || return 1
  [ -z "$(find "$r/.ccd-root-ok" -mtime +"$MAX_DAYS" 2>/dev/null)" ] || { echo "distro: $r is older than $MAX_DAYS days" >&2; return 1; }
  chroot "$r" /usr/bin/apt-get --version >/dev/null 2>&1 || { echo "distro: $r is broken (apt-get)" >&2; return 1; }
  chroot "$r" /usr/bin/python3 -c 'import sys' >/dev/null 2>&1 || { echo "distro: $r is broken (python3)" >&2; return 1; }
}

# Nothing may stay mounted below a root that is deleted.
unmount_below() {
  local r; r=$(readlink -f "$1")
  awk -v r="$r" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" || true; done
}

build_root() {
  local r=$1 t0=$SECONDS
  command -v debootstrap >/dev/null || {
    echo "distro: installing debootstrap" >&2
    # apt-get update does not wait for the lists lock as install waits for
    # dpkg's: retry while another apt (a set-up, the other root's build)
    # holds it
    local try
    for try in $(seq 90); do
      apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 && break
      [ "$try" = 90 ] && die "apt-get update failed"
      sleep 10
    done
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq debootstrap >&2
  }
  unmount_below "$r.new"; rm -rf "$r.new"
  echo "distro: building a Debian $suite root in $r (debootstrap from $MIRROR)" >&2
  # debootstrap's log goes to the root's debootstrap/debootstrap.log
  debootstrap --variant=minbase --include=ca-certificates,python3 \
      "$suite" "$r.new" "$MIRROR" >"$ROOTS/$suite.debootstrap.out" 2>&1 || {
    tail -20 "$ROOTS/$suite.debootstrap.out" >&2
    tail -20 "$r.new/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    die "debootstrap of $suite failed"
  }
  # no daemons started by package scripts inside the root
  printf '#!/bin/sh\nexit 101\n' >"$r.new/usr/sbin/policy-rc.d"
  chmod 755 "$r.new/usr/sbin/policy-rc.d"
  date -u +%FT%TZ >"$r.new/.ccd-root-ok"
  unmount_below "$r"; rm -rf "$r"
  mv "$r.new" "$r"
  echo "distro: $suite root built in $((SECONDS - t0)) s" >&2
}

if [ "${CCD_FRESH_ROOT:-}" = 1 ]; then
  root=$ROOTS/$suite.fresh.$$
  cleanup_fresh() { unmount_below "$root"; rm -rf "$root" "$root.new"; }
  trap cleanup_fresh EXIT
  build_root "$root"
else
  root=$ROOTS/$suite
  root_ok "$root" || build_root "$root"
fi
[ "$what" = build ] && exit 0

# The host's network settings: name servers, and the local certificate
# authorities its egress may need (pip, apt over https).  The root's apt
# accepts Release files past their Valid-Until: the mirror may be a
# snapshot, and sid's Release expires a week after it is made (apt-get
# update then fails with exit 100); and, when the host's apt does not check
# dates (a clock ahead of the mirror), the root's does not either.
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
conf=$root/etc/apt/apt.conf.d/99ccd-host
echo 'Acquire::Check-Valid-Until "false";' >"$conf"
for opt in Acquire::Check-Date; do
  if apt-config dump 2>/dev/null | grep -qx "$opt \"false\";"; then
    echo "$opt \"false\";" >>"$conf"
  fi
done
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
fi

# A clean clone of the submission at HEAD, and ../shared beside it.
ci=$root/ci
unmount_below "$ci"; rm -rf "$ci"; mkdir -p "$ci"
# what earlier runs' tests left in the root's /tmp (GiBs of checkpoints)
rm -rf "$root"/tmp/pytest-of-*
head=$(git -C "$here" rev-parse HEAD)
git clone -q --no-hardlinks "$here" "$ci/criu-coredump"
git -C "$ci/criu-coredump" checkout -q --detach "$head"
if [ -n "$shared" ] && [ -d "$shared" ]; then
  cp -a "$shared/." "$ci/shared/"
else
  echo "distro: no ../shared beside $here: tests that need the fixtures will fail" >&2
fi
echo "distro: $suite: clean clone of $(git -C "$here" log -1 --format='%h %s' "$head" | cut -c1-72)" >&2
if [ -n "$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "distro: note: uncommitted changes in $here are not in the clone" >&2
fi

case $what in
  test)    cmd=(scripts/test.sh "$@");;
  example) cmd=(scripts/example.sh "$@");;
  shell)   cmd=(bash -i);;
esac
set +e
unshare --mount --propagation private -- "$here/scripts/distro.sh" --inner "$root" \
  /bin/bash -c 'cd /ci/criu-coredump && exec "$@"' bash "${cmd[@]}"
rc=$?
set -e
if [ "${CCD_KEEP:-}" != 1 ] && [ "${CCD_FRESH_ROOT:-}" != 1 ]; then
  unmount_below "$ci"; rm -rf "$ci"
fi
exit $rc
}

main "$@"
exit $?
