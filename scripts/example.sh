#!/usr/bin/env bash
# Command 1 of the README: convert the bundled example checkpoint and show
# gdb's backtrace of every thread from the core it produced.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${1:-out/example}
mkdir -p "$out"
ex=examples/threads
.venv/bin/coredump -i $ex/images -o "$out" --root $ex/root
pid=$(.venv/bin/python -c 'from criu_coredump.images import open_checkpoint as o; print(o("'$ex'/images").entries[0].pid)')
echo
echo "gdb on $out/core.$pid:"
gdb -batch -nx -ex "set sysroot $ex/root" -ex "set debuginfod enabled off" \
    -ex "info threads" -ex "thread apply all bt" \
    $ex/root/opt/ccd/threads/prog "$out/core.$pid" 2>&1 | grep -v "^warning: Can't open file"
