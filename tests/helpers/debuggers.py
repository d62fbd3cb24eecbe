"""Running gdb on a fixture's core, and grouping debuggers' output by thread.

gdb (`thread apply all ...`), lldb (`thread backtrace all`) and eu-stack
print a header line per thread followed by that thread's lines; the tests
compare what each says about each thread.
"""
import os
import re

from .paths import fixture_exe  # noqa: F401  (re-exported for the tests)
from .tools import gdb

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


def per_thread_values(out):
    """{tid: [value of each `$N = value` line]} from `thread apply all`."""
    return per_thread(out, GDB_THREAD, r"^\$\d+ = (.*)$")


# gdb warns, mid-line, about the size of a kernel's (or gcore's) XSAVE note
# in two cases, neither of which our note may give (it holds the components
# CRIU images carry, in the standard layout gdb expects):
# - "too small": gdb 13 on a CPU whose component offsets are not Intel's
#   (AMD), the note ending before where gdb looks for PKRU;
# - "Unexpected size": a CPU with components no CRIU image carries (AMX
#   tiles: the kernel's note is then 11,008 bytes), which gdb 13-18 do not
#   know either.
XSTATE_WARNING = re.compile(r"warning: (Section `\.reg-xstate/\d+' in core file too small"
                            r"|Unexpected size of section `\.reg-xstate/\d+' in core file)"
                            r"\.\n?")

NO_DEBUGINFOD = "set debuginfod enabled off"


def gdb_on_fixture(fixture, core, *commands):
    """gdb's output for `commands` on a core of a fixture, with the
    fixture's root as sysroot."""
    return gdb(core, *commands, exe=fixture_exe(fixture),
               sysroot=os.path.join(fixture, "root"), early=[NO_DEBUGINFOD])
