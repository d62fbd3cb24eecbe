"""Shadow stacks (x86 CET): a thread whose shadow stack is on gets the
kernel's NT_X86_SHSTK note, its shadow stack pointer, which gdb 17 and
later show as $pl3_ssp; a thread whose shadow stack is off gets none.

On a CPU with user shadow stacks, CRIU 4.0+ saves for every thread
user_x86_xsave_entry.cet: the features ARCH_SHSTK_STATUS reports and the
pointer ptrace's NT_X86_SHSTK gives (zeros when the shadow stack is off).
This machine's CPU has none, so no real checkpoint holds one: the threads
fixture's images are given that entry, encoded by protobuf from our own
declaration (Debian 12's pycriu 3.17 has none; CRIU 4.2.1's field numbers).
What the kernel writes is arch/x86/kernel/fpu/regset.c's ssp_active() and
ssp_get(): 8 bytes, for a task with ARCH_SHSTK_SHSTK, after NT_X86_XSTATE
(x86_64_regsets' order)."""
import os
import shutil
import struct

import pytest

from criu_coredump.arch import x86_64

from .helpers.corefile import PT_LOAD, read_core
from .helpers.debuggers import gdb_on_fixture, per_thread_values
from .helpers.imgedit import edit_image
from .helpers.tools import gdb_major, run_coredump

pytestmark = pytest.mark.slow

NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE, NT_X86_SHSTK = 1, 2, 0x202, 0x204
PID = 13466
ARCH_SHSTK_SHSTK, ARCH_SHSTK_WRSS = 1, 2
# tid -> (features, ssp) as CRIU saves them; 13469's shadow stack is off
CET = {13466: (ARCH_SHSTK_SHSTK, 0x7f5c1a3ffff8),
       13468: (ARCH_SHSTK_SHSTK | ARCH_SHSTK_WRSS, 0x7f5c19bfffe0),
       13469: (0, 0),
       13471: (ARCH_SHSTK_SHSTK, 0x7f5c18bfffd0)}


def give_cet(images, tid, features, ssp):
    cet = x86_64.CetXsave()
    cet.cet.cet, cet.cet.ssp = features, ssp

    def edit(msgs):
        msgs[0].thread_info.fpregs.xsave.MergeFromString(cet.SerializeToString())
    edit_image(os.path.join(images, "core-%d.img" % tid), edit)


@pytest.fixture(scope="module")
def shstk(fixtures_dir, cores, tmp_path_factory):
    """(fixture, our core of the images with shadow stacks, our core of the
    images as they are)."""
    fx = fixtures_dir("threads")
    work = tmp_path_factory.mktemp("shstk")
    images = str(work / "images")
    shutil.copytree(os.path.join(fx, "images"), images)
    for tid, (features, ssp) in CET.items():
        give_cet(images, tid, features, ssp)
    out = work / "out"
    out.mkdir()
    run_coredump("-i", images, "-o", out, "--root", os.path.join(fx, "root"),
                 "-q", check=0)
    return fx, str(out / ("core.%d" % PID)), os.path.join(cores("threads"), "core.%d" % PID)


def thread_notes(notes):
    """[(tid, [(type, desc) of its register notes])] in note order."""
    out = []
    for name, ntype, desc in notes:
        if ntype == NT_PRSTATUS:
            tid, = struct.unpack_from("<i", desc, 32)  # pr_pid
            out.append((tid, []))
        if out and ntype in (NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE,
                             NT_X86_SHSTK):
            out[-1][1].append((ntype, desc))
    return out


def test_the_kernels_shstk_note_for_each_thread_with_a_shadow_stack(shstk):
    _, core, plain = shstk
    _, notes, _ = read_core(core)
    got = thread_notes(notes)
    assert sorted(tid for tid, _ in got) == sorted(CET)
    for tid, regs in got:
        features, ssp = CET[tid]
        types = [t for t, _ in regs]
        if features & ARCH_SHSTK_SHSTK:
            assert types == [NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE, NT_X86_SHSTK], tid
            assert regs[-1][1] == struct.pack("<Q", ssp), tid
        else:
            assert types == [NT_PRSTATUS, NT_FPREGSET, NT_X86_XSTATE], tid
    assert [n for n in notes if n[1] == NT_X86_SHSTK][0][0] == b"LINUX"
    # nothing else changes: the same notes and memory as from the images
    # without shadow stacks, the new notes taken out
    plain_phdrs, plain_notes, plain_data = read_core(plain)
    assert [n for n in notes if n[1] != NT_X86_SHSTK] == plain_notes
    phdrs, _, data = read_core(core)
    assert memory(phdrs, data) == memory(plain_phdrs, plain_data)


def memory(phdrs, data):
    return [(p["vaddr"], p["memsz"], data[p["offset"]:p["offset"] + p["filesz"]])
            for p in phdrs if p["type"] == PT_LOAD]


def test_gdb_shows_the_shadow_stack_pointer_and_the_same_stacks(shstk):
    """$pl3_ssp came after gdb 16 (16.3 in Debian 13 prints void for it on
    this core, 18.1 in sid the pointer; expected from 17 on, which no
    stage here runs); gdb 13 and 16 ignore the note.
    Every gdb gives the same backtraces and registers with it as without."""
    fx, core, plain = shstk
    out = gdb_on_fixture(fx, core, "thread apply all p/x $pl3_ssp")
    got = {tid: vals[0] for tid, vals in per_thread_values(out).items()}
    if gdb_major() >= 17:
        want = {tid: "0x%x" % ssp if f & ARCH_SHSTK_SHSTK else "<unavailable>"
                for tid, (f, ssp) in CET.items()}
    else:
        want = {tid: "void" for tid in CET}
    assert got == want, out
    same = ["thread apply all bt", "thread apply all info registers rip rsp rax"]
    assert gdb_on_fixture(fx, core, *same) == gdb_on_fixture(fx, plain, *same)
