"""notes.py, encoder by encoder: the bytes the kernel's fill_note_info()
writes, read back with the test suite's struct reader where it has one."""
import ctypes
import os

from criu_coredump import arch as arches
from criu_coredump import elf, model, notes
from criu_coredump.model import (MappedFile, Mm, Process, Vma, VMA_ANON_SHARED,
                                 VMA_AREA_AIORING, VMA_AREA_REGULAR,
                                 VMA_FILE_PRIVATE)

from ..helpers.corefile import nt_file

X86 = arches.by_name("x86_64")
P = 4096


def _proc(state=model.TASK_ALIVE, vmas=(), arg=(0, 0)):
    p = Process(pid=42, ppid=1, pgid=42, sid=42, arch="x86_64", comm="prog",
                task_state=state, exit_code=0, flags=0x400000)
    p.mm = Mm(vmas=list(vmas), auxv=[6, P, 25, 0x7ffd0000, 0, 0, 99, 99],
              arg_start=arg[0], arg_end=arg[1])
    return p


def test_core_notes_are_named_core_the_others_linux():
    assert notes.note_name(elf.NT_PRSTATUS) == "CORE"
    assert notes.note_name(elf.NT_FILE) == "CORE"
    assert notes.note_name(0x202) == "LINUX"      # NT_X86_XSTATE


def test_pending_mask_takes_each_siginfo_s_signal():
    sigs = [(10).to_bytes(4, "little") + bytes(124), (12).to_bytes(4, "little") + bytes(124)]
    assert notes.pending_mask(sigs) == (1 << 9) | (1 << 11)
    assert notes.pending_mask([(65).to_bytes(4, "little") + bytes(4)]) == 0
    assert notes.pending_mask([(10).to_bytes(4, "big") + bytes(4)], "big") == 1 << 9


def test_state_fields_as_fill_psinfo_derives_them():
    assert notes.state_fields(_proc(model.TASK_ALIVE)) == (0, b"R", 0)
    assert notes.state_fields(_proc(model.TASK_STOPPED)) == (3, b"T", 0)
    assert notes.state_fields(_proc(model.TASK_DEAD)) == (4, b"Z", 1)
    # (pr_cursig, NT_SIGINFO's si_signo, si_code): gcore's answers; mips's
    # SIGSTOP is 23, SI_USER 0, SI_KERNEL 0x80 (include/uapi/asm-generic/siginfo.h)
    assert notes.current_signal(_proc(model.TASK_STOPPED), X86) == (19, 19, 0)
    assert notes.current_signal(_proc(model.TASK_ALIVE), X86) == (0, 19, 0x80)
    mips = arches.by_name("mips")
    assert notes.current_signal(_proc(model.TASK_ALIVE), mips) == (0, 23, 0x80)


def test_auxv_stops_at_at_null_in_target_longs():
    raw = notes.auxv_bytes([6, P, 25, 0x7ffd0000, 0, 0, 99, 99], ctypes.c_uint32)
    assert list((ctypes.c_uint32 * 6).from_buffer_copy(raw)) == [6, P, 25, 0x7ffd0000, 0, 0]


