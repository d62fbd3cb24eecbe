"""ELF structures and constants for core files, as ctypes structures.

Everything binary in a core goes through these classes so that the byte
layout is declared once, next to the kernel header it comes from
(include/uapi/linux/elf.h).  Both classes (32- and 64-bit) and both byte
orders are here because the class and data encoding of a core follow the
checkpointed process (s390x is big-endian), not the host.
"""
from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence

from .record import Record

# e_ident
ELFMAG = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1
ELFOSABI_NONE = 0

ET_CORE = 4

EM_386 = 3
EM_MIPS = 8
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

PT_LOAD = 1
PT_NOTE = 4

PF_X = 1
PF_W = 2
PF_R = 4

PN_XNUM = 0xFFFF
SHT_NULL = 0

# Note types (include/uapi/linux/elf.h)
NT_PRSTATUS = 1
NT_PRFPREG = 2
NT_FPREGSET = 2
NT_PRPSINFO = 3
NT_AUXV = 6
NT_PRXFPREG = 0x46E62B7F
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
NT_386_TLS = 0x200
NT_X86_XSTATE = 0x202
NT_X86_SHSTK = 0x204
NT_X86_XSAVE_LAYOUT = 0x205
NT_ARM_VFP = 0x400
NT_ARM_TLS = 0x401
NT_ARM_SVE = 0x405
NT_ARM_PAC_MASK = 0x406
NT_ARM_PACA_KEYS = 0x407
NT_ARM_PACG_KEYS = 0x408
NT_ARM_PAC_ENABLED_KEYS = 0x40A
NT_PPC_VMX = 0x100
NT_PPC_VSX = 0x102
NT_S390_LAST_BREAK = 0x306
NT_S390_SYSTEM_CALL = 0x307
NT_S390_VXRS_LOW = 0x309
NT_S390_VXRS_HIGH = 0x30A
NT_S390_GS_CB = 0x30B
NT_S390_GS_BC = 0x30C
NT_S390_RI_CB = 0x30D
NT_MIPS_DSP = 0x800
NT_MIPS_FP_MODE = 0x801
NT_LOONGARCH_LSX = 0xA02
NT_LOONGARCH_LASX = 0xA03


class _LE(ctypes.LittleEndianStructure):
    """Little-endian, naturally aligned."""


class _BE(ctypes.BigEndianStructure):
    """Big-endian, naturally aligned (s390x)."""


STRUCT_BASE = {"little": _LE, "big": _BE}


def _structures(base):
    """The ELF header structures in one byte order."""

    class Elf64_Ehdr(base):
        _fields_ = [
            ("e_ident", ctypes.c_uint8 * 16),
            ("e_type", ctypes.c_uint16),
            ("e_machine", ctypes.c_uint16),
            ("e_version", ctypes.c_uint32),
            ("e_entry", ctypes.c_uint64),
            ("e_phoff", ctypes.c_uint64),
            ("e_shoff", ctypes.c_uint64),
            ("e_flags", ctypes.c_uint32),
            ("e_ehsize", ctypes.c_uint16),
            ("e_phentsize", ctypes.c_uint16),
            ("e_phnum", ctypes.c_uint16),
            ("e_shentsize", ctypes.c_uint16),
            ("e_shnum", ctypes.c_uint16),
            ("e_shstrndx", ctypes.c_uint16),
        ]


    class Elf32_Ehdr(base):
        _fields_ = [
            ("e_ident", ctypes.c_uint8 * 16),
            ("e_type", ctypes.c_uint16),
            ("e_machine", ctypes.c_uint16),
            ("e_version", ctypes.c_uint32),
            ("e_entry", ctypes.c_uint32),
            ("e_phoff", ctypes.c_uint32),
            ("e_shoff", ctypes.c_uint32),
            ("e_flags", ctypes.c_uint32),
            ("e_ehsize", ctypes.c_uint16),
            ("e_phentsize", ctypes.c_uint16),
            ("e_phnum", ctypes.c_uint16),
            ("e_shentsize", ctypes.c_uint16),
            ("e_shnum", ctypes.c_uint16),
            ("e_shstrndx", ctypes.c_uint16),
        ]


    class Elf64_Phdr(base):
        _fields_ = [
            ("p_type", ctypes.c_uint32),
            ("p_flags", ctypes.c_uint32),
            ("p_offset", ctypes.c_uint64),
            ("p_vaddr", ctypes.c_uint64),
            ("p_paddr", ctypes.c_uint64),
            ("p_filesz", ctypes.c_uint64),
            ("p_memsz", ctypes.c_uint64),
            ("p_align", ctypes.c_uint64),
        ]


    class Elf32_Phdr(base):
        _fields_ = [
            ("p_type", ctypes.c_uint32),
            ("p_offset", ctypes.c_uint32),
            ("p_vaddr", ctypes.c_uint32),
            ("p_paddr", ctypes.c_uint32),
            ("p_filesz", ctypes.c_uint32),
            ("p_memsz", ctypes.c_uint32),
            ("p_flags", ctypes.c_uint32),
            ("p_align", ctypes.c_uint32),
        ]


    class Elf64_Shdr(base):
        _fields_ = [
            ("sh_name", ctypes.c_uint32),
            ("sh_type", ctypes.c_uint32),
            ("sh_flags", ctypes.c_uint64),
            ("sh_addr", ctypes.c_uint64),
            ("sh_offset", ctypes.c_uint64),
            ("sh_size", ctypes.c_uint64),
            ("sh_link", ctypes.c_uint32),
            ("sh_info", ctypes.c_uint32),
            ("sh_addralign", ctypes.c_uint64),
            ("sh_entsize", ctypes.c_uint64),
        ]


    class Elf32_Shdr(base):
        _fields_ = [
            ("sh_name", ctypes.c_uint32),
            ("sh_type", ctypes.c_uint32),
            ("sh_flags", ctypes.c_uint32),
            ("sh_addr", ctypes.c_uint32),
            ("sh_offset", ctypes.c_uint32),
            ("sh_size", ctypes.c_uint32),
            ("sh_link", ctypes.c_uint32),
            ("sh_info", ctypes.c_uint32),
            ("sh_addralign", ctypes.c_uint32),
            ("sh_entsize", ctypes.c_uint32),
        ]


    class Elf_Nhdr(base):
        """Same layout in both classes: three 32-bit words."""
        _fields_ = [
            ("n_namesz", ctypes.c_uint32),
            ("n_descsz", ctypes.c_uint32),
            ("n_type", ctypes.c_uint32),
        ]

    return Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr, Elf_Nhdr


(Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr,
 Elf_Nhdr) = _structures(_LE)
# the seven structures (_structures' order) by byte order, for readers of
# ELF files of either (buildid.py), through structures()
_STRUCTURES = {"little": (Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, Elf32_Ehdr,
                          Elf32_Phdr, Elf32_Shdr, Elf_Nhdr)}
NHDR = {"little": Elf_Nhdr}  # filled by structures()


def structures(endian):
    """The seven structures (_structures' order) in byte order `endian`.
    The big-endian ones are made when first asked for (an s390x core, a
    big-endian ELF file's build-id): ctypes classes cost at every start."""
    s = _STRUCTURES.get(endian)
    if s is None:
        s = _STRUCTURES[endian] = _structures(STRUCT_BASE[endian])
        NHDR[endian] = s[6]
    return s


class ElfClass:
    """The structures and word size of one ELF class in one byte order."""

    def __init__(self, elfclass, ehdr, phdr, shdr, word, endian="little"):
        self.elfclass = elfclass
        self.Ehdr = ehdr
        self.Phdr = phdr
        self.Shdr = shdr
        self.word = word  # ctypes type of the target's `long`
        self.endian = endian

    @property
    def wordsize(self):
        return ctypes.sizeof(self.word)


ELF64 = ElfClass(ELFCLASS64, Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr, ctypes.c_uint64)
ELF32 = ElfClass(ELFCLASS32, Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr, ctypes.c_uint32)


def __getattr__(name):
    # ELF64BE (s390x's class), made when the arch that uses it is loaded
    if name == "ELF64BE":
        big = structures("big")
        cls = globals()["ELF64BE"] = ElfClass(
            ELFCLASS64, big[0], big[1], big[2], ctypes.c_uint64.__ctype_be__, "big")
        return cls
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def align4(n):
    return (n + 3) & ~3


# Elf_Nhdr (three 32-bit words) by byte order: packed with struct, as a
# core of 100,000 threads has hundreds of thousands of notes
_NHDR_PACK = {"little": struct.Struct("<III").pack, "big": struct.Struct(">III").pack}
_NOTE_NAMES = {}  # name -> (n_namesz, the name NUL-terminated and padded)
_PAD4 = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length % 4


def note_bytes(name, ntype, desc, endian="little"):
    """One note record: header, NUL-terminated name and desc, each padded to 4."""
    named = _NOTE_NAMES.get(name)
    if named is None:
        name_b = name.encode() + b"\0"
        named = (len(name_b), name_b + _PAD4[len(name_b) & 3])
        if len(_NOTE_NAMES) < 64:
            _NOTE_NAMES[name] = named
    n = len(desc)
    return b"".join((_NHDR_PACK[endian](named[0], n, ntype), named[1], desc,
                     _PAD4[n & 3]))


