"""What one architecture is, for a core: the `Arch` description each
module of this package exports as ARCH, in the spirit of the kernel's
user_regset_view (arch/*/kernel/ptrace*.c).

Where a register byte of a core comes from, in one hop: notes.py writes
NT_PRSTATUS's pr_reg from `Regs.gp`, in the order of the arch's GREGS, and
every other register note with the arch's `thread_notes` table; both read
only what the arch's `decode()` made of CRIU's thread_info.  `decode` is the
one place that reads that arch's protobuf fields.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable

from .. import elf
from ..record import FrozenRecord, Record


class Regs(Record):
    """A thread's registers, decoded from its thread_info.

    gp: the general registers in the kernel's elf_gregset_t order, under
    the kernel's names (pr_reg[i] is the i-th value; missing trailing
    names are zeros).  The rest are the arch's other register sets, named
    by the arch module (fpregs, vfp, vregs, ...)."""
    def __init__(self, gp: dict[str, int], extra: dict[str, object] | None = None):
        self.gp = gp
        self.extra = {} if extra is None else extra

    def __getattr__(self, name):
        try:
            return self.__dict__["extra"][name]
        except KeyError:
            raise AttributeError(name) from None


class SyscallEntry(FrozenRecord):
    """One way into the kernel: its instruction and calling convention,
    registers named by Regs.gp keys."""
    def __init__(self, insn: bytes,
                 numbers: str,
                 nr: str,
                 args: tuple[str, ...],
                 thumb: bool | None = None,
                 negative: bool = True,
                 trap: int | None = None):
        self.insn = insn                  # the instruction's bytes in memory
        self.numbers = numbers            # which system call numbering it uses
                                          # (a key of syscall_restart.SYSCALL_NAMES)
        self.nr = nr                      # register holding the system call number
        self.args = args                  # registers holding its arguments, in order
        self.thumb = thumb                # arm: only in this state (cpsr T bit)
        self.negative = negative          # the call returns -code in `ret`; False: the
                                          # code itself, an error flag set (ppc64 sc, mips)
        self.trap = trap                  # ppc64: pt_regs.trap of a call made this way


class SyscallABI(FrozenRecord):
    """How a thread sits in a system call on this arch: what recognising
    (and, on x86, undoing) CRIU's syscall-restart rewind needs.  See
    syscall_restart.py for the rule and the kernel functions behind it."""
    def __init__(self, bits: int,
                 pc: str,
                 ret: str,
                 entries: tuple[SyscallEntry, ...],
                 kernel_rewinds_first: bool,
                 orig: str | None = None,
                 thumb_bit: tuple | None = None,
                 style: str = "",
                 roles: tuple[tuple[str, str], ...] = (),
                 consts: tuple[tuple[str, int], ...] = ()):
        self.bits = bits
        self.pc = pc
        self.ret = ret
        self.entries = entries
        # True: the kernel rewinds before the ptrace stop, so the saved
        # registers are already what its core shows (arm, arm64); False: after
        # it (x86), and CRIU's rewind is undone
        self.kernel_rewinds_first = kernel_rewinds_first
        self.orig = orig                  # x86: orig_ax (the number; < 0: no call);
                                          # ppc64 orig_gpr3, s390 orig_gpr2, loongarch64
                                          # orig_a0: the first argument
        self.thumb_bit = thumb_bit        # arm: (register, mask) of the T bit
        # how CRIU's rewind is recognised and undone (syscall_restart.STYLES):
        # as x86 or as arm (from kernel_rewinds_first) unless named here:
        # "cr0_so" (ppc64), "int_code" (s390), "zeroed_marker" (mips, loongarch64)
        self.style = style
        # the style's other registers, by role: ppc64 "ccr", "trap"; mips
        # "marker" (r0), "error" (a3), "saved_a3" (k0); loongarch64 "marker" (r0)
        self.roles = roles
        # the style's constants, by name (ppc64: "so", CR0's summary-overflow bit)
        self.consts = consts


class Arch(FrozenRecord):
    """One architecture as CRIU marks it and as the kernel writes its cores."""
    def __init__(self, name: str,
                 elf: elf.ElfClass,
                 machine: int,
                 endian: str,
                 long_t: type,
                 uid_t: type,
                 page_size: int,
                 user_va_end: int,
                 gdb_name: str,
                 mtype: int,
                 ti_field: str,
                 gregs: tuple[str, ...],
                 decode: Callable,
                 thread_notes: tuple,
                 process_notes: tuple = (),
                 accepts: Callable = None,
                 ti_class: type = None,
                 auxv_words: Callable = list,
                 osabi: int = elf.ELFOSABI_NONE,
                 eflags: int = 0,
                 siginfo_size: int = 128,
                 sigstop: int = 19,
                 si_code_offset: int = 8,
                 native_hosts: tuple[str, ...] = (),
                 syscall: SyscallABI | None = None):
        self.name = name                  # the module's name (arch/__init__.py MODULES)
        self.elf = elf                    # ELF class and byte order of the core
        self.machine = machine            # e_machine
        self.endian = endian              # "little" or "big"
        self.long_t = long_t              # ctypes type of the target's `long`, in its byte order
        self.uid_t = uid_t                # __kernel_uid_t of elf_prpsinfo (16 bits on ia32, arm)
        self.page_size = page_size        # the page size the images' pagemaps count in
        self.user_va_end = user_va_end    # the largest user address space of the arch
        self.gdb_name = gdb_name          # gdb's `set architecture` name
        self.mtype = mtype                # core_entry.march CRIU writes
        self.ti_field = ti_field          # core_entry field that holds the thread_info
        self.gregs = gregs                # elf_gregset_t, by the kernel's names
        self.decode = decode              # (thread_info, reparse) -> Regs
        # ((note type, encoder(proc, thread) -> bytes or None), ...)
        self.thread_notes = thread_notes
        # ((note type, encoder(proc) -> bytes or None), ...), once
        self.process_notes = process_notes
        self.accepts = accepts            # (thread_info) -> bool, when several share an mtype
        self.ti_class = ti_class          # our declaration of core_entry's ti field, when
                                          # pycriu does not know it
        self.auxv_words = auxv_words      # mm_saved_auxv -> the target's auxv words
        self.osabi = osabi
        self.eflags = eflags
        self.siginfo_size = siginfo_size
        self.sigstop = sigstop            # SIGSTOP's number (asm/signal.h)
        self.si_code_offset = si_code_offset  # si_code in siginfo_t: after si_signo, si_errno
        self.native_hosts = native_hosts  # platform.machine() whose plain gdb reads it
        self.syscall = syscall

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
