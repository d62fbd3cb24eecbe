"""What one architecture is, for a core: the `Arch` description each
module of this package exports as ARCH, in the spirit of the kernel's
user_regset_view (arch/*/kernel/ptrace*.c).

Where a register byte of a core comes from, in one hop: notes.py writes
NT_PRSTATUS's pr_reg from `Regs.gp`, in the order of the arch's GREGS, and
every other register note with the arch's `thread_notes` table; both read
only what the arch's `decode()` made of CRIU's thread_info.  `decode` is the
one place that reads that arch's protobuf fields.
"""
import ctypes
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from .. import elf


@dataclass
class Regs:
    """A thread's registers, decoded from its thread_info.

    gp: the general registers in the kernel's elf_gregset_t order, under
    the kernel's names (pr_reg[i] is the i-th value; missing trailing
    names are zeros).  The rest are the arch's other register sets, named
    by the arch module (fpregs, vfp, vregs, ...)."""
    gp: Dict[str, int]
    extra: Dict[str, object] = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["extra"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class SyscallEntry:
    """One way into the kernel: its instruction and calling convention,
    registers named by Regs.gp keys."""
    insn: bytes                 # the instruction's bytes in memory
    numbers: str                # which system call numbering it uses
                                # (a key of syscall_restart.SYSCALL_NAMES)
    nr: str                     # register holding the system call number
    args: Tuple[str, ...]       # registers holding its arguments, in order
    thumb: Optional[bool] = None  # arm: only in this state (cpsr T bit)
    negative: bool = True       # the call returns -code in `ret`; False: the
                                # code itself, an error flag set (ppc64 sc, mips)
    trap: Optional[int] = None  # ppc64: pt_regs.trap of a call made this way


@dataclass(frozen=True)
class SyscallABI:
    """How a thread sits in a system call on this arch: what recognising
    (and, on x86, undoing) CRIU's syscall-restart rewind needs.  See
    syscall_restart.py for the rule and the kernel functions behind it."""
    bits: int
    pc: str
    ret: str
    entries: Tuple[SyscallEntry, ...]
    # True: the kernel rewinds before the ptrace stop, so the saved
    # registers are already what its core shows (arm, arm64); False: after
    # it (x86), and CRIU's rewind is undone
    kernel_rewinds_first: bool
    orig: Optional[str] = None  # x86: orig_ax (the number; < 0: no call);
                                # ppc64 orig_gpr3, s390 orig_gpr2, loongarch64
                                # orig_a0: the first argument
    thumb_bit: Optional[tuple] = None  # arm: (register, mask) of the T bit
    # how CRIU's rewind is recognised and undone (syscall_restart.STYLES):
    # as x86 or as arm (from kernel_rewinds_first) unless named here:
    # "cr0_so" (ppc64), "int_code" (s390), "zeroed_marker" (mips, loongarch64)
    style: str = ""
    # the style's other registers, by role: ppc64 "ccr", "trap"; mips
    # "marker" (r0), "error" (a3), "saved_a3" (k0); loongarch64 "marker" (r0)
    roles: Tuple[Tuple[str, str], ...] = ()
    # the style's constants, by name (ppc64: "so", CR0's summary-overflow bit)
    consts: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Arch:
    """One architecture as CRIU marks it and as the kernel writes its cores."""
    name: str                  # the module's name (arch/__init__.py MODULES)
    elf: elf.ElfClass          # ELF class and byte order of the core
    machine: int               # e_machine
    endian: str                # "little" or "big"
    long_t: type               # ctypes type of the target's `long`, in its byte order
    uid_t: type                # __kernel_uid_t of elf_prpsinfo (16 bits on ia32, arm)
    page_size: int             # the page size the images' pagemaps count in
    user_va_end: int           # the largest user address space of the arch
    gdb_name: str              # gdb's `set architecture` name
    mtype: int                 # core_entry.march CRIU writes
    ti_field: str              # core_entry field that holds the thread_info
    gregs: Tuple[str, ...]     # elf_gregset_t, by the kernel's names
    decode: Callable           # (thread_info, reparse) -> Regs
    thread_notes: Tuple        # ((note type, encoder(proc, thread) -> bytes or None), ...)
    process_notes: Tuple = ()  # ((note type, encoder(proc) -> bytes or None), ...), once
    accepts: Callable = None   # (thread_info) -> bool, when several share an mtype
    ti_class: type = None      # our declaration of core_entry's ti field, when
                               # pycriu does not know it
    auxv_words: Callable = list  # mm_saved_auxv -> the target's auxv words
    osabi: int = elf.ELFOSABI_NONE
    eflags: int = 0
    siginfo_size: int = 128
    sigstop: int = 19          # SIGSTOP's number (asm/signal.h)
    si_code_offset: int = 8    # si_code in siginfo_t: after si_signo, si_errno
    native_hosts: Tuple[str, ...] = ()   # platform.machine() whose plain gdb reads it
    syscall: Optional[SyscallABI] = None

    # the names elf.headers() reads
    @property
    def ELF(self):
        return self.elf

    @property
    def MACHINE(self):
        return self.machine

    @property
    def OSABI(self):
        return self.osabi

    @property
    def EFLAGS(self):
        return self.eflags

    @property
    def struct(self):
        """ctypes base class of the arch's structures (its byte order)."""
        return elf.STRUCT_BASE[self.endian]

    @property
    def word_bytes(self):
        return ctypes.sizeof(self.long_t)


def ctype(t, endian):
    """A ctypes scalar type in a byte order."""
    return t.__ctype_be__ if endian == "big" else t.__ctype_le__


def words(values, count):
    """`count` values from a repeated image field, zero-padded."""
    vals = list(values)[:count]
    return vals + [0] * (count - len(vals))


def pack(endian, fmt, *values):
    """struct.pack in the target's byte order."""
    import struct
    return struct.pack((">" if endian == "big" else "<") + fmt, *values)
