#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu: system packages, then a venv in .venv.
# Tested on Debian 12 (bookworm), 13 (trixie) and sid (scripts/distro.sh).
#
# pycriu is not on PyPI: it ships with the distribution's CRIU, for the
# distribution's python3: in the `criu` package up to Debian 12 (and Ubuntu),
# in its own `python3-pycriu` from Debian 13 on (criu only recommends it).
# The venv is therefore made from /usr/bin/python3 with
# --system-site-packages, so it sees pycriu (and protobuf) from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="criu gdb libc6-dbg elfutils binutils lldb python3 python3-venv python3-protobuf python3-tqdm groff-base gcc libc6-dev time"
# Container checkpoint archives (issue 13): Podman writes zstd by default and
# Python before 3.14 has no zstd module (python3-zstandard decodes it; the
# zstd command makes the tests' and benchmark's archives).  debuginfod is the
# real server the tests fetch binaries from by build-id, on the loopback.
PKGS="$PKGS python3-zstandard zstd debuginfod"
# Cross-architecture tests (tests/test_cross_arch.py): qemu-user writes the
# cores of aarch64/armv7/ppc64le/s390x/mips64el guests, gdb-multiarch reads them.  The ia32 program
# is built with the i686 cross compiler: Debian's gcc-multilib (-m32)
# conflicts with the arm cross compilers.
PKGS="$PKGS qemu-user gdb-multiarch gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
PKGS="$PKGS gcc-arm-linux-gnueabihf libc6-dev-armhf-cross gcc-i686-linux-gnu libc6-dev-i386-cross"
PKGS="$PKGS gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross gcc-s390x-linux-gnu libc6-dev-s390x-cross"
PKGS="$PKGS gcc-riscv64-linux-gnu libc6-dev-riscv64-cross gcc-mips64el-linux-gnuabi64 libc6-dev-mips64el-cross"
# A real 32-bit (ia32) task for CRIU to checkpoint (tests/test_real_criu.py):
# the i686 cross compiler builds it, Debian's 32-bit libc runs it.
if [ "$(dpkg --print-architecture)" = amd64 ]; then PKGS="$PKGS libc6-i386"; fi
# Only where the distribution has them (sid; not Debian 12 or 13): the
# loongarch64 cross compiler.  Where it is missing, the loongarch64 and
# riscv64 tests read the committed references in tests/data/.
OPTIONAL_PKGS="gcc-loongarch64-linux-gnu libc6-dev-loong64-cross"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
available() { apt-cache show "$1" >/dev/null 2>&1; }
pycriu_ok() { /usr/bin/python3 -c 'import pycriu.images.pb, pycriu.images.magic' 2>/dev/null; }
missing_of() { for p; do installed "$p" || echo "$p"; done; }
# apt-get as root (through sudo otherwise: sudo drops the environment, so
# DEBIAN_FRONTEND goes through env), waiting for the lock
apt_get() {
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 "$@" >&2
}
updated=""
apt_update() { [ -n "$updated" ] || { apt_get update -qq; updated=1; }; }
missing=$(missing_of $PKGS)
optional_missing() {
  for p in $OPTIONAL_PKGS; do
    installed "$p" || ! available "$p" || echo "$p"
  done
}
missing=$(echo $missing $(optional_missing))
if [ -n "$missing" ] || ! pycriu_ok; then
  apt_update
  # Debian 13 and later: pycriu is python3-pycriu (named, not left to
  # criu's Recommends, which apt may be told not to install)
  if apt-cache show python3-pycriu >/dev/null 2>&1 && ! installed python3-pycriu; then
    missing="$missing python3-pycriu"
  fi
  missing=$(echo $(echo $missing $(optional_missing) | tr ' ' '\n' | sort -u))
  if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing" >&2
    apt_get install -y -qq $missing
  fi
  pycriu_ok || { echo "setup: pycriu is still not importable by /usr/bin/python3" >&2; exit 1; }
fi

# Where CRIU can checkpoint (4.0 and later: Debian 13, sid), the real-CRIU
# tests also checkpoint a Go program and a Java program and read our cores
# with their own debuggers (tests/test_real_criu_runtimes.py): Go and Delve,
# and the JDK's jhsdb.  Not on Debian 12, whose criu 3.17 cannot checkpoint
# (those tests are not collected there).
RUNTIME_PKGS="golang-go delve default-jdk-headless"
criu_major=$(criu --version 2>/dev/null | sed -n 's/^Version: \([0-9]*\).*/\1/p')
if [ "${criu_major:-0}" -ge 4 ]; then
  missing=$(echo $(missing_of $RUNTIME_PKGS))
  if [ -n "$missing" ]; then
    echo "setup: installing the Go and Java tests' packages: $missing" >&2
    apt_update
    apt_get install -y -qq $missing
  fi
fi

PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pycriu' 2>/dev/null; then
  rm -rf .venv
  "$PY" -m venv --system-site-packages .venv
fi
# editable_mode=compat: the checkout is put on sys.path by a .pth line, not
# by setuptools' import hook, which every Python start of the venv then
# loaded with pathlib (9 ms of each run of bin/coredump, of each test's)
mode=editable_mode=compat
stamp=.venv/.installed-$({ cat setup.cfg requirements-dev.txt; echo "$mode"; } | sha1sum | cut -c1-12)
if [ ! -e "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    --config-settings "$mode" -e . -r requirements-dev.txt >&2
  rm -f .venv/.installed-*; touch "$stamp"
fi
