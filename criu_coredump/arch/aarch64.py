"""aarch64 notes: prstatus with user_pt_regs, FPSIMD and TLS registers.

Layouts (Linux): arch/arm64/include/uapi/asm/ptrace.h (struct user_pt_regs:
x0-x30, sp, pc, pstate; struct user_fpsimd_state: 32 128-bit V registers,
fpsr, fpcr, two reserved words); arch/arm64/kernel/ptrace.c (the regsets a
core gets, in this order: NT_PRFPREG named "CORE", then NT_ARM_TLS named
"LINUX", two 64-bit words tpidr_el0 and tpidr2_el0 since Linux 6.4).
`long` is 64 bits and __kernel_uid_t 32 bits (asm-generic/posix_types.h).

CRIU's images (images/core-aarch64.proto) carry the general registers,
FPSIMD and tpidr_el0; the kernel also writes hardware-debug, system-call
and PAC/SVE notes, which the images do not describe and we leave out.
"""
import ctypes
import struct

from .. import elf, notes

ELF = elf.ELF64
MACHINE = elf.EM_AARCH64
OSABI = elf.ELFOSABI_NONE
EFLAGS = 0
long_t = ctypes.c_uint64
uid_t = ctypes.c_uint32
SIGINFO_SIZE = 128

NGREG = 34          # x0-x30, sp, pc, pstate
NVREGS = 32         # V registers, 128 bits each
TLS_WORDS = 2       # tpidr_el0, tpidr2_el0 (0 without SME)

Prstatus = notes.prstatus_type(long_t, ctypes.c_uint64, NGREG)
Prpsinfo = notes.prpsinfo_type(long_t, uid_t)


def words(values, count):
    """`count` values from a repeated image field, zero-padded."""
    vals = list(values)[:count]
    return vals + [0] * (count - len(vals))


def prstatus(proc, th, cursig):
    st = notes.prstatus_head(Prstatus, proc, th, cursig, long_t)
    g = th.regs.gpregs
    regs = words(g.regs, 31) + [g.sp, g.pc, g.pstate]
    for i, value in enumerate(regs):
        st.pr_reg[i] = value
    st.pr_fpvalid = 1
    return bytes(st)


def fpsimd(fp):
    """struct user_fpsimd_state (528 bytes): CRIU keeps each V register as
    two 64-bit words, low half first, which is its memory order."""
    return (struct.pack("<%dQ" % (2 * NVREGS), *words(fp.vregs, 2 * NVREGS))
            + struct.pack("<IIII", fp.fpsr, fp.fpcr, 0, 0))


def tls(ti):
    return struct.pack("<%dQ" % TLS_WORDS, ti.tls, *[0] * (TLS_WORDS - 1))


def thread_notes(proc, th):
    ti = th.regs
    return [("CORE", elf.NT_PRFPREG, fpsimd(ti.fpsimd)),
            ("LINUX", elf.NT_ARM_TLS, tls(ti))]


def process_notes(proc, threads):
    return []


def siginfo(signo):
    return notes.siginfo_bytes(signo, SIGINFO_SIZE)
