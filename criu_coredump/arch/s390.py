"""s390x (64-bit z/Architecture, big-endian): prstatus with psw, gprs,
access registers and orig_gpr2, the FP registers, the system-call number,
the vector registers and the guarded-storage and runtime-instrumentation
control blocks.

Layouts (Linux): arch/s390/include/uapi/asm/ptrace.h (s390_regs, which is
elf_gregset_t: psw {mask, addr}, gprs[16], acrs[16] (32 bits each),
orig_gpr2: 27 longs; s390_fp_regs: fpc, a pad word, fprs[16]);
arch/s390/kernel/ptrace.c s390_regsets (core order: NT_PRSTATUS,
NT_PRFPREG "CORE", NT_S390_SYSTEM_CALL (one 32-bit word), NT_S390_LAST_BREAK,
NT_S390_TDB (only after a transaction abort), NT_S390_VXRS_LOW (the low
halves of v0-v15, 16 x 8 bytes), NT_S390_VXRS_HIGH (v16-v31, 16 x 16
bytes), NT_S390_GS_CB and NT_S390_GS_BC (struct gs_cb, 4 x 8 bytes, only
for a task that enabled guarded storage), NT_S390_RI_CB (struct
runtime_instr_cb, 64 bytes, only for a task that used runtime
instrumentation)).  Everything is big-endian; `long` is 64 bits and
__kernel_uid_t 32 bits; ELF_OSABI and ELF_CORE_EFLAGS are 0.

CRIU's images (images/core-s390.proto, criu/arch/s390/crtools.c) keep the
registers as ptrace gives them, each 64-bit value a number (written back
big-endian here); vxrs_high as 32 words, each register's two halves in
memory order.  The breaking-event address (NT_S390_LAST_BREAK) is not in
the images and that note is left out, as is NT_S390_TDB.
"""
import ctypes
import struct

from .. import elf
from .base import Arch, Regs, SyscallABI, SyscallEntry, ctype, words

# elf_gregset_t (s390_regs) as 27 longs: two access registers in each of
# words 18-25, the lower-numbered one in the high half (big-endian memory)
GREGS = (("psw_mask", "psw_addr") + tuple("r%d" % i for i in range(16))
         + tuple("acr%d_%d" % (i, i + 1) for i in range(0, 16, 2)) + ("orig_gpr2",))
NVXRS_LOW, NVXRS_HIGH = 16, 16


def decode(ti, reparse=None):
    """thread_info_s390."""
    g = ti.gpregs
    acrs = words(g.acrs, 16)
    gp = {"psw_mask": g.psw_mask, "psw_addr": g.psw_addr}
    gp.update(zip(GREGS[2:18], words(g.gprs, 16)))
    for i in range(0, 16, 2):
        gp["acr%d_%d" % (i, i + 1)] = (acrs[i] & 0xFFFFFFFF) << 32 | (acrs[i + 1] & 0xFFFFFFFF)
    gp["orig_gpr2"] = g.orig_gpr2
    extra = {"acrs": acrs, "system_call": g.system_call,
             "fpc": ti.fpregs.fpc, "fprs": words(ti.fpregs.fprs, 16),
             "vxrs_low": None, "vxrs_high": None, "gs_cb": None, "gs_bc": None,
             "ri_cb": None}
    if ti.HasField("vxrs_low"):
        extra["vxrs_low"] = words(ti.vxrs_low.regs, NVXRS_LOW)
    if ti.HasField("vxrs_high"):
        extra["vxrs_high"] = words(ti.vxrs_high.regs, 2 * NVXRS_HIGH)
    for name in ("gs_cb", "gs_bc"):
        if ti.HasField(name):
            extra[name] = words(getattr(ti, name).regs, 4)
    if ti.HasField("ri_cb"):
        extra["ri_cb"] = words(ti.ri_cb.regs, 8)
    return Regs(gp=gp, extra=extra)


def _q(values):
    return None if values is None else struct.pack(">%dQ" % len(values), *values)


def fpregs(proc, th):
    """s390_fp_regs: fpc, a zero pad word, f0-f15."""
    r = th.regs
    return struct.pack(">II16Q", r.fpc, 0, *r.fprs)


ARCH = Arch(
    name="s390", elf=elf.ELF64BE, machine=elf.EM_S390, endian="big",
    long_t=ctype(ctypes.c_uint64, "big"), uid_t=ctype(ctypes.c_uint32, "big"),
    page_size=4096,
    # with five-level (region-first) tables a user address may use all
    # 64 bits (TASK_SIZE_MAX is -PAGE_SIZE)
    user_va_end=1 << 64, gdb_name="s390:64-bit",
    mtype=5, ti_field="ti_s390",
    gregs=GREGS, decode=decode,
    thread_notes=((elf.NT_PRFPREG, fpregs),
                  (elf.NT_S390_SYSTEM_CALL,
                   lambda proc, th: struct.pack(">I", th.regs.system_call)),
                  (elf.NT_S390_VXRS_LOW, lambda proc, th: _q(th.regs.vxrs_low)),
                  (elf.NT_S390_VXRS_HIGH, lambda proc, th: _q(th.regs.vxrs_high)),
                  (elf.NT_S390_GS_CB, lambda proc, th: _q(th.regs.gs_cb)),
                  (elf.NT_S390_GS_BC, lambda proc, th: _q(th.regs.gs_bc)),
                  (elf.NT_S390_RI_CB, lambda proc, th: _q(th.regs.ri_cb))),
    native_hosts=("s390x",),
    # arch/s390/kernel/signal.c arch_do_signal_or_restart(): the restart
    # is decided after get_signal(), so a ptrace stop shows psw_addr after
    # the `svc` and r2 = the -ERESTART* code; compel rewinds when
    # system_call is set (r2 = orig_gpr2, psw_addr -= its instruction
    # length, system_call >> 16; r2 = -EINTR for -ERESTART_RESTARTBLOCK).
    # The call's number is system_call's low half (svc NN, or r1 for svc 0).
    syscall=SyscallABI(64, "psw_addr", "r2", (
        SyscallEntry(b"\x0a", "s390x", "r1", ("r2", "r3", "r4", "r5", "r6", "r7")),),
        kernel_rewinds_first=False, orig="orig_gpr2", style="int_code",
        roles=(("system_call", "system_call"),)),
)
