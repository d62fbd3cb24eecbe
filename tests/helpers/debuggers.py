"""Running gdb on a fixture's core, and grouping debuggers' output by thread.

gdb (`thread apply all ...`), lldb (`thread backtrace all`) and eu-stack
print a header line per thread followed by that thread's lines; the tests
compare what each says about each thread.
"""
import os
import re
import subprocess

# gdb's header of `thread apply all`: "Thread 2 (Thread 0x... (LWP 42)):" or,
# without libthread_db, "Thread 1 (LWP 42):"
GDB_THREAD = r"^Thread \d+ .*\(LWP (\d+)\)\)?:$"


def per_thread(text, header, item, value=lambda m: m.group(1)):
    """{thread: [value(match) of each `item` line after its `header`]}; the
    thread is the header's first group, as an int."""
    groups, cur = {}, None
    for line in text.splitlines():
        m = re.match(header, line)
        if m:
            cur = groups.setdefault(int(m.group(1)), [])
            continue
        m = re.match(item, line)
        if m and cur is not None:
            cur.append(value(m))
    return groups


def fixture_exe(fixture):
    """The fixture's program, below its root."""
    root = os.path.join(fixture, "root")
    return next(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f == "prog")


def gdb_on_fixture(fixture, core, *commands):
    """gdb's output for `commands` on a core of a fixture, with the
    fixture's root as sysroot."""
    # -iex: the sysroot must be set before gdb loads the core and its
    # libraries (gdb 16 otherwise first loads this machine's libc)
    args = ["gdb", "-batch", "-nx", "-iex", "set sysroot " + os.path.abspath(os.path.join(fixture, "root")),
            "-iex", "set debuginfod enabled off"]
    for c in commands:
        args += ["-ex", c]
    return subprocess.run(args + [fixture_exe(fixture), core], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300).stdout
