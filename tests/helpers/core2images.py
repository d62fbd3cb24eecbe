"""Turn a core file written by the Linux kernel into a CRIU image directory.

Why this exists: criu-coredump converts CRIU images into an ELF core.  The
best oracle for "is our core right?" is the core the kernel itself writes for
the same process.  CRIU cannot dump a process that has already crashed, so
this helper goes the other way: it reads the kernel's core and writes the
images CRIU would have written (as far as a core can tell), so that the tool
can convert them back and the two cores can be compared note by note and page
by page.

It declares its own ELF structures and reads notes without importing
criu_coredump on purpose: an oracle that shared the tool's layouts would
carry the same mistakes into both sides of the comparison.

Only what a core file contains can be reproduced; everything else is filled
with the neutral value a real dump would most likely have.  What a core
cannot tell, and so is NOT like a real CRIU dump:

- one VMA per PT_LOAD, all MAP_PRIVATE (a core does not record MAP_SHARED);
  memfd and "(deleted)" mappings (including shared anonymous memory, which
  the kernel names "/dev/zero (deleted)") become private anonymous VMAs;
- no VMA_AREA_HEAP and mm_start_brk/mm_brk 0 (the brk area is unknown);
- [vvar] and [vvar_vclock] stay two VMAs (CRIU 4.2 writes one), and every
  PT_LOAD with contents goes to the pagemap, vvar and vsyscall included;
- clear_tid_addr, futex_rla, rseq, sigactions, rlimits, timers, sas,
  capabilities and per-thread comm are not in a core: 0, absent or the
  process name; tc.flags is pr_flag (it has PF_DUMPCORE|PF_SIGNALED);
- pending signals are per thread only (pr_sigpend), each as a bare SI_USER
  siginfo; the shared queue (signals_s) is left empty;
- fs-<pid>.img points cwd and root at "/", which is added to files.img.

With ``as_criu_saves=True`` the registers are those CRIU would save: a
thread stopped in an interrupted system call gets compel's rewind for
restore (``compel_rewind``); by default they are the kernel's.

Usage::

    from tests.helpers.core2images import core_to_images
    core_to_images("core", "imgdir", task_state=1)

    python3 -m tests.helpers.core2images CORE OUTDIR [--exe PATH]

The ELF and note layouts are decoded with ctypes; no ELF library is used.
Per-architecture knowledge lives in ``MACHINES`` (one ``MachineSpec`` per
``e_machine``): adding an architecture means adding its ``elf_gregset_t``
size and a function that turns its register notes into CRIU's thread_info.
"""

import argparse
import base64
import ctypes
import functools
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from pycriu import images
from pycriu.images import pb

from . import rawcore

LE = ctypes.LittleEndianStructure

# --------------------------------------------------------------------------
# ELF constants
# --------------------------------------------------------------------------

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_CORE = 4
PT_LOAD, PT_NOTE, PT_PHDR = 1, 4, 6
PF_X, PF_W, PF_R = 1, 2, 4

EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183
EM_MIPS, EM_PPC64, EM_S390, EM_RISCV = 8, 21, 22, 243
EM_LOONGARCH = 258

NT_PRSTATUS = 1
NT_FPREGSET = 2
NT_PRXFPREG = 0x46E62B7F
NT_PRPSINFO = 3
NT_AUXV = 6
NT_386_TLS = 0x200
NT_X86_XSTATE = 0x202
NT_X86_XSAVE_LAYOUT = 0x205
NT_PPC_VMX = 0x100
NT_PPC_VSX = 0x102
NT_S390_SYSTEM_CALL = 0x307
NT_S390_VXRS_LOW = 0x309
NT_S390_VXRS_HIGH = 0x30A
NT_ARM_VFP = 0x400
NT_ARM_TLS = 0x401
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45

# Notes that describe the whole process; every other note after an
# NT_PRSTATUS belongs to that thread (this is how the kernel orders them).
PROCESS_NOTES = (NT_PRPSINFO, NT_SIGINFO, NT_AUXV, NT_FILE, NT_X86_XSAVE_LAYOUT)

AT_NULL = 0
AT_PHDR, AT_PHNUM = 3, 5
AT_ENTRY = 9
AT_SYSINFO_EHDR = 33
AT_EXECFN = 31

# --------------------------------------------------------------------------
# CRIU constants (criu/include/image.h, images/*.proto)
# --------------------------------------------------------------------------

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_GROWSDOWN = 0x2, 0x20, 0x100

VMA_AREA_REGULAR = 1 << 0
VMA_AREA_STACK = 1 << 1
VMA_AREA_VSYSCALL = 1 << 2
VMA_AREA_VDSO = 1 << 3
VMA_FILE_PRIVATE = 1 << 6
VMA_ANON_PRIVATE = 1 << 9
VMA_AREA_VVAR = 1 << 12

PE_PRESENT = 1 << 2

TASK_ALIVE, TASK_STOPPED = 1, 3

PAGES_ID = 1
# Namespace/object ids as a real dump has them (copied from a CRIU 4.2 dump).
ROOT_IDS = {
    "vm_id": 1, "files_id": 1, "fs_id": 1, "sighand_id": 1,
    "pid_ns_id": 1, "net_ns_id": 2, "ipc_ns_id": 3, "uts_ns_id": 4,
    "mnt_ns_id": 6, "user_ns_id": 7, "cgroup_ns_id": 8, "time_ns_id": 5,
}
SIGINFO_SIZE = 128
SI_USER = 0
# Kernel thread-info pieces CRIU reads but a core does not carry.
EMPTY_CAPS = [0, 0]


# --------------------------------------------------------------------------
# ELF structures
# --------------------------------------------------------------------------

def _elf_structures(base):
    """The ELF header structures in one byte order (`base`)."""
    class Elf64Ehdr(base):
        _fields_ = [("e_ident", ctypes.c_uint8 * 16), ("e_type", ctypes.c_uint16),
                    ("e_machine", ctypes.c_uint16), ("e_version", ctypes.c_uint32),
                    ("e_entry", ctypes.c_uint64), ("e_phoff", ctypes.c_uint64),
                    ("e_shoff", ctypes.c_uint64), ("e_flags", ctypes.c_uint32),
                    ("e_ehsize", ctypes.c_uint16), ("e_phentsize", ctypes.c_uint16),
                    ("e_phnum", ctypes.c_uint16), ("e_shentsize", ctypes.c_uint16),
                    ("e_shnum", ctypes.c_uint16), ("e_shstrndx", ctypes.c_uint16)]


    class Elf32Ehdr(base):
        _fields_ = [("e_ident", ctypes.c_uint8 * 16), ("e_type", ctypes.c_uint16),
                    ("e_machine", ctypes.c_uint16), ("e_version", ctypes.c_uint32),
                    ("e_entry", ctypes.c_uint32), ("e_phoff", ctypes.c_uint32),
                    ("e_shoff", ctypes.c_uint32), ("e_flags", ctypes.c_uint32),
                    ("e_ehsize", ctypes.c_uint16), ("e_phentsize", ctypes.c_uint16),
                    ("e_phnum", ctypes.c_uint16), ("e_shentsize", ctypes.c_uint16),
                    ("e_shnum", ctypes.c_uint16), ("e_shstrndx", ctypes.c_uint16)]


    class Elf64Phdr(base):
        _fields_ = [("p_type", ctypes.c_uint32), ("p_flags", ctypes.c_uint32),
                    ("p_offset", ctypes.c_uint64), ("p_vaddr", ctypes.c_uint64),
                    ("p_paddr", ctypes.c_uint64), ("p_filesz", ctypes.c_uint64),
                    ("p_memsz", ctypes.c_uint64), ("p_align", ctypes.c_uint64)]


    class Elf32Phdr(base):
        _fields_ = [("p_type", ctypes.c_uint32), ("p_offset", ctypes.c_uint32),
                    ("p_vaddr", ctypes.c_uint32), ("p_paddr", ctypes.c_uint32),
                    ("p_filesz", ctypes.c_uint32), ("p_memsz", ctypes.c_uint32),
                    ("p_flags", ctypes.c_uint32), ("p_align", ctypes.c_uint32)]


    class Nhdr(base):
        _fields_ = [("n_namesz", ctypes.c_uint32), ("n_descsz", ctypes.c_uint32),
                    ("n_type", ctypes.c_uint32)]

    return Elf64Ehdr, Elf64Phdr, Elf32Ehdr, Elf32Phdr, Nhdr


