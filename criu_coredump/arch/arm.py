"""armv7 (32-bit ARM, EABI) notes: prstatus with the 18 pt_regs words, the
FPA and VFP register sets, and the TLS register.

Layouts (Linux): arch/arm/include/asm/elf.h (ELFCLASS32, EM_ARM, no
ELF_OSABI or ELF_CORE_EFLAGS, so 0 and 0; elf_gregset_t is pt_regs:
r0-r10, fp, ip, sp, lr, pc, cpsr, orig_r0); arch/arm/include/uapi/asm/
posix_types.h (__kernel_uid_t is unsigned short, so pr_uid/pr_gid are 16
bits); arch/arm/include/asm/user.h (struct user_fp, 116 bytes; struct
user_vfp, 32 double registers then fpscr, 260 bytes); arch/arm/kernel/
ptrace.c (the regsets a core gets, in order: NT_PRFPREG named "CORE" and
NT_ARM_VFP named "LINUX").

CRIU's images (images/core-arm.proto) keep the VFP registers, not the FPA
state of the old floating-point emulator; on an EABI system that state is
never touched after exec() clears it, so NT_PRFPREG is written as the zeros
the kernel would write.  The TLS register (TPIDRURO) is in the images but
in no note of an arm kernel's core; gdb reads it from NT_ARM_TLS (the note
ptrace uses for it), so it is written there, after the kernel's notes.
"""
import ctypes
import struct

from .. import elf, notes

ELF = elf.ELF32
MACHINE = elf.EM_ARM
OSABI = elf.ELFOSABI_NONE
EFLAGS = 0
long_t = ctypes.c_uint32
uid_t = ctypes.c_uint16
SIGINFO_SIZE = 128

GREGS = ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10",
         "fp", "ip", "sp", "lr", "pc", "cpsr", "orig_r0")
USER_FP_SIZE = 116   # struct user_fp: 8 x 12-byte fp_reg, fpsr, fpcr, ftype[8], init_flag
NVFP = 32            # d0-d31

Prstatus = notes.prstatus_type(long_t, ctypes.c_uint32, len(GREGS))
Prpsinfo = notes.prpsinfo_type(long_t, uid_t)


def prstatus(proc, th, cursig):
    st = notes.prstatus_head(Prstatus, proc, th, cursig, long_t)
    g = th.regs.gpregs
    for i, name in enumerate(GREGS):
        st.pr_reg[i] = getattr(g, name) & 0xFFFFFFFF
    st.pr_fpvalid = 1
    return bytes(st)


def vfp(fp):
    """struct user_vfp: d0-d31 then fpscr (fpexc and fpinst are not in it)."""
    regs = list(fp.vfp_regs)[:NVFP]
    regs += [0] * (NVFP - len(regs))
    return struct.pack("<%dQI" % NVFP, *regs, fp.fpscr)


def thread_notes(proc, th):
    ti = th.regs
    return [("CORE", elf.NT_PRFPREG, bytes(USER_FP_SIZE)),
            ("LINUX", elf.NT_ARM_VFP, vfp(ti.fpstate)),
            ("LINUX", elf.NT_ARM_TLS, struct.pack("<I", ti.tls & 0xFFFFFFFF))]


def process_notes(proc, threads):
    return []


def siginfo(signo):
    return notes.siginfo_bytes(signo, SIGINFO_SIZE)