def test_nt_file_lists_file_mappings_by_their_kernel_names():
    reg = MappedFile(id=3, path="/usr/lib/libc.so.6")
    gone = MappedFile(id=4, path="/tmp/x", deleted=True)
    memfd = MappedFile(id=5, path="buf", kind="memfd", shmem_id=1)
    files = {3: reg, 4: gone, 5: memfd}
    st = VMA_AREA_REGULAR | VMA_FILE_PRIVATE
    proc = _proc(vmas=[
        Vma(0x1000, 0x3000, 2 * P, 3, 5, 2, st),
        Vma(0x3000, 0x4000, 0, 4, 1, 2, st),
        Vma(0x4000, 0x5000, 0, 5, 3, 1, VMA_AREA_REGULAR | model.VMA_AREA_MEMFD | model.VMA_FILE_SHARED),
        Vma(0x5000, 0x6000, 0, 9, 3, 0x21, VMA_AREA_REGULAR | VMA_ANON_SHARED),
        Vma(0x6000, 0x7000, 0, 0, 3, 0x21, VMA_AREA_REGULAR | VMA_AREA_AIORING),
        Vma(0x7000, 0x8000, 0, 0, 3, 0x22, VMA_AREA_REGULAR),   # anonymous: none
        # private anonymous hugetlb memory (MAP_HUGETLB | MAP_HUGE_2MB), as
        # CRIU 4.2 keeps it: the kernel's core names its hugetlbfs file
        Vma(0x200000, 0x600000, 4 * P, 0, 3, 0x54040022, VMA_AREA_REGULAR | model.VMA_ANON_PRIVATE),
    ])
    entries = notes.file_note_entries(proc, files)
    raw = notes.file_note_bytes(entries, ctypes.c_uint64)
    count, triples, names = nt_file([(b"CORE", elf.NT_FILE, raw)])
    assert count == 6
    assert triples == [(0x1000, 0x3000, 2), (0x3000, 0x4000, 0), (0x4000, 0x5000, 0),
                       (0x5000, 0x6000, 0), (0x6000, 0x7000, 0), (0x200000, 0x600000, 4)]
    assert names.split(b"\0")[:6] == [b"/usr/lib/libc.so.6", b"/tmp/x (deleted)",
                                      b"/memfd:buf (deleted)", b"/dev/zero (deleted)",
                                      b"/[aio] (deleted)", b"/anon_hugepage (deleted)"]


def test_a_nul_in_a_name_is_escaped_not_written():
    assert notes.nt_file_name("/a\0b") == (b"/a\\x00b", True)
    assert notes.nt_file_name("/caf\u00e9") == ("/caf\u00e9".encode(), False)
    assert notes.nt_file_name("/x\udcff") == (b"/x\xff", False)   # a byte that was not UTF-8


class _Memory:
    def __init__(self, data, at):
        self.data, self.at = data, at

    def read(self, addr, n):
        off = addr - self.at
        return self.data[off:off + n].ljust(n, b"\0")


def test_psargs_is_the_command_line_nuls_as_spaces_at_most_79_bytes():
    argv = b"prog\0--flag\0" + b"x" * 100 + b"\0"
    proc = _proc(arg=(0x5000, 0x5000 + len(argv)))
    assert notes.psargs(proc, _Memory(argv, 0x5000)) == (b"prog --flag " + b"x" * 100)[:79]
    assert notes.psargs(_proc(), _Memory(b"", 0)) == b""


def test_build_notes_in_the_kernels_order():
    """NT_PRSTATUS of the first thread, then the process's notes, then its
    register sets; the next thread's NT_PRSTATUS and sets."""
    from pycriu.images import pb, pb2dict
    from ..helpers import synth
    ti = pb.thread_info_x86()
    pb2dict.dict2pb(synth.x86_thread_info(), ti)
    proc = _proc()
    for tid in (42, 43):
        proc.threads.append(model.Thread(tid=tid, arch="x86_64", regs=X86.decode(ti)))
    got = [t for _, t, _ in notes.build_notes(proc, _Memory(b"", 0), {}, X86)]
    first = got.index(elf.NT_PRSTATUS, 1)
    assert got[:5] == [elf.NT_PRSTATUS, elf.NT_PRPSINFO, elf.NT_SIGINFO,
                       elf.NT_AUXV, elf.NT_FILE]
    assert elf.NT_PRFPREG in got[5:first] and elf.NT_PRFPREG in got[first:]
    assert got[first] == elf.NT_PRSTATUS and got.count(elf.NT_PRSTATUS) == 2
    assert elf.NT_PRPSINFO not in got[first:]