BE = ctypes.BigEndianStructure
Elf64Ehdr, Elf64Phdr, Elf32Ehdr, Elf32Phdr, Nhdr = _elf_structures(LE)
_BE_STRUCTS = _elf_structures(BE)

# (class, data) -> (Ehdr, Phdr, Nhdr, the target's `long`, structure base)
ELF_CLASSES = {
    (ELFCLASS64, ELFDATA2LSB): (Elf64Ehdr, Elf64Phdr, Nhdr, ctypes.c_uint64, LE),
    (ELFCLASS32, ELFDATA2LSB): (Elf32Ehdr, Elf32Phdr, Nhdr, ctypes.c_uint32, LE),
    (ELFCLASS64, ELFDATA2MSB): (_BE_STRUCTS[0], _BE_STRUCTS[1], _BE_STRUCTS[4],
                                ctypes.c_uint64.__ctype_be__, BE),
}


def decode(struct_type, data, offset=0):
    """Decode a ctypes structure, refusing short notes instead of misreading them."""
    need = ctypes.sizeof(struct_type)
    if len(data) - offset < need:
        raise ValueError("%s needs %d bytes, note has %d"
                         % (struct_type.__name__, need, len(data) - offset))
    return struct_type.from_buffer_copy(data, offset)


# --------------------------------------------------------------------------
# Core-note structures (include/uapi/linux/elfcore.h), sized per target
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def prstatus_type(word, nregs, base=LE):
    """struct elf_prstatus for a target whose 'long' is `word`."""
    class ElfSiginfo(base):
        _fields_ = [("si_signo", ctypes.c_int32), ("si_code", ctypes.c_int32),
                    ("si_errno", ctypes.c_int32)]

    class Timeval(base):
        _fields_ = [("tv_sec", word), ("tv_usec", word)]

    class ElfPrstatus(base):
        _fields_ = [("pr_info", ElfSiginfo), ("pr_cursig", ctypes.c_int16),
                    ("pr_sigpend", word), ("pr_sighold", word),
                    ("pr_pid", ctypes.c_int32), ("pr_ppid", ctypes.c_int32),
                    ("pr_pgrp", ctypes.c_int32), ("pr_sid", ctypes.c_int32),
                    ("pr_utime", Timeval), ("pr_stime", Timeval),
                    ("pr_cutime", Timeval), ("pr_cstime", Timeval),
                    ("pr_reg", word * nregs), ("pr_fpvalid", ctypes.c_int32)]
    return ElfPrstatus


@functools.lru_cache(maxsize=None)
def prpsinfo_type(word, uid_t, base=LE):
    """struct elf_prpsinfo; uid_t is 16 bits on i386/arm, 32 bits elsewhere."""
    class ElfPrpsinfo(base):
        _fields_ = [("pr_state", ctypes.c_int8), ("pr_sname", ctypes.c_char),
                    ("pr_zomb", ctypes.c_int8), ("pr_nice", ctypes.c_int8),
                    ("pr_flag", word), ("pr_uid", uid_t), ("pr_gid", uid_t),
                    ("pr_pid", ctypes.c_int32), ("pr_ppid", ctypes.c_int32),
                    ("pr_pgrp", ctypes.c_int32), ("pr_sid", ctypes.c_int32),
                    ("pr_fname", ctypes.c_char * 16),
                    ("pr_psargs", ctypes.c_char * 80)]
    return ElfPrpsinfo


# --------------------------------------------------------------------------
# Reading the core
# --------------------------------------------------------------------------

@dataclass
class Segment:
    """One PT_LOAD: a VMA of the dumped process."""
    vaddr: int
    memsz: int
    filesz: int
    offset: int
    flags: int

    @property
    def end(self):
        return self.vaddr + self.memsz

    def contains(self, addr):
        return self.vaddr <= addr < self.end


@dataclass
class FileMapping:
    """One NT_FILE entry: [start, end) maps `path` from page `page_ofs`."""
    start: int
    end: int
    page_ofs: int
    path: str


@dataclass
class ThreadNotes:
    """NT_PRSTATUS of one thread plus the register notes that follow it."""
    prstatus: object
    notes: Dict[int, bytes] = field(default_factory=dict)

    @property
    def tid(self):
        return self.prstatus.pr_pid

    @property
    def regs(self):
        return list(self.prstatus.pr_reg)


