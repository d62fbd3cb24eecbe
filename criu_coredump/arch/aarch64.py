"""aarch64 notes: prstatus with user_pt_regs, FPSIMD and TLS registers.

Layouts (Linux): arch/arm64/include/uapi/asm/ptrace.h (struct user_pt_regs:
x0-x30, sp, pc, pstate; struct user_fpsimd_state: 32 128-bit V registers,
fpsr, fpcr, two reserved words); arch/arm64/kernel/ptrace.c (the regsets a
core gets, in this order: NT_PRFPREG named "CORE", then NT_ARM_TLS named
"LINUX", two 64-bit words tpidr_el0 and tpidr2_el0 since Linux 6.4).
`long` is 64 bits and __kernel_uid_t 32 bits (asm-generic/posix_types.h).

CRIU's images (images/core-aarch64.proto) carry the general registers,
FPSIMD, tpidr_el0 and, since CRIU 3.19 on CPUs with pointer authentication,
the PAC keys.  With address keys the kernel's core has (in regset order,
named "LINUX") NT_ARM_PAC_MASK, NT_ARM_PAC_ENABLED_KEYS and NT_ARM_PACA_KEYS,
with the generic key NT_ARM_PACG_KEYS; gdb needs the mask to strip signed
return addresses.  The mask is GENMASK(54, vabits_actual)
(arch/arm64/include/asm/compiler.h); vabits_actual is not in the images, so
it is taken as the width of the highest mapped address (the stack sits just
below TASK_SIZE): 48 or 39 on the usual kernels, and 48 too on a 52-bit
kernel, whose processes map below 2^48 unless they ask otherwise.  The
hardware-debug, system-call, SVE and SME notes of the kernel's core are
not described by the images and are left out.
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


def va_bits(proc):
    """Width of the user address space, from the highest mapped address."""
    top = max((v.end for v in proc.mm.vmas), default=1 << 48) if proc.mm else 1 << 48
    return (top - 1).bit_length()


def pac_mask(proc):
    """ptrauth_user_pac_mask(): bits 54 down to vabits_actual."""
    low = va_bits(proc)
    return ((1 << 55) - 1) & ~((1 << low) - 1)


def pac_notes(proc, pac):
    if pac is None:
        return []
    out = []
    if pac.address is not None:
        mask = pac_mask(proc)
        out += [("LINUX", elf.NT_ARM_PAC_MASK, struct.pack("<QQ", mask, mask)),
                ("LINUX", elf.NT_ARM_PAC_ENABLED_KEYS, struct.pack("<Q", pac.enabled)),
                ("LINUX", elf.NT_ARM_PACA_KEYS, struct.pack("<8Q", *pac.address))]
    if pac.generic is not None:
        out.append(("LINUX", elf.NT_ARM_PACG_KEYS, struct.pack("<2Q", *pac.generic)))
    return out


def thread_notes(proc, th):
    ti = th.regs
    return [("CORE", elf.NT_PRFPREG, fpsimd(ti.fpsimd)),
            ("LINUX", elf.NT_ARM_TLS, tls(ti))] + pac_notes(proc, th.pac)


def process_notes(proc, threads):
    return []


def siginfo(signo):
    return notes.siginfo_bytes(signo, SIGINFO_SIZE)
