"""Round trip against the kernel itself.

CRIU cannot checkpoint on the test machines, but the kernel writes cores
there.  tests/progs/roundtrip.c (four threads: one holding known values in
ymm0..15 while it spins, one with a pending signal of its own, one parked,
main) is killed with SIGSEGV; tests/helpers/core2images.py turns the
kernel's core into a CRIU image directory; we convert that back.  Our core
must then be the kernel's, note for note:

- NT_PRSTATUS, NT_PRPSINFO, NT_AUXV, NT_FPREGSET (and NT_FILE) byte for
  byte, apart from NOT_CARRIED, the fields no CRIU image holds;
- NT_X86_XSTATE register by register: the kernel uses this CPU's own XSAVE
  offsets (read from its NT_X86_XSAVE_LAYOUT note, or CPUID), we use the
  standard ones;
- gdb giving the same answers, registers included.  On CPUs whose offsets
  are not the standard ones (AMD), gdb 13 cannot read the upper halves of
  ymm nor pkru from the kernel's core (<unavailable>); on CPUs with AMX
  tiles, whose state no CRIU image carries, the kernel's note is sized for
  them (11,008 bytes) and gdb 16-18 show none of its registers but the
  legacy area's.  From ours gdb reads the values the kernel's note holds
  at the CPU's offsets.
"""
import ctypes
import os
import re
import signal
import struct
import subprocess

import pytest

from .helpers import tools
from .helpers.tools import need, run_coredump
from .helpers.core2images import (CoreFile, core_to_images, prstatus_type,
                                  x86_xsave_layout_from_cpuid,
                                  x86_xsave_layout_from_note)
from .helpers.kernelcore import crash_when_ready
from .helpers.debuggers import XSTATE_WARNING, per_thread_values
from .helpers.kernelcore import cpu_has

pytestmark = pytest.mark.slow

PROG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "progs", "roundtrip.c")
NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_AUXV = 1, 2, 3, 6
NT_SIGINFO, NT_FILE = 0x53494749, 0x46494C45
NT_X86_XSTATE, NT_X86_XSAVE_LAYOUT = 0x202, 0x205
Prstatus = prstatus_type(ctypes.c_uint64, 27)

# Fields of NT_PRSTATUS that CRIU images cannot carry, and why.
NOT_CARRIED = {
    "pr_info.si_signo": "the fatal signal: a checkpoint has none",
    "pr_cursig": "the fatal signal: a checkpoint has none",
    "pr_utime": "CPU time: not in CRIU images",
    "pr_stime": "CPU time: not in CRIU images",
    "pr_cutime": "children's CPU time: not in CRIU images",
    "pr_cstime": "children's CPU time: not in CRIU images",
}
# NT_SIGINFO as a whole is the fatal signal's siginfo: not carried either;
# ours is gcore's for a running task, the ptrace stop (SIGSTOP, SI_KERNEL).

FX_SW_RESERVED, XCR0_OFFSET, XSTATE_BV_OFFSET = 464, 464, 512
# XSAVE components CRIU images hold (core-x86.proto user_x86_xsave_entry):
# AVX, MPX (2), AVX-512 (3), PKRU.  Others a CPU may have (AMX tiles) are
# neither in the images nor, therefore, in our notes.
CRIU_COMPONENTS = (2, 3, 4, 5, 6, 7, 9)
CRIU_XCR0 = 0x3 | sum(1 << c for c in CRIU_COMPONENTS)


def ymm_value(reg):
    """What roundtrip.c puts in ymm<reg>, as a 256-bit integer."""
    raw = bytes((17 * reg + 7 * b + 1) & 0xFF for b in range(32))
    return int.from_bytes(raw, "little")


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory, plain_core_pattern):  # noqa: F811
    need("gcc")
    if not cpu_has("avx"):
        pytest.fail("this CPU has no AVX: the round trip needs ymm registers")
    work = tmp_path_factory.mktemp("roundtrip")
    exe = work / "rtprog"
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-mavx", "-o", str(exe), PROG],
                   check=True)
    kernel, pid = crash_when_ready(
        exe, work, lambda calls: len(calls) == 4 and calls.count("34") == 3)
    img, out = work / "images", work / "out"
    out.mkdir()
    core_to_images(str(kernel), str(img), exe=str(exe))
    run_coredump("-i", img, "-o", out, "-q", check=0)
    return {"kernel": str(kernel), "ours": str(out / ("core.%d" % pid)),
            "pid": pid, "exe": str(exe)}


def read_notes(path):
    """[(name, type, desc)] and {tid: {type: desc}} of a core."""
    with CoreFile(path) as core:
        notes = list(core.notes())
    threads, cur = {}, None
    for _, ntype, desc in notes:
        if ntype == NT_PRSTATUS:
            cur = threads.setdefault(Prstatus.from_buffer_copy(desc).pr_pid, {})
        if cur is not None and ntype in (NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE):
            cur[ntype] = desc
    return notes, threads


@pytest.fixture(scope="module")
def both(roundtrip):
    return read_notes(roundtrip["kernel"]), read_notes(roundtrip["ours"])


