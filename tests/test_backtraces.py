"""lldb and elfutils unwind our cores of the fixtures as gdb does: every
thread, the same frames (program counters) in the same functions.

lldb (Debian 12's lldb 14, 13's lldb 19) reads the libraries from the
fixture's root with `platform select remote-linux --sysroot ROOT`; eu-stack
is given the root with `--sysroot` where it has the option (elfutils 0.190
and later); elfutils 0.188 (Debian 12) has none and opens the paths of
NT_FILE, which there are the same Debian 12 libraries the fixtures ran with.
gdb runs with `backtrace past-main on` so that it shows the frames outside
main that the other two always show.

A function without a symbol is `??` to gdb, `___lldb_unnamed_symbolN` (or
`..._HEX`) to lldb and nameless to eu-stack (a libc without its debug file: glibc's
static __libc_start_call_main): the program counters must still agree.
"""
import os
import re
import subprocess

import pytest

from .helpers.tools import need
from .helpers.debuggers import GDB_THREAD, fixture_exe, gdb_on_fixture, per_thread

pytestmark = pytest.mark.slow

CORES = [("threads", 13466), ("stopped_static", 13508), ("tree", 13544),
         ("tree", 13547), ("shmem", 13585)]
# lldb 14 prints Python errors when Debian's python3-lldb is not installed;
# they do not concern the core.
LLDB_NOISE = re.compile(r"^(Traceback|  File \"<string>\"|NameError|ModuleNotFoundError)")


def _run(args, timeout=300):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout).stdout


# lldb up to 19 numbers them (___lldb_unnamed_symbol3290), lldb 21 gives
# their address in the module (___lldb_unnamed_symbol_88ef0)
UNNAMED = re.compile(r"^(\?\?|___lldb_unnamed_symbol(\d+|_[0-9a-f]+))?$")


def _frame(m):
    name = m.group(2) or ""
    return int(m.group(1), 16), "??" if UNNAMED.match(name) else name


def _has_option(tool, option):
    return option in _run([tool, "--help"])


def gdb_frames(fixture, core, *extra):
    """{tid: [(pc, function)]} from gdb's `thread apply all bt`."""
    need("gdb")
    out = gdb_on_fixture(fixture, core, "set backtrace past-main on",
                         "set print frame-info location-and-address",
                         "thread apply all bt", *extra)
    return per_thread(out, GDB_THREAD, r"^#\d+\s+(0x[0-9a-f]+) in (\S+) \(", _frame), out


def lldb_frames(fixture, core):
    """{tid: [(pc, function)]} from lldb's `thread backtrace all`."""
    need("lldb")
    try:
        out = _run(["lldb", "--batch",
                    "-o", "platform select remote-linux --sysroot " + os.path.join(fixture, "root"),
                    "-o", "target create --core %s %s" % (core, fixture_exe(fixture)),
                    "-o", "image list", "-o", "thread list", "-o", "thread backtrace all"],
                   timeout=90)
    except subprocess.TimeoutExpired as exc:
        # lldb 21 (Debian sid) never finishes loading a core without a
        # stop reason (an NT_SIGINFO of zeros); ours carry gcore's, the
        # ptrace stop (notes.current_signal)
        pytest.fail("lldb did not finish in 90 s: it hangs loading a core without a "
                    "stop reason:\n%s" % (exc.output or b"").decode(errors="replace"))
    out = "\n".join(line for line in out.splitlines() if not LLDB_NOISE.match(line))
    tids = dict(re.findall(r"^[* ] thread #(\d+): tid = (\d+),", out, re.M))
    frames = per_thread(out, r"^[* ] thread #(\d+),",
                        r"^\s+[* ] frame #\d+: (0x[0-9a-f]+) \S+?`([^\s(]+)", _frame)
    return {int(tids[str(i)]): f for i, f in frames.items()}, out


def eu_stack_frames(fixture, core):
    """{tid: [(pc, function)]} from `eu-stack -d` (DWARF names, as gdb's)."""
    need("eu-stack")
    sysroot = []
    if _has_option("eu-stack", "--sysroot"):
        sysroot = ["--sysroot", os.path.join(fixture, "root")]
    out = _run(["eu-stack", "-d"] + sysroot + ["--core", core, "-e", fixture_exe(fixture)])
    return per_thread(out, r"^TID (\d+):", r"^#\d+\s+(0x[0-9a-f]+)(?: (\S+))?\s*$",
                      _frame), out


def aliases_agree(fixture, core, pairs):
    """Different names for one pc must be aliases of one function: gdb
    gives both symbols the same address (clone3 and __clone3 in glibc)."""
    if not pairs:
        return True
    cmds = ["p/x (long)&'%s' == (long)&'%s'" % p for p in sorted(pairs)]
    _, out = gdb_frames(fixture, core, *cmds)
    return re.findall(r"^\$\d+ = (\S+)$", out, re.M) == ["0x1"] * len(pairs)


@pytest.mark.parametrize("reader", ["lldb", "eu-stack"])
@pytest.mark.parametrize("name,pid", CORES)
def test_backtraces_agree_with_gdb(reader, name, pid, cores, fixtures_dir):
    fx = fixtures_dir(name)
    core = os.path.join(cores(name), "core.%d" % pid)
    want, gdb_out = gdb_frames(fx, core)
    got, out = (lldb_frames if reader == "lldb" else eu_stack_frames)(fx, core)
    assert sorted(got) == sorted(want), out
    if reader == "lldb" and name != "stopped_static":
        # the libraries came from the fixture's root, not from this machine
        assert re.search(r" %s/(usr/)?lib/x86_64-linux-gnu/libc\.so\.6 *$"
                         % re.escape(os.path.join(fx, "root")), out, re.M), out
    pairs = set()
    for tid, frames in want.items():
        assert len(frames) >= 2, gdb_out
        assert [pc for pc, _ in got[tid]] == [pc for pc, _ in frames], (tid, out)
        # a function gdb cannot name, the other reader cannot either
        assert [a == "??" for _, a in frames] == [b == "??" for _, b in got[tid]], (tid, out)
        pairs |= {(a, b) for (_, a), (_, b) in zip(frames, got[tid]) if a != b}
    assert aliases_agree(fx, core, pairs), (pairs, out)