class CoreFile:
    """A kernel-written ELF core: its program headers, notes and memory."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "rb")
        self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._read_headers()

    def close(self):
        self.data.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_headers(self):
        ident = bytes(self.data[:16])
        if ident[:4] != ELFMAG:
            raise ValueError("%s: not an ELF file" % self.path)
        if (ident[4], ident[5]) not in ELF_CLASSES:
            raise ValueError("%s: unknown ELF class %d / data encoding %d"
                             % (self.path, ident[4], ident[5]))
        ehdr_t, self.phdr_t, self.nhdr_t, self.word, self.base = \
            ELF_CLASSES[(ident[4], ident[5])]
        self.endian = "big" if ident[5] == ELFDATA2MSB else "little"
        self.ehdr = decode(ehdr_t, self.data)
        if self.ehdr.e_type != ET_CORE:
            raise ValueError("%s: not a core file (e_type %d)" % (self.path, self.ehdr.e_type))
        self.machine = self.ehdr.e_machine
        self.phdrs = [decode(self.phdr_t, self.data,
                             self.ehdr.e_phoff + i * self.ehdr.e_phentsize)
                      for i in range(self.ehdr.e_phnum)]
        self.segments = [Segment(p.p_vaddr, p.p_memsz, p.p_filesz, p.p_offset, p.p_flags)
                         for p in self.phdrs if p.p_type == PT_LOAD]

    def notes(self):
        """Yield (name, type, desc) of every note, in file order."""
        for ph in self.phdrs:
            if ph.p_type != PT_NOTE:
                continue
            pos, end = ph.p_offset, ph.p_offset + ph.p_filesz
            while pos + ctypes.sizeof(Nhdr) <= end:
                nh = decode(self.nhdr_t, self.data, pos)
                pos += ctypes.sizeof(self.nhdr_t)
                name = bytes(self.data[pos:pos + nh.n_namesz]).rstrip(b"\0")
                pos += _align4(nh.n_namesz)
                desc = bytes(self.data[pos:pos + nh.n_descsz])
                pos += _align4(nh.n_descsz)
                yield name, nh.n_type, desc

    def segment_at(self, addr):
        for seg in self.segments:
            if seg.contains(addr):
                return seg
        return None

    def read(self, addr, size):
        """Bytes of the dumped memory at addr, or None if not in the core."""
        seg = self.segment_at(addr)
        if seg is None or addr + size > seg.vaddr + seg.filesz:
            return None
        off = seg.offset + addr - seg.vaddr
        return bytes(self.data[off:off + size])

    def dumped(self, seg):
        """The dumped (p_filesz) part of a segment."""
        return self.data[seg.offset:seg.offset + seg.filesz]


def _align4(n):
    return (n + 3) & ~3


# --------------------------------------------------------------------------
# Note decoding
# --------------------------------------------------------------------------

@dataclass
class ProcessNotes:
    """Everything the notes say, grouped as process-wide and per thread."""
    prpsinfo: object
    auxv: List[int]
    files: List[FileMapping]
    page_size: int
    threads: List[ThreadNotes]
    extra: Dict[int, bytes]

    def auxv_get(self, key, default=None):
        for i in range(0, len(self.auxv) - 1, 2):
            if self.auxv[i] == key:
                return self.auxv[i + 1]
        return default


def read_notes(core, spec):
    """Split the note stream into process notes and per-thread notes."""
    prstatus_t = prstatus_type(core.word, spec.nregs, core.base)
    process, threads = {}, []
    for _name, ntype, desc in core.notes():
        if ntype == NT_PRSTATUS:
            threads.append(ThreadNotes(decode(prstatus_t, desc)))
        elif ntype in PROCESS_NOTES:
            process.setdefault(ntype, desc)
        elif threads:
            threads[-1].notes.setdefault(ntype, desc)
    if NT_PRPSINFO not in process:
        raise ValueError("%s: no NT_PRPSINFO note" % core.path)
    if not threads:
        raise ValueError("%s: no NT_PRSTATUS note" % core.path)
    page_size, files = parse_nt_file(process.get(NT_FILE, b""), core.word)
    return ProcessNotes(
        prpsinfo=decode(prpsinfo_type(core.word, spec.uid_t, core.base),
                        process[NT_PRPSINFO]),
        auxv=parse_auxv(process.get(NT_AUXV, b""), core.word),
        files=files,
        page_size=page_size or 4096,
        threads=threads,
        extra=process,
    )


def _words(data, word):
    n = len(data) // ctypes.sizeof(word)
    return list((word * n).from_buffer_copy(data[:n * ctypes.sizeof(word)]))


def parse_auxv(desc, word):
    """NT_AUXV as a flat [type, value, ...] list without the AT_NULL pair.

    CRIU's mm_saved_auxv stops before AT_NULL (checked on a CRIU 4.2 dump),
    so the terminator and anything after it are dropped.
    """
    vals = _words(desc, word)
    for i in range(0, len(vals) - 1, 2):
        if vals[i] == AT_NULL:
            return vals[:i]
    return vals[:len(vals) & ~1]


def parse_nt_file(desc, word):
    """NT_FILE: count, page size, count x (start, end, page offset), names."""
    if not desc:
        return 0, []
    wsize = ctypes.sizeof(word)
    count, page_size = _words(desc[:2 * wsize], word)
    table = _words(desc[2 * wsize:(2 + 3 * count) * wsize], word)
    names = desc[(2 + 3 * count) * wsize:].split(b"\0")
    return page_size, [FileMapping(table[3 * i], table[3 * i + 1], table[3 * i + 2],
                                   names[i].decode("utf-8", "surrogateescape"))
                       for i in range(count)]


def _cstr(raw):
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Per-machine knowledge
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class MachineSpec:
    """How one e_machine's notes map onto CRIU's core_entry."""
    arch: str                 # name reported in the summary
    mtype: str                # core_entry.march value
    ti_field: str             # core_entry field that holds the thread info
    nregs: int                # number of words in elf_gregset_t
    uid_t: type               # type of pr_uid/pr_gid in elf_prpsinfo
    thread_info: Callable     # (ThreadNotes, ProcessNotes) -> dict
    vsyscall: Optional[int] = None   # fixed address of [vsyscall]/[vectors]
    saved_auxv: Callable = list      # NT_AUXV words -> mm_saved_auxv
    endian: str = "little"


# ---- x86_64 ----------------------------------------------------------------

X86_64_GREGS = ("r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs "
                "flags sp ss fs_base gs_base ds es fs gs").split()


class Fxsave(LE):
    """struct user_i387_struct: the 512-byte FXSAVE image of NT_FPREGSET."""
    _fields_ = [("cwd", ctypes.c_uint16), ("swd", ctypes.c_uint16),
                ("twd", ctypes.c_uint16), ("fop", ctypes.c_uint16),
                ("rip", ctypes.c_uint64), ("rdp", ctypes.c_uint64),
                ("mxcsr", ctypes.c_uint32), ("mxcsr_mask", ctypes.c_uint32),
                ("st_space", ctypes.c_uint32 * 32), ("xmm_space", ctypes.c_uint32 * 64),
                ("padding", ctypes.c_uint32 * 24)]


class UserDesc(LE):
    """struct user_desc as found in NT_386_TLS."""
    _fields_ = [("entry_number", ctypes.c_uint32), ("base_addr", ctypes.c_uint32),
                ("limit", ctypes.c_uint32), ("seg_32bit", ctypes.c_uint32, 1),
                ("contents", ctypes.c_uint32, 2), ("read_exec_only", ctypes.c_uint32, 1),
                ("limit_in_pages", ctypes.c_uint32, 1),
                ("seg_not_present", ctypes.c_uint32, 1), ("useable", ctypes.c_uint32, 1),
                ("lm", ctypes.c_uint32, 1)]


XSTATE_BV_OFFSET = 512     # xsave header follows the 512-byte legacy area
XCR0_OFFSET = 464          # the kernel stores XCR0 in fxsave sw_reserved
GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_ENTRIES = 12, 3

# XSAVE component number -> (CRIU user_x86_xsave_entry field, element type).
XSAVE_COMPONENTS = {
    2: ("ymmh_space", ctypes.c_uint32),
    3: ("bndreg_state", ctypes.c_uint64),
    4: ("bndcsr_state", ctypes.c_uint64),
    5: ("opmask_reg", ctypes.c_uint64),
    6: ("zmm_upper", ctypes.c_uint64),
    7: ("hi16_zmm", ctypes.c_uint64),
    9: ("pkru", ctypes.c_uint32),
}
# Architectural fixed position of AVX, the only one usable without CPUID.
XSAVE_FALLBACK_LAYOUT = {2: (576, 256)}

CPUID_XSAVE_SRC = r"""
#include <cpuid.h>
#include <stdio.h>
int main(void)
{
	unsigned a, b, c, d, i;
	for (i = 2; i < 64; i++) {
		if (!__get_cpuid_count(0xd, i, &a, &b, &c, &d))
			return 1;
		if (a && !(c & 1))	/* user component: size a at offset b */
			printf("%u %u %u\n", i, b, a);
	}
	return 0;
}
"""


def x86_xsave_layout_from_note(desc):
    """NT_X86_XSAVE_LAYOUT: array of {u32 type, size, offset, flags}."""
    vals = struct.unpack("<%dI" % (len(desc) // 4), desc[:len(desc) & ~3])
    return {vals[i]: (vals[i + 2], vals[i + 1]) for i in range(0, len(vals) - 3, 4)}


@functools.lru_cache(maxsize=None)
def x86_xsave_layout_from_cpuid():
    """Component offsets of THIS CPU's non-compacted XSAVE area (CPUID 0xD).

    The kernel writes NT_X86_XSTATE in the CPU's own (standard-format)
    layout, which differs between vendors (e.g. PKRU is at 2688 on Intel
    with AVX-512 but 2432 on AMD without it), so offsets must not be assumed.
    Python cannot execute CPUID, so a tiny C program is built with gcc.
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="core2images-") as tmp:
        src, exe = os.path.join(tmp, "cpuid.c"), os.path.join(tmp, "cpuid")
        with open(src, "w") as f:
            f.write(CPUID_XSAVE_SRC)
        try:
            subprocess.run([cc, "-O0", "-o", exe, src], check=True, capture_output=True)
            out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return {}
    layout = {}
    for line in out.splitlines():
        comp, offset, size = map(int, line.split())
        layout[comp] = (offset, size)
    return layout


def x86_xsave_layout(proc):
    """Prefer the core's own layout note; else ask this CPU; else AVX only."""
    if NT_X86_XSAVE_LAYOUT in proc.extra:
        return x86_xsave_layout_from_note(proc.extra[NT_X86_XSAVE_LAYOUT])
    layout = x86_xsave_layout_from_cpuid()
    if layout:
        return layout
    warnings.warn("no XSAVE layout note and CPUID unavailable: only AVX is decoded")
    return dict(XSAVE_FALLBACK_LAYOUT)


def x86_xsave(desc, layout):
    """user_x86_xsave_entry from NT_X86_XSTATE: header bv + each enabled component."""
    xcr0, = struct.unpack_from("<Q", desc, XCR0_OFFSET)
    xstate_bv, = struct.unpack_from("<Q", desc, XSTATE_BV_OFFSET)
    entry = {"xstate_bv": xstate_bv}
    for comp, (name, elem) in sorted(XSAVE_COMPONENTS.items()):
        if not xcr0 & (1 << comp) or comp not in layout:
            continue
        offset, size = layout[comp]
        if offset + size > len(desc):
            continue
        n = size // ctypes.sizeof(elem)
        entry[name] = list((elem * n).from_buffer_copy(desc, offset))
    return entry


