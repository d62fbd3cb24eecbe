"""ELF structures and constants for core files, as ctypes structures.

Everything binary in a core goes through these classes so that the byte
layout is declared once, next to the kernel header it comes from
(include/uapi/linux/elf.h).  Both classes (32- and 64-bit) and both byte
orders are here because the class and data encoding of a core follow the
checkpointed process (s390x is big-endian), not the host.
"""
import ctypes

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
_BIG = _structures(_BE)
NHDR = {"little": Elf_Nhdr, "big": _BIG[6]}


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
ELF64BE = ElfClass(ELFCLASS64, _BIG[0], _BIG[1], _BIG[2],
                   ctypes.c_uint64.__ctype_be__, "big")


def align4(n):
    return (n + 3) & ~3


def note_bytes(name, ntype, desc, endian="little"):
    """One note record: header, NUL-terminated name and desc, each padded to 4."""
    name_b = name.encode() + b"\0"
    hdr = NHDR[endian](len(name_b), len(desc), ntype)
    return (bytes(hdr) + name_b + b"\0" * (align4(len(name_b)) - len(name_b))
            + desc + b"\0" * (align4(len(desc)) - len(desc)))


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
