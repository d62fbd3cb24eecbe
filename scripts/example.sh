#!/usr/bin/env bash
# Command 1 of the README: convert the bundled example checkpoint and show
# gdb's backtrace of every thread from the core it produced.
#
# The example was checkpointed on Debian 12 (glibc 2.36): its program and
# libraries are in examples/threads/root, with that glibc's libthread_db and
# the debug file of its libc.so.6 (Debian 12's libc6 and libc6-dbg
# 2.36-9+deb12u14, the build the process ran), so that any gdb, on any
# distribution, names the threads and libc's frames as it would have there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${1:-out/example}
mkdir -p "$out"
ex=examples/threads
root=$(cd "$ex/root" && pwd)          # gdb wants an absolute sysroot
.venv/bin/coredump -i $ex/images -o "$out" --root "$root"
pid=$(.venv/bin/python -c 'from criu_coredump.images import open_checkpoint as o; print(o("'$ex'/images").entries[0].pid)')
echo
echo "gdb on $out/core.$pid:"
# -iex: set before gdb loads the core, so that it reads the libraries (and
# their debug files, below the sysroot's /usr/lib/debug) from the root.  The
# root's libthread_db is code gdb would run: allowed explicitly, for this
# file only.  No source files of the program or of glibc here: not looked for.
exec gdb -batch -nx -iex "set sysroot $root" -iex "set debuginfod enabled off" \
    -iex "add-auto-load-safe-path $root/usr/lib/x86_64-linux-gnu/libthread_db.so.1" \
    -iex "set source open off" \
    -ex "info threads" -ex "thread apply all bt" \
    "$root/opt/ccd/threads/prog" "$out/core.$pid" 2>&1