def x86_fpregs(thread, proc, note=NT_FPREGSET):
    """user_x86_fpregs_entry from the FXSAVE note (NT_FPREGSET of a 64-bit
    task, NT_PRXFPREG of an ia32 one) + NT_X86_XSTATE if present."""
    fx = decode(Fxsave, thread.notes[note])
    fpregs = {name: getattr(fx, name) for name in
              ("cwd", "swd", "twd", "fop", "rip", "rdp", "mxcsr", "mxcsr_mask")}
    for name in ("st_space", "xmm_space", "padding"):
        fpregs[name] = list(getattr(fx, name))
    if NT_X86_XSTATE in thread.notes:
        fpregs["xsave"] = x86_xsave(thread.notes[NT_X86_XSTATE], x86_xsave_layout(proc))
    return fpregs


def x86_tls(thread):
    """GDT TLS slots: decoded NT_386_TLS, or the empty slots CRIU writes."""
    desc = thread.notes.get(NT_386_TLS)
    if desc:
        size = ctypes.sizeof(UserDesc)
        slots = [decode(UserDesc, desc, off) for off in range(0, len(desc) - size + 1, size)]
        return [{"entry_number": d.entry_number, "base_addr": d.base_addr,
                 "limit": d.limit, "seg_32bit": bool(d.seg_32bit),
                 "contents_h": bool(d.contents & 2), "contents_l": bool(d.contents & 1),
                 "read_exec_only": bool(d.read_exec_only),
                 "limit_in_pages": bool(d.limit_in_pages),
                 "seg_not_present": bool(d.seg_not_present), "usable": bool(d.useable)}
                for d in slots]
    return [{"entry_number": GDT_ENTRY_TLS_MIN + i, "base_addr": 0, "limit": 0,
             "seg_32bit": False, "contents_h": False, "contents_l": False,
             "read_exec_only": True, "limit_in_pages": False,
             "seg_not_present": True, "usable": False}
            for i in range(GDT_ENTRY_TLS_ENTRIES)]


def x86_64_thread_info(thread, proc):
    """thread_info_x86 for a native 64-bit task."""
    gpregs = dict(zip(X86_64_GREGS, thread.regs))
    gpregs["mode"] = "NATIVE"
    ti = {"clear_tid_addr": 0, "gpregs": gpregs, "tls": x86_tls(thread)}
    if NT_FPREGSET in thread.notes:
        ti["fpregs"] = x86_fpregs(thread, proc)
    return ti


# ---- ia32 (x86 compat task on x86_64) --------------------------------------

I386_GREGS = "bx cx dx si di bp ax ds es fs gs orig_ax ip cs flags sp ss".split()


def ia32_thread_info(thread, proc):
    """thread_info_x86 as CRIU writes it for a 32-bit task: the 17 registers
    of user_regs_struct32 in the 64-bit fields of the same names, the others
    0, mode COMPAT; fpregs from the FXSAVE area in NT_PRXFPREG."""
    gpregs = dict.fromkeys(X86_64_GREGS, 0)
    gpregs.update(zip(I386_GREGS, thread.regs))
    gpregs["mode"] = "COMPAT"
    ti = {"clear_tid_addr": 0, "gpregs": gpregs, "tls": x86_tls(thread)}
    if NT_PRXFPREG in thread.notes:
        ti["fpregs"] = x86_fpregs(thread, proc, NT_PRXFPREG)
    return ti


def pack_auxv32(words):
    """CRIU reads /proc/PID/auxv into 64-bit words (auxv_t on x86_64), so a
    32-bit task's (type, value) pairs land one pair per word, type low."""
    return [words[i] | words[i + 1] << 32 for i in range(0, len(words) - 1, 2)]


# ---- aarch64 ---------------------------------------------------------------

class UserFpsimdState(LE):
    """struct user_fpsimd_state (NT_FPREGSET on arm64): 32 x 128-bit V regs."""
    _fields_ = [("vregs", ctypes.c_uint64 * 64), ("fpsr", ctypes.c_uint32),
                ("fpcr", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 2)]


def aarch64_thread_info(thread, proc):
    """thread_info_aarch64: x0..x30, sp, pc, pstate; FPSIMD; TPIDR_EL0."""
    regs = thread.regs
    ti = {"clear_tid_addr": 0,
          "gpregs": {"regs": regs[:31], "sp": regs[31], "pc": regs[32], "pstate": regs[33]},
          "tls": 0,
          "fpsimd": {"vregs": [0] * 64, "fpsr": 0, "fpcr": 0}}
    if NT_FPREGSET in thread.notes:
        fp = decode(UserFpsimdState, thread.notes[NT_FPREGSET])
        ti["fpsimd"] = {"vregs": list(fp.vregs), "fpsr": fp.fpsr, "fpcr": fp.fpcr}
    if len(thread.notes.get(NT_ARM_TLS, b"")) >= 8:
        ti["tls"], = struct.unpack_from("<Q", thread.notes[NT_ARM_TLS])
    return ti


# ---- arm (32-bit) ----------------------------------------------------------

ARM_GREGS = "r0 r1 r2 r3 r4 r5 r6 r7 r8 r9 r10 fp ip sp lr pc cpsr orig_r0".split()


class UserVfp(LE):
    """struct user_vfp (NT_ARM_VFP): 32 x 64-bit D regs and FPSCR."""
    _pack_ = 4
    # with _pack_, Python 3.14 asks for the layout to be named (else a
    # DeprecationWarning); "ms" is what _pack_ always gave, older Pythons
    # ignore the attribute.  260 bytes, as the kernel's.
    _layout_ = "ms"
    _fields_ = [("fpregs", ctypes.c_uint64 * 32), ("fpscr", ctypes.c_uint32)]


def arm_thread_info(thread, proc):
    """thread_info_arm: r0..pc, cpsr, orig_r0; VFP; TPIDRURO (if noted)."""
    ti = {"clear_tid_addr": 0, "gpregs": dict(zip(ARM_GREGS, thread.regs)), "tls": 0,
          "fpstate": {"vfp_regs": [0] * 32, "fpscr": 0, "fpexc": 0,
                      "fpinst": 0, "fpinst2": 0}}
    if NT_ARM_VFP in thread.notes:
        vfp = decode(UserVfp, thread.notes[NT_ARM_VFP])
        ti["fpstate"].update(vfp_regs=list(vfp.fpregs), fpscr=vfp.fpscr)
    if len(thread.notes.get(NT_ARM_TLS, b"")) >= 4:
        ti["tls"], = struct.unpack_from("<I", thread.notes[NT_ARM_TLS])
    return ti


# ---- ppc64 (little-endian) ---------------------------------------------------

def ppc64_thread_info(thread, proc):
    """thread_info_ppc64: gpr[32], nip, msr, orig_gpr3, ctr, link, xer, ccr
    and trap from user_pt_regs (softe, dar, dsisr and result are not in
    CRIU's images); fpstate, vrstate and vsxstate from their notes."""
    r = thread.regs
    names = ("nip", "msr", "orig_gpr3", "ctr", "link", "xer", "ccr")
    gpregs = {"gpr": r[:32], "trap": r[40]}
    gpregs.update(zip(names, r[32:39]))
    ti = {"clear_tid_addr": 0, "gpregs": gpregs}
    if NT_FPREGSET in thread.notes:
        ti["fpstate"] = {"fpregs": _words(thread.notes[NT_FPREGSET][:33 * 8], ctypes.c_uint64)}
    if NT_PPC_VMX in thread.notes:
        vmx = thread.notes[NT_PPC_VMX]
        ti["vrstate"] = {"vrregs": _words(vmx[:33 * 16], ctypes.c_uint64),
                         "vrsave": struct.unpack_from("<I", vmx, 33 * 16)[0]}
    if NT_PPC_VSX in thread.notes:
        ti["vsxstate"] = {"vsxregs": _words(thread.notes[NT_PPC_VSX][:32 * 8],
                                            ctypes.c_uint64)}
    return ti


# ---- s390x (big-endian) -----------------------------------------------------