def note(notes, ntype):
    (desc,) = [d for _, t, d in notes if t == ntype]
    return desc


def test_same_notes_in_the_same_order(both):
    (kernel, _), (ours, _) = both
    assert [(n, t) for n, t, _ in ours] == [(n, t) for n, t, _ in kernel]
    assert sum(t == NT_PRSTATUS for _, t, _ in kernel) == 4
    for (_, t, d), (_, _, kd) in zip(ours, kernel):
        # XSAVE sizes follow the layout: see test_xstate_register_by_register
        if t not in (NT_X86_XSTATE, NT_X86_XSAVE_LAYOUT):
            assert len(d) == len(kd), hex(t)


def _without_not_carried(desc):
    st = Prstatus.from_buffer_copy(desc)
    st.pr_info.si_signo = st.pr_cursig = 0
    for name in ("pr_utime", "pr_stime", "pr_cutime", "pr_cstime"):
        setattr(st, name, type(getattr(st, name))())
    return bytes(st)


def test_prstatus_is_the_kernels_but_for_what_images_cannot_carry(both, roundtrip):
    (_, kthreads), (_, threads) = both
    assert sorted(threads) == sorted(kthreads)
    assert sorted(NOT_CARRIED) == ["pr_cstime", "pr_cursig", "pr_cutime",
                                   "pr_info.si_signo", "pr_stime", "pr_utime"]
    for tid, notes in threads.items():
        ours, kernel = notes[NT_PRSTATUS], kthreads[tid][NT_PRSTATUS]
        assert _without_not_carried(ours) == _without_not_carried(kernel), tid
        assert Prstatus.from_buffer_copy(kernel).pr_cursig == signal.SIGSEGV
        assert Prstatus.from_buffer_copy(ours).pr_cursig == 0
    pending = {tid: Prstatus.from_buffer_copy(n[NT_PRSTATUS]).pr_sigpend
               for tid, n in threads.items()}
    usr1, usr2 = 1 << (signal.SIGUSR1 - 1), 1 << (signal.SIGUSR2 - 1)
    # the signal thread's own SIGUSR1; the process-wide SIGUSR2 is, as in
    # the kernel's core, in no thread's pr_sigpend
    assert sorted(pending.values()) == [0, 0, 0, usr1]
    assert not any(p & usr2 for p in pending.values())


@pytest.mark.parametrize("ntype", [NT_PRPSINFO, NT_AUXV, NT_FILE])
def test_process_notes_are_the_kernels(both, ntype):
    (kernel, _), (ours, _) = both
    assert note(ours, ntype) == note(kernel, ntype)


def test_fpregset_is_the_kernels(both):
    (_, kthreads), (_, threads) = both
    for tid, notes in threads.items():
        assert notes[NT_FPREGSET] == kthreads[tid][NT_FPREGSET], tid


def test_siginfo_is_the_fatal_signal_only_in_the_kernels(both):
    """The kernel's siginfo is the SIGSEGV that killed the process; ours, of
    a process frozen while it ran, is what gcore writes for one: SIGSTOP,
    si_errno 0, si_code SI_KERNEL (128), nothing else
    (test_notes_readers.test_signal_notes_of_a_running_task_are_gcores)."""
    (kernel, _), (ours, _) = both
    assert struct.unpack_from("<i", note(kernel, NT_SIGINFO)) == (signal.SIGSEGV,)
    assert note(ours, NT_SIGINFO) == struct.pack("<iii", signal.SIGSTOP, 0, 128).ljust(128, b"\0")


def layout(notes):
    """{component: (offset, size)} a core's NT_X86_XSAVE_LAYOUT declares,
    or this CPU's (CPUID) for a kernel that writes no such note."""
    descs = [d for _, t, d in notes if t == NT_X86_XSAVE_LAYOUT]
    lay = x86_xsave_layout_from_note(descs[0]) if descs else x86_xsave_layout_from_cpuid()
    return {c: v for c, v in lay.items() if c in CRIU_COMPONENTS}


def xstate_registers(desc, lay):
    """Every register of an NT_X86_XSTATE, by name, as bytes."""
    xcr0, = struct.unpack_from("<Q", desc, XCR0_OFFSET)
    xstate_bv, = struct.unpack_from("<Q", desc, XSTATE_BV_OFFSET)
    regs = {"legacy": desc[:FX_SW_RESERVED], "xcr0": xcr0 & CRIU_XCR0,
            "xstate_bv": xstate_bv & CRIU_XCR0}
    for comp, (off, size) in lay.items():
        if xcr0 >> comp & 1:
            regs["component %d" % comp] = desc[off:off + size]
    return regs


def ymm_from_xstate(desc, lay):
    """ymm0..15 as integers: xmm from the legacy area, upper halves from
    the AVX component (2) at the layout's offset."""
    off = lay[2][0]
    return [int.from_bytes(desc[160 + 16 * i:176 + 16 * i], "little")
            | int.from_bytes(desc[off + 16 * i:off + 16 * i + 16], "little") << 128
            for i in range(16)]


