"""riscv64 (RV64GC, little-endian): prstatus with the 32 words of struct
user_regs_struct and the D-extension FP registers.

Layouts (Linux): arch/riscv/include/uapi/asm/ptrace.h (struct
user_regs_struct: pc, ra, sp, gp, tp, t0-t2, s0, s1, a0-a7, s2-s11, t3-t6,
which is elf_gregset_t: ELF_NGREG 32; struct __riscv_d_ext_state: f[32] as
64-bit words, then the 32-bit fcsr); arch/riscv/kernel/ptrace.c
riscv_user_regset (core order: NT_PRSTATUS, NT_PRFPREG "CORE", whose
riscv_fpr_get() writes f0-f31, fcsr and 4 zero bytes of explicit padding:
264 bytes; then NT_RISCV_VECTOR and NT_RISCV_TAGGED_ADDR_CTRL on kernels
and CPUs that have them).  `long` is 64 bits and __kernel_uid_t 32 bits;
ELF_CORE_EFLAGS is not defined for riscv, so the core's e_flags are 0.

CRIU's images (images/core-riscv64.proto, criu/arch/riscv64/crtools.c):
the 32 registers by name (gpregs), f0-f31 and fcsr (fpsimd), the thread
pointer (tls, which is also tp).  The vector and tagged-address notes are
not described by the images and are left out.  pycriu 3.17 (Debian 12)
knows neither core_entry.ti_riscv64 (field 13) nor its messages: they are
declared here, as CRIU 4.2 has them.
"""
import ctypes
import struct

from .. import elf, protodecl
from .base import Arch, Regs, SyscallABI, SyscallEntry, words

# elf_gregset_t: struct user_regs_struct, field by field
GREGS = ("pc", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1",
         "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7",
         "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
         "t3", "t4", "t5", "t6")
NFPR = 32

# images/core-riscv64.proto; user_riscv64_regs_entry numbers its fields in
# GREGS order, from 1
ThreadInfoHolder = protodecl.declare("criu_coredump_riscv64.proto", [
    ("user_riscv64_regs_entry", [(n, i, "uint64") for i, n in enumerate(GREGS, 1)]),
    ("user_riscv64_d_ext_entry", [("f", 1, "repeated uint64"), ("fcsr", 2, "uint32")]),
    ("thread_info_riscv64", [("clear_tid_addr", 1, "uint64"), ("tls", 2, "uint64"),
                             ("gpregs", 3, "user_riscv64_regs_entry"),
                             ("fpsimd", 4, "user_riscv64_d_ext_entry")]),
    ("core_entry_riscv64", [("ti_riscv64", 13, "thread_info_riscv64")]),
], "core_entry_riscv64")


def decode(ti, reparse=None):
    """thread_info_riscv64: the named registers, f0-f31 and fcsr."""
    g = ti.gpregs
    return Regs(gp={n: getattr(g, n) for n in GREGS}, extra={
        "fpr": words(ti.fpsimd.f, NFPR), "fcsr": ti.fpsimd.fcsr, "tls": ti.tls})


def fpregs(proc, th):
    """struct __riscv_d_ext_state as riscv_fpr_get() writes it (264 bytes)."""
    r = th.regs
    return struct.pack("<%dQI" % NFPR, *r.fpr, r.fcsr) + bytes(4)


ARCH = Arch(
    name="riscv64", elf=elf.ELF64, machine=elf.EM_RISCV, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32, page_size=4096,
    # Sv57: the largest user address space of a riscv64 kernel
    user_va_end=1 << 56, gdb_name="riscv:rv64",
    mtype=8, ti_field="ti_riscv64", ti_class=ThreadInfoHolder,
    gregs=GREGS, decode=decode,
    thread_notes=((elf.NT_PRFPREG, fpregs),),
    native_hosts=("riscv64",),
    # arch/riscv/kernel/signal.c arch_do_signal_or_restart() rewinds
    # (a0 = orig_a0, pc -= 4) BEFORE get_signal(), as arm64 does: the saved
    # registers are the kernel's view, and compel changes nothing
    syscall=SyscallABI(64, "pc", "a0", (
        SyscallEntry(struct.pack("<I", 0x00000073), "generic", "a7",
                     ("a0", "a1", "a2", "a3", "a4", "a5")),),
        kernel_rewinds_first=True),
)