def s390_thread_info(thread, proc):
    """thread_info_s390: psw, gprs, the 16 32-bit access registers (two in
    each of elf_gregset_t's words 18-25, big-endian), orig_gpr2; the FP
    registers, system-call word and vector registers from their notes."""
    r = thread.regs
    acrs = []
    for w in r[18:26]:
        acrs += [w >> 32, w & 0xFFFFFFFF]
    call = thread.notes.get(NT_S390_SYSTEM_CALL, b"")
    ti = {"clear_tid_addr": 0,
          "gpregs": {"psw_mask": r[0], "psw_addr": r[1], "gprs": r[2:18],
                     "acrs": acrs, "orig_gpr2": r[26],
                     "system_call": struct.unpack(">I", call[:4])[0] if len(call) >= 4 else 0},
          "fpregs": {"fpc": 0, "fprs": [0] * 16}}
    fp = thread.notes.get(NT_FPREGSET)
    if fp is not None and len(fp) >= 136:
        ti["fpregs"] = {"fpc": struct.unpack_from(">I", fp)[0],
                        "fprs": list(struct.unpack_from(">16Q", fp, 8))}
    if NT_S390_VXRS_LOW in thread.notes:
        ti["vxrs_low"] = {"regs": list(struct.unpack(">16Q", thread.notes[NT_S390_VXRS_LOW][:128]))}
    if NT_S390_VXRS_HIGH in thread.notes:
        ti["vxrs_high"] = {"regs": list(struct.unpack(">32Q", thread.notes[NT_S390_VXRS_HIGH][:256]))}
    return ti


# ---- mips64 (n64, little-endian) ---------------------------------------------

MIPS_SPECIAL = ("lo", "hi", "cp0_epc", "cp0_badvaddr", "cp0_status", "cp0_cause")


def mips_thread_info(thread, proc):
    """thread_info_mips: r0-r31 and the six special registers at their EF_*
    offsets (0-37 on a 64-bit kernel); the FPRs, fcr31 and FPU id from
    NT_PRFPREG, zeros without it."""
    r = thread.regs
    gpregs = {"r%d" % i: r[i] for i in range(32)}
    gpregs.update(zip(MIPS_SPECIAL, r[32:38]))
    fpregs = dict({"r%d" % i: 0 for i in range(32)}, lo=0, hi=0, fpu_fcr31=0, fpu_id=0)
    fp = thread.notes.get(NT_FPREGSET)
    if fp is not None and len(fp) >= 264:
        vals = struct.unpack_from("<32QII", fp)
        fpregs.update({"r%d" % i: vals[i] for i in range(32)},
                      fpu_fcr31=vals[32], fpu_id=vals[33])
    return {"clear_tid_addr": 0, "tls": 0, "gpregs": gpregs, "fpregs": fpregs}


# ---- riscv64 and loongarch64 --------------------------------------------------
# pycriu 3.17 knows neither: their core images are written by rawcore.

RISCV64_GREGS = ("pc ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
                 "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6").split()


def riscv64_thread_info(thread, proc):
    """thread_info_riscv64: user_regs_struct by name (tp is also tls);
    f0-f31 and fcsr from NT_PRFPREG, zeros without it."""
    r = thread.regs
    fp = thread.notes.get(NT_FPREGSET)
    f, fcsr = [0] * 32, 0
    if fp is not None and len(fp) >= 260:
        vals = struct.unpack_from("<32QI", fp)
        f, fcsr = list(vals[:32]), vals[32]
    return {"clear_tid_addr": 0, "tls": r[4],
            "gpregs": dict(zip(RISCV64_GREGS, r[:32])),
            "fpsimd": {"f": f, "fcsr": fcsr}}


def loongarch64_thread_info(thread, proc):
    """thread_info_loongarch64: regs[32] and pc (csr_era, word 33; CRIU
    keeps neither orig_a0 nor csr_badv), r2 is the thread pointer; fpr0-31,
    fcc and fcsr from NT_PRFPREG, zeros without it."""
    r = thread.regs
    fp = thread.notes.get(NT_FPREGSET)
    fpr, fcc, fcsr = [0] * 32, 0, 0
    if fp is not None and len(fp) >= 268:
        vals = struct.unpack_from("<32QQI", fp)
        fpr, fcc, fcsr = list(vals[:32]), vals[32], vals[33]
    return {"clear_tid_addr": 0, "tls": r[2],
            "gpregs": {"regs": list(r[:32]), "pc": r[33]},
            "fpregs": {"regs": fpr, "fcc": fcc, "fcsr": fcsr}}


MACHINES = {
    EM_X86_64: MachineSpec("x86_64", "X86_64", "thread_info", 27, ctypes.c_uint32,
                           x86_64_thread_info, vsyscall=0xFFFFFFFFFF600000),
    EM_AARCH64: MachineSpec("aarch64", "AARCH64", "ti_aarch64", 34, ctypes.c_uint32,
                            aarch64_thread_info),
    EM_ARM: MachineSpec("arm", "ARM", "ti_arm", 18, ctypes.c_uint16,
                        arm_thread_info, vsyscall=0xFFFF0000),
    EM_386: MachineSpec("ia32", "X86_64", "thread_info", 17, ctypes.c_uint16,
                        ia32_thread_info, saved_auxv=pack_auxv32),
    EM_PPC64: MachineSpec("ppc64", "PPC64", "ti_ppc64", 48, ctypes.c_uint32,
                          ppc64_thread_info),
    EM_S390: MachineSpec("s390", "S390", "ti_s390", 27, ctypes.c_uint32.__ctype_be__,
                         s390_thread_info, endian="big"),
    EM_MIPS: MachineSpec("mips", "MIPS", "ti_mips", 45, ctypes.c_uint32,
                         mips_thread_info),
    EM_RISCV: MachineSpec("riscv64", "RISCV64", "ti_riscv64", 32, ctypes.c_uint32,
                          riscv64_thread_info),
    EM_LOONGARCH: MachineSpec("loongarch64", "LOONGARCH64", "ti_loongarch64", 45,
                              ctypes.c_uint32, loongarch64_thread_info),
}
# core_entry.march by name (images/core.proto), for the ones pycriu 3.17 lacks
MARCH = {"LOONGARCH64": 7, "RISCV64": 8}


def machine_spec(core):
    try:
        return MACHINES[core.machine]
    except KeyError:
        raise NotImplementedError("e_machine %d is not supported; add a MachineSpec to "
                                  "MACHINES" % core.machine) from None


# ---- compel's syscall-restart rewind ---------------------------------------

ERESTART_REWOUND = (-512, -513, -514)    # ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
ERESTART_RESTARTBLOCK, EINTR = -516, -4