def test_xstate_register_by_register(both):
    (kernel, kthreads), (ours, threads) = both
    klay, lay = layout(kernel), layout(ours)
    assert sorted(klay) == sorted(lay)
    assert {c: s for c, (_, s) in klay.items()} == {c: s for c, (_, s) in lay.items()}
    holding = []
    for tid, notes in threads.items():
        kdesc, desc = kthreads[tid][NT_X86_XSTATE], notes[NT_X86_XSTATE]
        assert xstate_registers(desc, lay) == xstate_registers(kdesc, klay), tid
        assert len(desc) == max(off + size for off, size in lay.values())
        if ymm_from_xstate(desc, lay) == [ymm_value(r) for r in range(16)]:
            holding.append(tid)
    assert len(holding) == 1           # the vector thread


GDB_DROP = ("[New LWP", "Program terminated with signal", "warning: ")
# registers gdb shows from the XSAVE note only (not from its legacy area)
XSAVE_ONLY_REGISTER = re.compile(r"^(k[0-7]|pkru) ")


def gdb(roundtrip, core, *commands):
    """gdb's answers on `core`, and whether it warned about the size of
    its XSAVE note."""
    out = tools.gdb(core, "set debuginfod enabled off", *commands,
                    exe=roundtrip["exe"])
    # gdb warns, mid-line, about the size of the kernel's XSAVE note when
    # this CPU's layout is not the standard one, or holds components CRIU
    # images do not carry (AMX); never about ours
    out, warned = XSTATE_WARNING.subn("", out)
    assert not (warned and core == roundtrip["ours"]), out
    lines = [l for l in out.splitlines() if l.strip() and not l.startswith(GDB_DROP)]
    return lines, bool(warned)


def beyond_criu(both):
    """Whether the kernel's XSAVE notes hold components no CRIU image
    carries (AMX tiles), past the end of those that are."""
    (kernel, kthreads), _ = both
    end = max(off + size for off, size in layout(kernel).values())
    return any(len(n[NT_X86_XSTATE]) > end for n in kthreads.values())


def test_gdb_gives_the_same_answers(roundtrip, both):
    cmds = ["info threads", "thread apply all bt", "thread apply all info registers",
            "thread apply all info registers fs_base gs_base orig_rax",
            "thread apply all p $mxcsr", "info auxv", "info sharedlibrary",
            "p/x ymm_values[5]", "p ready"]
    cmds += ["thread apply all p/x $xmm%d" % i for i in range(16)]
    ours, _ = gdb(roundtrip, roundtrip["ours"], *cmds)
    theirs, _ = gdb(roundtrip, roundtrip["kernel"], *cmds)
    if beyond_criu(both):
        # gdb 16-18 guess the layout of a core's XSAVE note from its size:
        # the kernel's, sized for AMX tiles too, they cannot place, and
        # show none of its registers (the AVX-512 masks k0-k7, pkru) but
        # those of the legacy area; ours they read
        # (test_xstate_register_by_register: the kernel's values)
        shown = {l.split()[0] for l in theirs}
        ours = [l for l in ours
                if not (XSAVE_ONLY_REGISTER.match(l) and l.split()[0] not in shown)]
    assert ours == theirs
    assert any(l.startswith("#3 ") for l in ours)
    assert any(l.startswith("fs_base ") for l in ours)


def test_gdb_reads_ymm_and_pkru_the_kernel_saved(roundtrip, both):
    (kernel, kthreads), _ = both
    klay = layout(kernel)
    # -s: a register gdb cannot show on the kernel's core (beyond_criu) is
    # left out of its answers, not the end of them; ours must all be there
    cmds = ["thread apply all -s p/x $ymm%d.v2_int128" % i for i in range(16)]
    if 9 in klay:
        cmds.append("thread apply all -s p/x $pkru")
    ours = per_thread_values("\n".join(gdb(roundtrip, roundtrip["ours"], *cmds)[0]))
    theirs = per_thread_values("\n".join(gdb(roundtrip, roundtrip["kernel"], *cmds)[0]))
    assert sorted(ours) == sorted(kthreads)
    unreadable = beyond_criu(both)
    for tid, vals in ours.items():
        kdesc = kthreads[tid][NT_X86_XSTATE]
        want = ["{0x%x, 0x%x}" % (v & (1 << 128) - 1, v >> 128)
                for v in ymm_from_xstate(kdesc, klay)]
        if 9 in klay:
            off = klay[9][0]
            want.append("0x%x" % struct.unpack_from("<I", kdesc, off))
        assert vals == want, tid
        if unreadable:
            # gdb has no such register on that core: `$ymmN.v2_int128` is
            # an error (-s leaves it out), `$pkru` a convenience variable
            # never set, "void"
            shown = [v for v in theirs.get(tid, []) if v != "void"]
            assert shown in ([], vals), tid
            continue
        for mine, kernels in zip(vals, theirs[tid]):
            assert kernels == mine or "<unavailable>" in kernels