def test_siginfo_puts_si_code_where_the_arch_s_siginfo_t_has_it():
    """si_signo first; si_code third (generic siginfo_t) or second (mips,
    whose siginfo_t swaps si_code and si_errno); the rest zero.  Each
    arch's layout is judged by its C library in test_siginfo_layout."""
    x86 = notes.siginfo_bytes(X86, 19, 0x80)
    assert len(x86) == 128
    assert x86[:12] == (19).to_bytes(4, "little") + bytes(4) + (0x80).to_bytes(4, "little")
    assert x86[12:] == bytes(116)
    mips = notes.siginfo_bytes(arches.by_name("mips"), 23, 0x80)
    assert mips[:12] == (23).to_bytes(4, "little") + (0x80).to_bytes(4, "little") + bytes(4)


def _prstatus_by_ctypes(arch, proc, th, cursig, fpvalid):
    """NT_PRSTATUS filled field by field in the arch's ctypes structure
    (what notes.prstatus packed before it used one struct.Struct)."""
    st = notes.prstatus_type(arch)()
    st.pr_info.si_signo = cursig
    st.pr_cursig = cursig
    word = (1 << (8 * arch.word_bytes)) - 1
    st.pr_sigpend = notes.pending_mask(th.pending, arch.endian) & word
    st.pr_sighold = th.blk_sigset & word
    st.pr_pid, st.pr_ppid, st.pr_pgrp, st.pr_sid = th.tid, proc.ppid, proc.pgid, proc.sid
    for i, name in enumerate(arch.gregs):
        st.pr_reg[i] = th.regs.gp.get(name, 0) & word
    st.pr_fpvalid = int(fpvalid)
    return bytes(st)


def test_prstatus_is_the_structure_of_every_arch_byte_for_byte():
    """Every field at its offset in the target's byte order and width, what
    lies between zero: for each arch, registers wider than its words, a
    blocked set with high bits, pending signals, the largest pids."""
    for arch in arches.ARCHES:
        gp = {name: (0x0123456789ABCDEF * (i + 3)) & ((1 << 64) - 1)
              for i, name in enumerate(arch.gregs[:-1])}  # the last one missing: 0
        sig = (10).to_bytes(4, arch.endian) + bytes(124)
        th = model.Thread(tid=(1 << 22) - 1, arch=arch.name,
                          regs=arches.Regs(gp=gp), blk_sigset=(1 << 63) | 0x5005,
                          pending=[sig])
        proc = _proc()
        proc.ppid, proc.pgid, proc.sid = 1 << 22, 7, 0
        for cursig, fpvalid in ((0, True), (arch.sigstop, False)):
            got = notes.prstatus(arch, proc, th, cursig, fpvalid)
            assert got == _prstatus_by_ctypes(arch, proc, th, cursig, fpvalid), arch.name


def test_note_record_header_name_and_padding():
    for endian in ("little", "big"):
        for name, desc in (("CORE", b"abc"), ("LINUX", b"abcd"), ("GNU", b"a" * 5)):
            got = elf.note_bytes(name, 0x202, desc, endian)
            hdr = elf.NHDR[endian](len(name) + 1, len(desc), 0x202)
            name_b = name.encode() + b"\0"
            want = (bytes(hdr) + name_b + bytes(-len(name_b) % 4)
                    + desc + bytes(-len(desc) % 4))
            assert got == want


def test_fname_is_the_comms_own_bytes():
    """A comm that is not UTF-8 (prctl(PR_SET_NAME) takes any bytes) goes
    into pr_fname as the kernel copies it, byte for byte."""
    proc = _proc()
    proc.comm = os.fsdecode(b"\xff\xfeprog-\xc3\xa9t\xc3")   # as images.py decodes it
    raw = notes.fill_prpsinfo(X86, proc, _Memory(b"", 0))
    assert notes.prpsinfo_type(X86).from_buffer_copy(raw).pr_fname == b"\xff\xfeprog-\xc3\xa9t\xc3"