def _sx(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def compel_rewind(arch, gpregs, kernel_regs=None):
    """Rewind a thread_info's gpregs (a dict) as CRIU's compel_get_task_regs()
    does before saving them: compel/arch/<arch>/src/lib/infect.c, x86 (signed
    64-bit registers, or 32-bit for a compat task), arm, ppc64 (also zeroes
    trap), s390, mips (also zeroes r0) and loongarch64 (also zeroes r0; its
    orig_a0, which the images do not keep, comes from `kernel_regs`, the
    NT_PRSTATUS words); aarch64 and riscv64 change nothing.  Returns gpregs."""
    if arch in ("x86_64", "ia32"):
        bits, pc, ret, orig, insn = (64 if arch == "x86_64" else 32), "ip", "ax", "orig_ax", 2
    elif arch == "arm":
        bits, pc, ret, orig, insn = 32, "pc", "r0", "orig_r0", 4
    elif arch == "ppc64":
        return _compel_ppc64(gpregs)
    elif arch == "s390":
        return _compel_s390(gpregs)
    elif arch == "mips":
        return _compel_mips(gpregs)
    elif arch == "loongarch64":
        return _compel_loongarch64(gpregs, kernel_regs[32])
    else:
        return gpregs
    mask = (1 << bits) - 1
    if _sx(gpregs[orig], bits) >= 0:
        code = _sx(gpregs[ret], bits)
        if code in ERESTART_REWOUND:
            gpregs[ret] = gpregs[orig]
            gpregs[pc] = (gpregs[pc] - insn) & mask
        elif code == ERESTART_RESTARTBLOCK:
            gpregs[ret] = EINTR & mask
    return gpregs


M64 = (1 << 64) - 1


def _compel_ppc64(g):
    """handle_syscall() and __get_task_regs() of compel's ppc64 infect.c."""
    trap = g["trap"] & ~0xF
    scv = trap == 0x3000
    if scv or trap == 0x0C00:
        ret = g["gpr"][3]
        if scv:
            ret = -_sx(ret, 64) if ret >= (-4095 & M64) else None
        elif not g["ccr"] & 0x10000000:
            ret = None
        if ret in (512, 513, 514):
            g["gpr"][3] = g["orig_gpr3"]
            g["nip"] = (g["nip"] - 4) & M64
        elif ret == 516:
            g["gpr"][3] = (EINTR & M64) if scv else -EINTR
    g["trap"] = 0
    return g


def _compel_s390(g):
    """compel_get_task_regs() of compel's s390 infect.c."""
    if g["system_call"]:
        code = _sx(g["gprs"][2], 64)
        if code in ERESTART_REWOUND:
            g["gprs"][2] = g["orig_gpr2"]
            g["psw_addr"] = (g["psw_addr"] - (g["system_call"] >> 16)) & M64
        elif code == ERESTART_RESTARTBLOCK:
            g["gprs"][2] = EINTR & M64
    return g


def _compel_mips(g):
    """compel_get_task_regs() of compel's mips infect.c (v0 compared as int)."""
    if g["r0"]:
        code = _sx(g["r2"], 32)
        if code in (512, 513, 514):
            g["r2"], g["r7"] = g["r0"], g["r26"]
            g["cp0_epc"] = (g["cp0_epc"] - 4) & M64
        elif code == 516:
            g["r2"] = EINTR & M64
        g["r0"] = 0
    return g


NR_RESTART_SYSCALL_GENERIC = 128


def _compel_loongarch64(g, orig_a0):
    """compel_get_task_regs() of compel's loongarch64 infect.c."""
    regs = g["regs"]
    if regs[0]:
        code = _sx(regs[4], 64)
        if code in ERESTART_REWOUND or code == ERESTART_RESTARTBLOCK:
            regs[4] = orig_a0
            g["pc"] = (g["pc"] - 4) & M64
            if code == ERESTART_RESTARTBLOCK:
                regs[11] = NR_RESTART_SYSCALL_GENERIC
        regs[0] = 0
    return g


# --------------------------------------------------------------------------
# Building image entries
# --------------------------------------------------------------------------

def signal_queue(mask, endian="little"):
    """signal_queue_entry with one SI_USER siginfo per bit set in `mask`."""
    signals = []
    order = ">" if endian == "big" else "<"
    for bit in range(64):
        if mask & (1 << bit):
            raw = struct.pack(order + "iii", bit + 1, 0, SI_USER).ljust(SIGINFO_SIZE, b"\0")
            signals.append({"siginfo": base64.b64encode(raw).decode()})
    return {"signals": signals} if signals else {}


def creds_entry(psinfo):
    ids = {k: getattr(psinfo, "pr_" + src) for k, src in
           (("uid", "uid"), ("euid", "uid"), ("suid", "uid"), ("fsuid", "uid"),
            ("gid", "gid"), ("egid", "gid"), ("sgid", "gid"), ("fsgid", "gid"))}
    ids.update(cap_inh=EMPTY_CAPS, cap_prm=EMPTY_CAPS, cap_eff=EMPTY_CAPS,
               cap_bnd=EMPTY_CAPS, secbits=0)
    return ids


def core_entry(thread, proc, spec, task_state, is_main):
    """core-<tid>.img entry; the task-wide `tc` only for the main thread."""
    psinfo = proc.prpsinfo
    comm = _cstr(psinfo.pr_fname)
    entry = {
        "mtype": spec.mtype,
        spec.ti_field: spec.thread_info(thread, proc),
        "thread_core": {
            "futex_rla": 0, "futex_rla_len": 0,
            "sched_nice": psinfo.pr_nice,
            "blk_sigset": thread.prstatus.pr_sighold,
            "creds": creds_entry(psinfo),
            "comm": comm,
            "signals_p": signal_queue(thread.prstatus.pr_sigpend, spec.endian),
        },
    }
    if is_main:
        entry["tc"] = {"task_state": task_state, "exit_code": 0, "personality": 0,
                       "flags": psinfo.pr_flag & 0xFFFFFFFF,
                       "blk_sigset": thread.prstatus.pr_sighold,
                       "comm": comm, "signals_s": {}}
    return entry


# ---- files -----------------------------------------------------------------

def keep_file(path):
    """memfd and deleted files have no path to reopen: their VMAs become anon."""
    return not (path.startswith("/memfd:") or path.endswith(" (deleted)"))


def exe_path(proc, exe):
    """Path of the executable as NT_FILE spells it.

    With --exe: the first offset-0 mapping whose path is that file.  Without:
    the mapping that holds AT_ENTRY, else the first mapping.
    """
    if exe is not None:
        wanted = {exe, os.path.realpath(exe)}
        for fm in proc.files:
            if fm.page_ofs == 0 and (fm.path in wanted or os.path.realpath(fm.path) in wanted):
                return fm.path
        raise ValueError("executable %s is not among the NT_FILE mappings" % exe)
    entry = proc.auxv_get(AT_ENTRY)
    for fm in proc.files:
        if entry is not None and fm.start <= entry < fm.end:
            return fm.path
    return proc.files[0].path if proc.files else None


def file_ids(proc, exe):
    """files.img id (from 1, first appearance) for every path kept."""
    ids = {}
    for fm in proc.files:
        if (keep_file(fm.path) or fm.path == exe) and fm.path not in ids:
            ids[fm.path] = len(ids) + 1
    return ids


def reg_file(fid, path, flags=0):
    reg = {"id": fid, "flags": flags, "pos": 0,
           "fown": {"uid": 0, "euid": 0, "signum": 0, "pid_type": 0, "pid": 0},
           "name": path}
    try:
        st = os.stat(path)
    except OSError:
        pass
    else:
        reg["mode"] = st.st_mode
        if not os.path.isdir(path):
            reg["size"] = st.st_size
    return {"type": "REG", "id": fid, "reg": reg}


# ---- mm --------------------------------------------------------------------

def _read_word(core, addr):
    wsize = ctypes.sizeof(core.word)
    raw = core.read(addr, wsize)
    return None if raw is None else int.from_bytes(raw, core.endian)


def _read_cstr_len(core, addr, limit=1 << 16):
    """Length (with NUL) of the string at addr, or None if not in the core."""
    seg = core.segment_at(addr)
    if seg is None:
        return None
    raw = core.read(addr, min(limit, seg.vaddr + seg.filesz - addr))
    if raw is None or b"\0" not in raw:
        return None
    return raw.index(b"\0") + 1


def _pointer_run_back(core, addr, seg):
    """Non-NULL words just below `addr` that point into `seg`, nearest first."""
    wsize = ctypes.sizeof(core.word)
    ptrs = []
    addr -= wsize
    while addr >= seg.vaddr:
        val = _read_word(core, addr)
        if not val or not seg.contains(val):
            break
        ptrs.append(val)
        addr -= wsize
    return ptrs, addr


def find_initial_stack(core, proc):
    """Locate argc/argv/envp of the initial stack via the auxv copy on it.

    exec() puts [argc][argv...][NULL][envp...][NULL][auxv] at the initial
    stack pointer, and the same auxv is what NT_AUXV holds.  Walking back
    from the auxv copy gives envp, then argv, then argc, which must equal
    the number of argv pointers.  Returns a dict of mm_* fields or None.
    """
    execfn = proc.auxv_get(AT_EXECFN)
    seg = core.segment_at(execfn) if execfn is not None else None
    if seg is None or not proc.auxv:
        return None
    wsize = ctypes.sizeof(core.word)
    needle = (core.word * len(proc.auxv))(*proc.auxv)
    dumped = bytes(core.dumped(seg))
    pos = dumped.find(bytes(needle))
    while pos >= 0:
        found = _stack_from_auxv(core, seg, seg.vaddr + pos)
        if found:
            return found
        pos = dumped.find(bytes(needle), pos + wsize)
    return None


def _stack_from_auxv(core, seg, auxv_addr):
    wsize = ctypes.sizeof(core.word)
    if auxv_addr % wsize or _read_word(core, auxv_addr - wsize) != 0:
        return None
    envp, below_env = _pointer_run_back(core, auxv_addr - wsize, seg)
    if _read_word(core, below_env) != 0:
        return None
    argv, argc_addr = _pointer_run_back(core, below_env, seg)
    if not argv or _read_word(core, argc_addr) != len(argv):
        return None
    argv.reverse()
    envp.reverse()
    last_len = _read_cstr_len(core, argv[-1])
    if last_len is None:
        return None
    arg_end = argv[-1] + last_len
    env_end = arg_end
    if envp:
        env_len = _read_cstr_len(core, envp[-1])
        env_end = envp[-1] + env_len if env_len else arg_end
    return {"mm_start_stack": argc_addr, "mm_arg_start": argv[0], "mm_arg_end": arg_end,
            "mm_env_start": arg_end, "mm_env_end": env_end}


def find_args_by_psargs(core, proc):
    """Fallback: find the psargs strings near AT_EXECFN (argv only)."""
    execfn = proc.auxv_get(AT_EXECFN)
    seg = core.segment_at(execfn) if execfn is not None else None
    psargs = proc.prpsinfo.pr_psargs.rstrip(b"\0").rstrip(b" ")
    if seg is None or not psargs:
        return None
    dumped = bytes(core.dumped(seg))
    first = psargs.split(b" ")[0] + b"\0"
    pos = dumped.rfind(first, 0, execfn - seg.vaddr)
    while pos >= 0:
        if pos == 0 or dumped[pos - 1] == 0:
            end = _args_end(dumped, pos, psargs)
            if end is not None:
                return {"mm_arg_start": seg.vaddr + pos, "mm_arg_end": seg.vaddr + end,
                        "mm_env_start": seg.vaddr + end, "mm_env_end": execfn}
        pos = dumped.rfind(first, 0, pos)
    return None


def _args_end(dumped, start, psargs):
    """End of the shortest NUL-separated run at `start` that spells psargs."""
    end = start
    while end < len(dumped):
        nul = dumped.find(b"\0", end)
        if nul < 0:
            return None
        end = nul + 1
        joined = dumped[start:end - 1].replace(b"\0", b" ")
        if len(joined) >= len(psargs):
            return end if joined.startswith(psargs) else None
        if not psargs.startswith(joined):
            return None
    return None


def _load_bias(core, proc, phdrs, exe):
    """Where the executable was loaded: from PT_PHDR, or (static binaries
    have none) from AT_ENTRY and the ELF header dumped at the exe's start."""
    for p in phdrs:
        if p.p_type == PT_PHDR:
            return proc.auxv_get(AT_PHDR) - p.p_vaddr
    start = next((fm.start for fm in proc.files if fm.path == exe and fm.page_ofs == 0), None)
    ehdr_t = core.ehdr.__class__
    raw = core.read(start, ctypes.sizeof(ehdr_t)) if start is not None else None
    if raw is None or raw[:4] != ELFMAG or proc.auxv_get(AT_ENTRY) is None:
        return None
    return proc.auxv_get(AT_ENTRY) - decode(ehdr_t, raw).e_entry


def code_and_data(core, proc, exe):
    """mm_{start,end}_{code,data} as binfmt_elf computes them, from the
    executable's program headers (AT_PHDR, usually dumped with the ELF
    header page).  Zeros when they are not in the core."""
    zero = dict.fromkeys(("mm_start_code", "mm_end_code", "mm_start_data", "mm_end_data"), 0)
    phdr_t = core.phdr_t
    at_phdr, phnum = proc.auxv_get(AT_PHDR), proc.auxv_get(AT_PHNUM, 0)
    raw = core.read(at_phdr, phnum * ctypes.sizeof(phdr_t)) if at_phdr else None
    if raw is None:
        return zero
    phdrs = [decode(phdr_t, raw, i * ctypes.sizeof(phdr_t)) for i in range(phnum)]
    bias = _load_bias(core, proc, phdrs, exe)
    if bias is None:
        return zero
    start_code, end_code, start_data, end_data = None, 0, 0, 0
    for p in phdrs:
        if p.p_type != PT_LOAD:
            continue
        lo, hi = p.p_vaddr + bias, p.p_vaddr + p.p_filesz + bias
        if p.p_flags & PF_X:
            start_code = lo if start_code is None else min(start_code, lo)
            end_code = max(end_code, hi)
        start_data, end_data = max(start_data, lo), max(end_data, hi)
    return {"mm_start_code": start_code or 0, "mm_end_code": end_code,
            "mm_start_data": start_data, "mm_end_data": end_data}


def file_mapping_at(proc, seg):
    for fm in proc.files:
        if fm.start <= seg.vaddr < fm.end:
            return fm
    return None


def vvar_segments(core, proc, vdso):
    """The read-only anonymous PT_LOADs that end right at the vdso ([vvar],
    and [vvar_vclock] on 6.x kernels)."""
    found, start = set(), vdso
    for seg in sorted(core.segments, key=lambda s: -s.vaddr):
        if seg.end == start and seg.flags == PF_R and file_mapping_at(proc, seg) is None:
            found.add(seg.vaddr)
            start = seg.vaddr
    return found


def vma_entry(seg, proc, fids, special):
    """One vma_entry for one PT_LOAD (see special_kind for the labels)."""
    prot = ((PROT_READ if seg.flags & PF_R else 0) | (PROT_WRITE if seg.flags & PF_W else 0)
            | (PROT_EXEC if seg.flags & PF_X else 0))
    vma = {"start": seg.vaddr, "end": seg.end, "pgoff": 0, "shmid": 0, "prot": prot,
           "flags": MAP_PRIVATE | MAP_ANONYMOUS,
           "status": VMA_AREA_REGULAR | VMA_ANON_PRIVATE, "fd": -1}
    fm = file_mapping_at(proc, seg)
    kind = special.get(seg.vaddr)
    if fm is not None and fm.path in fids:
        vma.update(pgoff=fm.page_ofs * proc.page_size + seg.vaddr - fm.start,
                   shmid=fids[fm.path], flags=MAP_PRIVATE,
                   status=VMA_AREA_REGULAR | VMA_FILE_PRIVATE, fdflags=0)
    elif kind == "vsyscall":
        vma["status"] = VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE
    elif kind == "vdso":
        vma["status"] |= VMA_AREA_VDSO
    elif kind == "vvar":
        vma["status"] |= VMA_AREA_VVAR
    elif kind == "stack":
        vma["status"] |= VMA_AREA_STACK
        vma["flags"] |= MAP_GROWSDOWN
    return vma


def special_kind(core, proc, spec):
    """vaddr -> 'vdso' | 'vvar' | 'vsyscall' | 'stack' for the special VMAs."""
    kinds = {}
    vdso = proc.auxv_get(AT_SYSINFO_EHDR)
    if vdso:
        kinds[vdso] = "vdso"
        kinds.update(dict.fromkeys(vvar_segments(core, proc, vdso), "vvar"))
    if spec.vsyscall is not None:
        kinds[spec.vsyscall] = "vsyscall"
    execfn = proc.auxv_get(AT_EXECFN)
    stack = core.segment_at(execfn) if execfn else None
    if stack is not None:
        kinds[stack.vaddr] = "stack"
    return kinds


def mm_entry(core, proc, spec, fids, exe):
    """mm-<pid>.img: auxv, argument/environment bounds, one VMA per PT_LOAD."""
    mm = {"mm_start_stack": 0, "mm_start_brk": 0, "mm_brk": 0,
          "mm_arg_start": 0, "mm_arg_end": 0, "mm_env_start": 0, "mm_env_end": 0}
    mm.update(code_and_data(core, proc, exe))
    mm.update(find_initial_stack(core, proc) or find_args_by_psargs(core, proc) or {})
    mm["exe_file_id"] = fids.get(exe, 0)
    if proc.auxv:
        mm["mm_saved_auxv"] = spec.saved_auxv(proc.auxv)
    special = special_kind(core, proc, spec)
    mm["vmas"] = [vma_entry(seg, proc, fids, special) for seg in core.segments]
    mm["dumpable"] = 1
    return mm


# ---- pagemap ---------------------------------------------------------------

def dumped_segments(core):
    """PT_LOADs with contents in the core, i.e. what goes to pages-1.img."""
    return [seg for seg in core.segments if seg.filesz > 0]


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


PAGEMAP_FIELD2 = ("compat_nr_pages"
                  if "compat_nr_pages" in pb.pagemap_entry.DESCRIPTOR.fields_by_name
                  else "nr_pages")


def pagemap_records(core, page_size, nr_pages_field):
    """Serialized pagemap entries in either encoding.

    nr_pages_field=2: CRIU <= 4.1 (and pycriu 3.17): uint32 field 2.
    nr_pages_field=5: CRIU >= 4.2: field 2 left 0, count in uint64 field 5,
    which pycriu 3.17 cannot express, hence the hand-appended varint.
    """
    head = pb.pagemap_head(pages_id=PAGES_ID).SerializeToString()
    records = [head]
    for seg in dumped_segments(core):
        nr = (seg.filesz + page_size - 1) // page_size
        msg = pb.pagemap_entry(vaddr=seg.vaddr, flags=PE_PRESENT)
        # field 2: `nr_pages` to pycriu up to 4.1, `compat_nr_pages` from 4.2
        setattr(msg, PAGEMAP_FIELD2, nr if nr_pages_field == 2 else 0)
        raw = msg.SerializeToString()
        if nr_pages_field == 5:
            raw += _varint(5 << 3) + _varint(nr)
        records.append(raw)
    return records


def write_pagemap(path, records):
    """pagemap image: common magic, PAGEMAP magic, then size-prefixed records."""
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", images.magic.by_name["IMG_COMMON"],
                            images.magic.by_name["PAGEMAP"]))
        for raw in records:
            f.write(struct.pack("<i", len(raw)))
            f.write(raw)


