"""`readelf -n` of our core of the `threads` fixture against the kernel's.

../shared/fixtures/threads/kernel-core-layout.txt is `readelf -n` of a core
that Linux 6.18 wrote for the same program.  Ours must list the same notes,
in the same order, with the same owners and sizes -- except NT_X86_XSTATE:
the kernel sizes it with the dumping CPU's own XSAVE offsets (CPUID leaf
0xD; on the AMD CPU that wrote the file, PKRU sits at 2432 and the note is
0x988 bytes), which CRIU images do not record.  We write Intel's standard
offsets (PKRU at 2688), the only layout gdb 13 reads, so our size is the
end of the highest component in the layout our NT_X86_XSAVE_LAYOUT note
declares, which is also gdb's X86_XSTATE_SIZE(xcr0).
"""
import os
import re
import struct
import subprocess

import pytest

from .helpers.paths import FIRST_PID, FIXTURES
from .helpers.tools import need
from .helpers.core2images import CoreFile

pytestmark = pytest.mark.slow

LAYOUT = os.path.join(FIXTURES, "threads", "kernel-core-layout.txt")
NOTE_ROW = re.compile(r"^\s+(CORE|LINUX)\s+0x([0-9a-f]+)\s+(\S.*)$")
XSTATE = "NT_X86_XSTATE (x86 XSAVE extended state)"
NT_X86_XSTATE, NT_X86_XSAVE_LAYOUT = 0x202, 0x205
XCR0_OFFSET = 464

# gdb's X86_XSTATE_SIZE(xcr0) (gdbsupport/x86-xstate.h): the note size gdb
# expects, from the highest feature xcr0 enables, in the standard layout.
GDB_XSTATE_SIZES = ((1 << 9, 2696), (0xE0, 2688), (0x18, 1088), (1 << 2, 832))


# Notes an older readelf does not name (binutils 2.40, Debian 12, wrote the
# kernel's layout file) and a newer one does (sid's binutils names 0x205)
UNNAMED = {0x205: "NT_X86_XSAVE_LAYOUT (x86 XSAVE Layout description)"}


def _named(desc):
    m = re.match(r"Unknown note type: \(0x([0-9a-f]+)\)$", desc)
    return UNNAMED.get(int(m.group(1), 16), desc) if m else desc


def readelf_rows(text):
    """(owner, size, description) of every note `readelf -n` lists."""
    return [(m.group(1), int(m.group(2), 16), _named(m.group(3).strip()))
            for m in map(NOTE_ROW.match, text.splitlines()) if m]


def gdb_xstate_size(xcr0):
    return next((size for mask, size in GDB_XSTATE_SIZES if xcr0 & mask), 512 + 64)


def our_core(cores):
    return os.path.join(cores("threads"), "core.%d" % FIRST_PID["threads"])


def test_notes_are_the_kernels_in_order_and_size(cores):
    need("readelf")
    with open(LAYOUT) as f:
        kernel = readelf_rows(f.read())
    out = subprocess.run(["readelf", "-n", our_core(cores)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    ours = readelf_rows(out)
    assert [(o, d) for o, _, d in ours] == [(o, d) for o, _, d in kernel]
    assert len(kernel) == 17                 # 4 threads, as the file says
    for (_, size, desc), (_, ksize, _) in zip(ours, kernel):
        if desc != XSTATE:
            # NT_FILE too: same program, same libraries, same names
            assert size == ksize, desc


def test_xstate_size_is_the_end_of_the_highest_component(cores):
    """Every thread's NT_X86_XSTATE ends where the last component that our
    NT_X86_XSAVE_LAYOUT declares ends, which is gdb's expected size."""
    with CoreFile(our_core(cores)) as core:
        notes = list(core.notes())
    (layout,) = [d for _, t, d in notes if t == NT_X86_XSAVE_LAYOUT]
    records = [struct.unpack_from("<4I", layout, i) for i in range(0, len(layout), 16)]
    end = max(offset + size for _, size, offset, _ in records)
    xstates = [d for _, t, d in notes if t == NT_X86_XSTATE]
    assert len(xstates) == 4
    for desc in xstates:
        xcr0, = struct.unpack_from("<Q", desc, XCR0_OFFSET)
        assert {t for t, *_ in records} == {b for b in range(2, 64) if xcr0 >> b & 1}
        assert len(desc) == end == gdb_xstate_size(xcr0)
    # this fixture's CPU: AVX and PKRU, PKRU at its standard offset
    assert sorted(records) == [(2, 256, 576, 0), (9, 8, 2688, 0)]
