"""armv7 (32-bit ARM, EABI): prstatus with the 18 pt_regs words, the
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

from .. import elf
from .base import Arch, Regs, SyscallABI, SyscallEntry, words

# elf_gregset_t: struct pt_regs (arch/arm/include/uapi/asm/ptrace.h); CRIU's
# user_arm_regs_entry has the same names
GREGS = ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10",
         "fp", "ip", "sp", "lr", "pc", "cpsr", "orig_r0")
USER_FP_SIZE = 116   # struct user_fp: 8 x 12-byte fp_reg, fpsr, fpcr, ftype[8], init_flag
NVFP = 32            # d0-d31


def decode(ti, reparse=None):
    """thread_info_arm: the 18 pt_regs words, VFP, TPIDRURO."""
    g = ti.gpregs
    return Regs(gp={n: getattr(g, n) & 0xFFFFFFFF for n in GREGS},
                extra={"vfp_regs": words(ti.fpstate.vfp_regs, NVFP),
                       "fpscr": ti.fpstate.fpscr, "tls": ti.tls & 0xFFFFFFFF})


def vfp(proc, th):
    """struct user_vfp: d0-d31 then fpscr (fpexc and fpinst are not in it)."""
    return struct.pack("<%dQI" % NVFP, *th.regs.vfp_regs, th.regs.fpscr)


ARCH = Arch(
    name="arm", elf=elf.ELF32, machine=elf.EM_ARM, endian="little",
    long_t=ctypes.c_uint32, uid_t=ctypes.c_uint16, page_size=4096,
    user_va_end=1 << 32, gdb_name="arm",
    mtype=2, ti_field="ti_arm",
    gregs=GREGS, decode=decode,
    # arch/arm/kernel/ptrace.c arm_regsets, then the TLS register
    thread_notes=((elf.NT_PRFPREG, lambda proc, th: bytes(USER_FP_SIZE)),
                  (elf.NT_ARM_VFP, vfp),
                  (elf.NT_ARM_TLS, lambda proc, th: struct.pack("<I", th.regs.tls))),
    native_hosts=("aarch64", "armv7l", "armv8l"),
    syscall=SyscallABI(32, "pc", "r0", (
        SyscallEntry(struct.pack("<I", 0xEF000000), "arm", "r7",
                     ("r0", "r1", "r2", "r3", "r4", "r5", "r6"), thumb=False),
        SyscallEntry(b"\x00\xdf", "arm", "r7",
                     ("r0", "r1", "r2", "r3", "r4", "r5", "r6"), thumb=True)),
        kernel_rewinds_first=True, thumb_bit=("cpsr", 1 << 5)),
)