def write_pages(path, core, page_size):
    """pages-1.img: raw page contents, in pagemap order, zero-padded to pages."""
    with open(path, "wb") as f:
        for seg in dumped_segments(core):
            f.write(core.dumped(seg))
            tail = seg.filesz % page_size
            if tail:
                f.write(b"\0" * (page_size - tail))


# ---- generic image writing -------------------------------------------------

def write_image(out_dir, name, magic, entries):
    with open(os.path.join(out_dir, name), "wb") as f:
        images.dump({"magic": magic, "entries": entries}, f)


def write_core(out_dir, tid, spec, entry):
    """core-<tid>.img, through rawcore where pycriu lacks the machine."""
    if spec.mtype in MARCH and not (
            spec.ti_field in pb.core_entry.DESCRIPTOR.fields_by_name
            and spec.mtype in pb.core_entry.march.keys()):
        rest = {k: v for k, v in entry.items() if k not in ("mtype", spec.ti_field)}
        rawcore.write_core_image(os.path.join(out_dir, "core-%d.img" % tid), rest,
                                 MARCH[spec.mtype], spec.ti_field, entry[spec.ti_field])
    else:
        write_image(out_dir, "core-%d.img" % tid, "CORE", [entry])


def inventory_entry():
    return {"img_version": 2, "fdinfo_per_id": True, "root_ids": dict(ROOT_IDS),
            "ns_per_id": True, "lsmtype": "NO_LSM"}