def make_ehdr(cls, machine, phnum, osabi=ELFOSABI_NONE, flags=0):
    """The core's file header, with PN_XNUM when the count does not fit."""
    eh = cls.Ehdr()
    data = ELFDATA2MSB if cls.endian == "big" else ELFDATA2LSB
    ident = ELFMAG + bytes([cls.elfclass, data, EV_CURRENT, osabi])
    ctypes.memmove(eh.e_ident, ident, len(ident))
    eh.e_type = ET_CORE
    eh.e_machine = machine
    eh.e_version = EV_CURRENT
    eh.e_phoff = ctypes.sizeof(cls.Ehdr)
    eh.e_flags = flags
    eh.e_ehsize = ctypes.sizeof(cls.Ehdr)
    eh.e_phentsize = ctypes.sizeof(cls.Phdr)
    eh.e_phnum = phnum if phnum < PN_XNUM else PN_XNUM
    return eh


# -- the layout of a core ----------------------------------------------------

PAGE = 4096


def page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


class Layout(Record):
    """Where everything of a core lies: the program headers (PT_NOTE, then
    one PT_LOAD a segment), the notes, each segment's dumped bytes (page
    aligned, one after the other) and, past PN_XNUM headers, the section
    header holding their real number."""
    def __init__(self, phnum: int,
                 notes_offset: int,
                 notes_size: int,
                 data_offset: int,
                 seg_offsets: list[int],
                 file_size: int,
                 shoff: int):
        self.phnum = phnum
        self.notes_offset = notes_offset
        self.notes_size = notes_size
        self.data_offset = data_offset
        self.seg_offsets = seg_offsets
        self.file_size = file_size
        self.shoff = shoff


def notes_offset(cls: ElfClass, segments: Sequence) -> int:
    """Where the notes start: after the file header and the program headers
    (PT_NOTE, then one PT_LOAD per segment), whatever the notes' size."""
    return ctypes.sizeof(cls.Ehdr) + (len(segments) + 1) * ctypes.sizeof(cls.Phdr)


def compute_layout(cls: ElfClass, notes_blob, segments: Sequence) -> Layout:
    """notes_blob: the notes' bytes, or their size; segments: objects with
    `dump_size` (memory.Segment)."""
    nseg = len(segments) + 1  # PT_NOTE first
    notes_size = notes_blob if isinstance(notes_blob, int) else len(notes_blob)
    start = notes_offset(cls, segments)
    data = page_up(start + notes_size)
    offs = []
    pos = data
    for seg in segments:
        offs.append(pos)
        pos += seg.dump_size
    shoff = 0
    end = pos
    if nseg >= PN_XNUM:
        shoff = pos
        end = pos + ctypes.sizeof(cls.Shdr)
    return Layout(nseg, start, notes_size, data, offs, end, shoff)


def headers(cls: ElfClass, arch, layout: Layout,
            segments: Sequence) -> tuple[bytes, bytes]:
    """File header and program headers, and (PN_XNUM) the extra section
    header; arch: an arch.Arch (MACHINE, OSABI, EFLAGS), segments: objects
    with vaddr, memsz, dump_size and flags (memory.Segment)."""
    eh = make_ehdr(cls, arch.MACHINE, layout.phnum, arch.OSABI, arch.EFLAGS)
    shdr = b""
    if layout.shoff:
        eh.e_shoff = layout.shoff
        eh.e_shentsize = ctypes.sizeof(cls.Shdr)
        eh.e_shnum = 1
        # fill_extnum_info(): SHT_NULL, sh_size = e_shnum (1), sh_link =
        # e_shstrndx (0), sh_info = the real number of program headers
        sh = cls.Shdr()
        sh.sh_type = SHT_NULL
        sh.sh_size = 1
        sh.sh_info = layout.phnum
        shdr = bytes(sh)
    ph = cls.Phdr()
    ph.p_type = PT_NOTE
    ph.p_offset = layout.notes_offset
    ph.p_filesz = layout.notes_size
    ph.p_align = 4
    out = [bytes(eh), bytes(ph)]
    for seg, off in zip(segments, layout.seg_offsets):
        ph = cls.Phdr()
        ph.p_type = PT_LOAD
        ph.p_flags = seg.flags
        ph.p_offset = off
        ph.p_vaddr = seg.vaddr
        ph.p_filesz = seg.dump_size
        ph.p_memsz = seg.memsz
        ph.p_align = PAGE
        out.append(bytes(ph))
    return b"".join(out), shdr
