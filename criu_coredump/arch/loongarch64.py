"""loongarch64 (LP64D, little-endian): prstatus with the 45 words of struct
user_pt_regs and the FP registers.

Layouts (Linux): arch/loongarch/include/uapi/asm/ptrace.h (struct
user_pt_regs: regs[32], orig_a0, csr_era (the pc), csr_badv, reserved[10]:
ELF_NGREG 45; struct user_fp_state: fpr[32], fcc, fcsr);
arch/loongarch/kernel/ptrace.c loongarch64_regsets (core order:
NT_PRSTATUS, NT_PRFPREG "CORE", NT_LOONGARCH_CPUCFG, NT_LOONGARCH_LSX,
NT_LOONGARCH_LASX, NT_LOONGARCH_LBT, NT_LOONGARCH_HW_BREAK/WATCH, the
vector and binary-translation ones only for a task that used them).
fpr_get() writes fpr0-31 as 64-bit words, fcc (64 bits) and fcsr (32
bits): 268 bytes, not the 272 of ELF_NFPREG, and gdb 18 warns about a
note of 272.  `long` is 64 bits and __kernel_uid_t 32 bits.

CRIU's images (images/core-loongarch64.proto, criu/arch/loongarch64/
crtools.c): regs[32] and pc, fpr[32], fcc and fcsr, the thread pointer
(tls, which is also r2).  orig_a0 and csr_badv are not saved: they are
written as 0 (a core of a task that took no fault has badv 0; orig_a0 is
only read by the kernel's syscall restart).  The CPUCFG, LSX, LASX, LBT
and debug notes are not described by the images and are left out.
pycriu 3.17 (Debian 12) knows neither core_entry.ti_loongarch64 (field
12) nor its messages: they are declared here, as CRIU 4.2 has them.
"""
import ctypes
import struct

from .. import elf, protodecl
from .base import Arch, Regs, SyscallABI, SyscallEntry, words

# elf_gregset_t: struct user_pt_regs
GREGS = (tuple("r%d" % i for i in range(32)) + ("orig_a0", "csr_era", "csr_badv")
         + tuple("reserved%d" % i for i in range(10)))
NFPR = 32

ThreadInfoHolder = protodecl.declare("criu_coredump_loongarch64.proto", [
    ("user_loongarch64_gpregs_entry", [("regs", 1, "repeated uint64"), ("pc", 2, "uint64")]),
    ("user_loongarch64_fpregs_entry", [("regs", 1, "repeated uint64"), ("fcc", 2, "uint64"),
                                       ("fcsr", 3, "uint32")]),
    ("thread_info_loongarch64", [("clear_tid_addr", 1, "uint64"), ("tls", 2, "uint64"),
                                 ("gpregs", 3, "user_loongarch64_gpregs_entry"),
                                 ("fpregs", 4, "user_loongarch64_fpregs_entry")]),
    ("core_entry_loongarch64", [("ti_loongarch64", 12, "thread_info_loongarch64")]),
], "core_entry_loongarch64")


def decode(ti, reparse=None):
    """thread_info_loongarch64: r0-r31 and pc (csr_era); fpr0-31, fcc, fcsr."""
    g, f = ti.gpregs, ti.fpregs
    gp = dict(zip(GREGS[:32], words(g.regs, 32)))
    gp["csr_era"] = g.pc
    return Regs(gp=gp, extra={"fpr": words(f.regs, NFPR), "fcc": f.fcc,
                              "fcsr": f.fcsr, "tls": ti.tls})


def fpregs(proc, th):
    """What fpr_get() writes: fpr0-31, fcc, fcsr (268 bytes)."""
    r = th.regs
    return struct.pack("<%dQQI" % NFPR, *r.fpr, r.fcc, r.fcsr)


ARCH = Arch(
    name="loongarch64", elf=elf.ELF64, machine=elf.EM_LOONGARCH, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32,
    # the pagemaps count the kernel's pages: 16 KiB on the usual
    # loongarch64 kernels, which the loader refuses (AT_PAGESZ)
    page_size=4096,
    user_va_end=1 << 48, gdb_name="Loongarch64",
    mtype=7, ti_field="ti_loongarch64", ti_class=ThreadInfoHolder,
    gregs=GREGS, decode=decode,
    thread_notes=((elf.NT_PRFPREG, fpregs),),
    native_hosts=("loongarch64",),
    # arch/loongarch/kernel/signal.c arch_do_signal_or_restart() restarts
    # after get_signal(): a ptrace stop shows csr_era after the `syscall`,
    # a0 = the -ERESTART* code, r0 = the number + 1 (syscall.c).  compel
    # rewinds (a0 = orig_a0, era -= 4; a7 = restart_syscall too for
    # -ERESTART_RESTARTBLOCK, whose own number is then lost) and zeroes r0.
    syscall=SyscallABI(64, "csr_era", "r4", (
        SyscallEntry(struct.pack("<I", 0x002B0000), "generic", "r11",
                     ("r4", "r5", "r6", "r7", "r8", "r9")),),
        kernel_rewinds_first=False, orig="orig_a0", style="zeroed_marker",
        roles=(("marker", "r0"),)),
)