def pstree_entry(proc):
    ps = proc.prpsinfo
    return {"pid": ps.pr_pid, "ppid": ps.pr_ppid, "pgid": ps.pr_pgrp, "sid": ps.pr_sid,
            "threads": [t.tid for t in proc.threads]}


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

def core_to_images(core_path, out_dir, *, task_state=TASK_ALIVE, exe=None, nr_pages_field=2,
                   as_criu_saves=False, edit_thread_info=None, edit_notes=None):
    """Write a CRIU image directory for the process in a kernel core.

    task_state: tc.task_state of the main thread (1 alive, 3 stopped).
    exe: path of the executable, to pick its NT_FILE entry for exe_file_id.
    nr_pages_field: 2 (CRIU 3.x/pycriu encoding) or 5 (CRIU 4.2 encoding).
    as_criu_saves: registers rewound as compel saves them (compel_rewind).
    edit_thread_info: (index, thread_info dict) -> None, called on each
    thread's thread_info before compel's rewind (values planted by a test).
    edit_notes: (index, ThreadNotes) -> None, called on each thread's notes
    before its thread_info is made (a state a test makes kernel-like).

    Returns {"pid", "tids", "arch", "nr_pages", "exe"}.
    """
    if nr_pages_field not in (2, 5):
        raise ValueError("nr_pages_field must be 2 or 5")
    os.makedirs(out_dir, exist_ok=True)
    with CoreFile(core_path) as core:
        spec = machine_spec(core)
        proc = read_notes(core, spec)
        pid = proc.prpsinfo.pr_pid
        exe_name = exe_path(proc, exe)
        fids = file_ids(proc, exe_name)
        main_tid = pid if any(t.tid == pid for t in proc.threads) else proc.threads[0].tid

        write_image(out_dir, "inventory.img", "INVENTORY", [inventory_entry()])
        write_image(out_dir, "pstree.img", "PSTREE", [pstree_entry(proc)])
        for k, thread in enumerate(proc.threads):
            if edit_notes is not None:
                edit_notes(k, thread)
            entry = core_entry(thread, proc, spec, task_state, thread.tid == main_tid)
            if edit_thread_info is not None:
                edit_thread_info(k, entry[spec.ti_field])
            if as_criu_saves:
                compel_rewind(spec.arch, entry[spec.ti_field]["gpregs"], thread.regs)
            write_core(out_dir, thread.tid, spec, entry)

        root_id = len(fids) + 1
        files = [reg_file(fid, path) for path, fid in fids.items()]
        files.append(reg_file(root_id, "/"))
        write_image(out_dir, "files.img", "FILES", files)
        write_image(out_dir, "fs-%d.img" % pid, "FS",
                    [{"cwd_id": root_id, "root_id": root_id, "umask": 0o022}])
        write_image(out_dir, "ids-%d.img" % pid, "IDS", [dict(ROOT_IDS)])
        write_image(out_dir, "mm-%d.img" % pid, "MM",
                    [mm_entry(core, proc, spec, fids, exe_name)])

        records = pagemap_records(core, proc.page_size, nr_pages_field)
        write_pagemap(os.path.join(out_dir, "pagemap-%d.img" % pid), records)
        write_pages(os.path.join(out_dir, "pages-%d.img" % PAGES_ID), core, proc.page_size)
        nr_pages = sum((s.filesz + proc.page_size - 1) // proc.page_size
                       for s in dumped_segments(core))
        return {"pid": pid, "tids": [t.tid for t in proc.threads], "arch": spec.arch,
                "nr_pages": nr_pages, "exe": exe_name}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.helpers.core2images",
        description="Turn a kernel-written core file into a CRIU image directory.")
    parser.add_argument("core")
    parser.add_argument("out_dir")
    parser.add_argument("--exe", help="executable path, to pick exe_file_id")
    parser.add_argument("--task-state", type=int, default=TASK_ALIVE,
                        help="tc.task_state: 1 alive (default), 3 stopped")
    parser.add_argument("--nr-pages-field", type=int, choices=(2, 5), default=2,
                        help="pagemap page-count field: 2 (CRIU 3.x, default) or 5 (CRIU 4.2)")
    parser.add_argument("--as-criu-saves", action="store_true",
                        help="rewind threads in interrupted system calls as CRIU's "
                             "compel does before saving their registers")
    args = parser.parse_args(argv)
    summary = core_to_images(args.core, args.out_dir, task_state=args.task_state,
                             exe=args.exe, nr_pages_field=args.nr_pages_field,
                             as_criu_saves=args.as_criu_saves)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
