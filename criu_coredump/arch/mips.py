"""mips64 (n64 ABI, little- or big-endian as the images say; proven on
mips64el): prstatus with the 45-word elf_gregset_t and the FP registers.

Layouts (Linux): arch/mips/include/asm/reg.h (the EF_* offsets of a 64-bit
kernel: EF_R0 0 .. EF_R31 31, EF_LO 32, EF_HI 33, EF_CP0_EPC 34,
EF_CP0_BADVADDR 35, EF_CP0_STATUS 36, EF_CP0_CAUSE 37, the rest of
ELF_NGREG 45 zeros); arch/mips/kernel/ptrace.c mips64_regsets (core
order: NT_PRSTATUS, NT_MIPS_DSP when the task used the DSP ASE, NT_PRFPREG
"CORE" (fpr0-31 as 64-bit words, then fcr31 and the FPU id, 32 bits each:
ELF_NFPREG 33 words), NT_MIPS_FP_MODE, NT_MIPS_MSA when it used MSA).
`long` is 64 bits, __kernel_uid_t 32 bits; ELF_CORE_EFLAGS is only set
for n32 tasks, so 0.

CRIU's images (images/core-mips.proto, criu/arch/mips/crtools.c) keep
r0-r31, lo, hi, cp0_epc, cp0_badvaddr, cp0_status and cp0_cause, the 32
FPRs with fcr31 and the FPU id, and the TLS pointer (UserLocal, which the
kernel's core has in no note).  The DSP, FP-mode and MSA notes are not
described by the images and are left out.  CRIU only builds for
little-endian mips64, so the byte order is little.
"""
import ctypes
import struct

from .. import elf
from .base import Arch, Regs, SyscallABI, SyscallEntry

_CRIU_SPECIAL = ("lo", "hi", "cp0_epc", "cp0_badvaddr", "cp0_status", "cp0_cause")
# elf_gregset_t by the EF_* offsets
GREGS = (tuple("r%d" % i for i in range(32)) + _CRIU_SPECIAL
         + tuple("unused%d" % i for i in range(38, 45)))
NFPR = 32


def decode(ti, reparse=None):
    """thread_info_mips: the named registers of user_mips_regs_entry, the
    FPRs of user_mips_fpregs_entry."""
    g, f = ti.gpregs, ti.fpregs
    return Regs(gp={n: getattr(g, n) for n in GREGS[:38]}, extra={
        "fpr": [getattr(f, "r%d" % i) for i in range(NFPR)],
        "fcr31": f.fpu_fcr31, "fir": f.fpu_id, "tls": ti.tls})


def fpregs(proc, th):
    r = th.regs
    return struct.pack("<%dQII" % NFPR, *r.fpr, r.fcr31, r.fir)


ARCH = Arch(
    name="mips", elf=elf.ELF64, machine=elf.EM_MIPS, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32, page_size=4096,
    user_va_end=1 << 48, gdb_name="mips:isa64r2",
    mtype=6, ti_field="ti_mips",
    gregs=GREGS, decode=decode,
    thread_notes=((elf.NT_PRFPREG, fpregs),),
    native_hosts=("mips64",),
    # asm/signal.h: SIGSTOP is 23; asm/siginfo.h: si_code before si_errno
    sigstop=23, si_code_offset=4,
    # arch/mips/kernel/signal.c do_signal() restarts after get_signal(); a
    # failed call left r0 = its number (for the restart), v0 = the positive
    # -ERESTART* code, a3 = 1 and k0 = its a3 (scall64-n64.S).  compel
    # rewinds (v0 = r0, a3 = k0, epc -= 4; v0 = -EINTR for
    # -ERESTART_RESTARTBLOCK) and zeroes r0: only the `syscall` at epc and
    # a number in the table tell such a thread, and a restart block is lost.
    syscall=SyscallABI(64, "cp0_epc", "r2", (
        SyscallEntry(struct.pack("<I", 0x0000000C), "mips_n64", "r2",
                     ("r4", "r5", "r6", "r7", "r8", "r9"), negative=False),),
        kernel_rewinds_first=False, style="zeroed_marker",
        roles=(("marker", "r0"), ("error", "r7"), ("saved_a3", "r26"))),
)
